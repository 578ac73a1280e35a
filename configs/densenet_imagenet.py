"""DenseNets on ImageNet (torchvision's densenet121/169/201/161) with the paper's recipe.

  python main.py --config=configs/densenet_imagenet.py --workdir=runs/densenet121_imagenet
  python main.py --config=configs/densenet_imagenet.py:densenet161 --workdir=runs/densenet161

Recipe (Huang et al. 2017, §4.2): SGD with Nesterov momentum 0.9, weight decay 1e-4 on every
parameter (as the authors' Torch code, built on fb.resnet.torch), batch 256, 90 epochs, lr 0.1
divided by 10 at epochs 30 and 60. Augmentation is fb.resnet.torch's, which the paper used:
Inception-style scale and aspect-ratio crops, flips, colour jitter 0.4 (brightness, contrast,
saturation) and PCA lighting noise 0.1. Convs start from He normal over fan_in, as torchvision.

Reference: single 224-crop top-1 error of the authors' Torch models (their README, the weights
torchvision ported): DenseNet-121 25.0 %, -169 23.6 %, -201 22.5 %, -161 (k=48) 22.2 %.
Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('densenet121', 'densenet169', 'densenet201', 'densenet161')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the variant, e.g. 'densenet169'."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, drop_rate=0.0)
  recipes.imagenet(config, image_size=224, color_jitter=0.4, lighting=0.1)
  config.batch_size = 256
  config.num_epochs = 90
  recipes.sgd(config, lr=0.1, weight_decay=1e-4, nesterov=True, decay_norm_and_bias=True)
  recipes.step_schedule(config, (30, 60))
  config.log_every_steps = 100
  return config
