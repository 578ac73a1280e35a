"""SqueezeNet v1.0 / v1.1 on ImageNet with the authors' Caffe solver (Iandola et al. 2016).

  python main.py --config=configs/squeezenet_imagenet.py --workdir=runs/squeezenet1_0
  python main.py --config=configs/squeezenet_imagenet.py:squeezenet1_1 --workdir=runs/squeezenet1_1
  # the paper's §6 bypass variants:
  python main.py --config=configs/squeezenet_imagenet.py --config.model.bypass=simple ...
  python main.py --config=configs/squeezenet_imagenet.py --config.model.bypass=complex ...

Recipe (forresti/SqueezeNet, SqueezeNet_v1.0/solver.prototxt, the version its README describes:
batch 32 × iter_size 16 = 512): SGD momentum 0.9, base lr 0.04 decreased linearly to 0 ("poly",
power 1), weight decay 2e-4 on every parameter, 170,000 iterations of 512 images ≈ 68 epochs,
dropout 0.5 before conv10, random 227 × 227 crops (the Caffe data layer's crop_size) of 256²
images with flips.
Another version of that file has lr 0.08, power 0.5 and 85,000 iterations of 1,024 images. The
repository gives no separate solver for v1.1; the same one is used here.

Not reproduced: Caffe's mean-pixel subtraction is replaced by
the ImageNet mean/std normalisation, and the Xavier init by torchvision's (models/squeezenet.py).

Reference: torchvision's weights reach 58.092 % (v1.0) and 58.178 % (v1.1) top-1 at 224
(its model cards). Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('squeezenet1_0', 'squeezenet1_1')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, bypass='none', dropout_rate=0.5)
  recipes.imagenet(config, image_size=227, crop='alexnet')
  config.batch_size = 512
  config.num_epochs = 68  # 170,000 × 512 / 1,281,167 = 67.9
  recipes.sgd(config, lr=0.04, weight_decay=2e-4, decay_norm_and_bias=True)
  recipes.poly_schedule(config, power=1.0)
  config.log_every_steps = 100
  return config
