"""Squeeze-and-excitation networks on ImageNet (timm's seresnet50, seresnet101,
seresnext50_32x4d) with the SENet paper's schedule.

  python main.py --config=configs/senet_imagenet.py --workdir=runs/seresnet50
  python main.py --config=configs/senet_imagenet.py:seresnext50_32x4d --workdir=runs/sernx50
  # the paper's batch, and its Caffe SE-ResNets' stride on the first 1×1:
  python main.py --config=configs/senet_imagenet.py --config.batch_size=1024 \
      --config.model.stride_on_3x3=False ...

Recipe (Hu et al. 2018): SGD momentum 0.9, lr 0.6 for the paper's batch of 1024 (here
scaled linearly: 0.15 at batch 256), divided by 10 every 30 epochs, 100 epochs, reduction
r = 16. BN scales start at one (timm's default zero init of each block's last BN scale is
`--config.model.zero_init_residual=True`). The paper states no weight decay that we could
check: 1e-4 on the weights (not on BN or biases) is assumed, the ResNet value. Not
Augmentation: Inception-style scale and aspect-ratio crops and flips. Not reproduced: the
authors' class-balanced sampling.

Reference: the authors' re-trained Caffe models (hujie-frank/SENet README: batch 256, lr 0.1,
more epochs and stronger augmentation than the paper) reach 22.37 / 6.36 % (SE-ResNet-50),
21.75 / 5.72 % (SE-ResNet-101), 20.97 / 5.54 % (SE-ResNeXt-50 32x4d) top-1 / top-5 error
with one 224 crop. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('seresnet50', 'seresnet101', 'seresnext50_32x4d')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the variant, e.g. 'seresnet101' or 'seresnext50_32x4d'."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(
      variant, se_reduction=16, stride_on_3x3=True, zero_init_residual=False
  )
  recipes.imagenet(config, image_size=224)
  config.batch_size = 256
  config.num_epochs = 100
  recipes.sgd(config, lr=0.6, weight_decay=1e-4)
  config.optimizer.lr_reference_batch_size = 1024
  recipes.step_schedule(config, (30, 60, 90))
  config.log_every_steps = 100
  return config
