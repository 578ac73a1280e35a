"""Inception-v4 and Inception-ResNet-v1/v2 on ImageNet with the paper's recipe (Szegedy et al.
2017, §4).

  python main.py --config=configs/inception_v4_imagenet.py --workdir=runs/inception_v4
  python main.py --config=configs/inception_v4_imagenet.py:inception_resnet_v2 \
      --workdir=runs/inception_resnet_v2
  python main.py --config=configs/inception_v4_imagenet.py:inception_resnet_v1 \
      --workdir=runs/inception_resnet_v1
  # TF-slim's BatchNorm (no scale γ), or Inception-ResNet-v2 with other residual scales:
  python main.py --config=configs/inception_v4_imagenet.py --config.model.bn_scale=False ...
  python main.py --config=configs/inception_v4_imagenet.py:inception_resnet_v2 \
      --config.model.scales='(0.1,0.1,0.1)' ...

Recipe (paper §4): RMSProp with decay 0.9 and ε = 1.0, learning rate 0.045 lowered by a factor
0.94 every two epochs, 299×299 Inception crops with flips and TF-slim's colour distortion
(as in configs/inception_imagenet.py). The AAAI version adds
gradient clipping without a threshold; 2.0 is Inception-v3's (Szegedy et al. 2016). The paper
gives no batch size, length, RMSProp momentum, weight decay or label smoothing: batch 32 and
100 epochs are Inception-v3's; RMSProp momentum 0.9 and weight decay 4e-5 on conv and fc
weights are TF-slim's defaults (train_image_classifier.py, inception_arg_scope); label
smoothing 0.1 is Inception-v3's (TF-slim's script defaults to 0, and the flags behind its
released checkpoints are not published); dropout with keep probability 0.8 before the classifier
is TF-slim's. Not reproduced: evaluation with a running average of the parameters, TF-slim's
auxiliary head.

Paper (AAAI version, Table 1: single model, single crop, on the non-blacklisted part of the
ILSVRC-2012 validation set): top-1 / top-5 error Inception-v4 20.0 / 5.0 %, Inception-ResNet-v2
19.9 / 4.9 %, Inception-ResNet-v1 21.3 / 5.5 %. TF-slim's released Inception-v4 and
Inception-ResNet-v2 checkpoints: 80.2 / 95.2 % and 80.4 / 95.3 % top-1 / top-5 accuracy.
Not measured here.
"""

import ml_collections

from configs import default, inception_imagenet, recipes

VARIANTS = ('inception_v4', 'inception_resnet_v2', 'inception_resnet_v1')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  if variant == 'inception_v4':
    config.model = recipes.model(variant, repeats=(4, 7, 3), dropout_rate=0.2, bn_scale=True)
  else:
    repeats = (5, 10, 5) if variant == 'inception_resnet_v1' else (10, 20, 9)
    config.model = recipes.model(
        variant,
        repeats=repeats,
        scales=(0.17, 0.10, 0.20),
        dropout_rate=0.2,
        bn_scale=True,
    )
  recipes.imagenet(
      config, image_size=299, resize_to=342, color_jitter=inception_imagenet.TF_SLIM_COLOUR
  )
  config.batch_size = 32
  config.num_epochs = 100
  config.label_smoothing = 0.1
  config.optimizer.update(
      name='rmsprop',
      lr=0.045,
      rms_decay=0.9,
      eps=1.0,
      momentum=0.9,
      weight_decay=4e-5,
      decay_norm_and_bias=False,
      grad_clip_norm=2.0,
  )
  recipes.exponential_schedule(config, every_epochs=2, factor=0.94)  # staircase, as TF-slim
  config.log_every_steps = 100
  return config
