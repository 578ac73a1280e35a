"""MobileNet v1 and v2 on ImageNet: v1 with its paper's RMSProp recipe, v2 with torchvision's.

  python main.py --config=configs/mobilenet_imagenet.py --workdir=runs/mobilenet_v1
  python main.py --config=configs/mobilenet_imagenet.py:mobilenet_v2 --workdir=runs/mobilenet_v2
  # width multiplier α (v1) / width_mult (v2):
  python main.py --config=configs/mobilenet_imagenet.py --config.model.alpha=0.5 ...
  # resolution multiplier ρ = the input size: 224 (default), 192, 160 or 128, evaluated on the
  # centre of an image resized by 1/0.875 (256 for 224):
  N="normalize('imagenet')"
  python main.py --config=configs/mobilenet_imagenet.py --workdir=runs/mobilenet_v1_192 \
      --config.dataset.train_preprocess="decode_and_random_resized_crop(192)|flip_lr|$N" \
      --config.dataset.eval_preprocess="resize_shorter(219)|center_crop(192)|$N"
  # 160: resize_shorter(183) and crops of 160; 128: resize_shorter(146) and crops of 128.

mobilenet_v1 (Howard et al. 2017): trained "using RMSprop with asynchronous gradient descent
similar to Inception V3", little regularisation, no label smoothing. Here TF-slim's values for
that recipe (train_image_classifier.py defaults): RMSProp decay 0.9, momentum 0.9, epsilon 1.0;
lr 0.045 × 0.94 every 2 epochs (TF-slim's mobilenet_v1_train.py: 0.045, ×0.94); weight decay
4e-5 on the weights (mobilenet_v1_arg_scope). Not reproduced: TF-slim exempts the depthwise
filters from weight decay (this trainer decays every kernel); the paper gives no batch size or
length (256 images and 100 epochs here, a choice). TF-slim's mobilenet_v1_train.py itself uses
plain SGD (lr 0.045 × 0.94 every 2.5 epochs, batch 64). Reference: 70.6 % top-1 for 1.0-224
(paper; docs/published_figures.md); TF-slim's checkpoints 70.9 / 70.0 / 68.0 / 65.2 % at 224 /
192 / 160 / 128 (its mobilenet_v1.md).

mobilenet_v2: torchvision's reference recipe (references/classification/README.md): SGD momentum
0.9, lr 0.045 × 0.98 every epoch, weight decay 4e-5 on every parameter, 300 epochs, batch 256 (8
GPUs × 32), dropout 0.2, RandomResizedCrop (Inception) crops and flips. Reference: torchvision's
weights from this recipe reach 71.878 % top-1 (its model card). The paper trained with RMSProp
in TensorFlow. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('mobilenet_v1', 'mobilenet_v2')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  recipes.imagenet(config, image_size=224)
  config.batch_size = 256
  if variant == 'mobilenet_v1':
    config.model = recipes.model(variant, alpha=1.0, act='relu', dropout_rate=1e-3)
    config.num_epochs = 100
    config.optimizer.update(
        name='rmsprop',
        lr=0.045,
        rms_decay=0.9,
        momentum=0.9,
        eps=1.0,
        weight_decay=4e-5,
        decay_norm_and_bias=False,
    )
    recipes.exponential_schedule(config, every_epochs=2, factor=0.94)
  else:
    config.model = recipes.model(variant, width_mult=1.0, dropout_rate=0.2)
    config.num_epochs = 300
    recipes.sgd(config, lr=0.045, weight_decay=4e-5, decay_norm_and_bias=True)
    recipes.exponential_schedule(config, every_epochs=1, factor=0.98)
  config.log_every_steps = 100
  return config
