"""Network in Network on ImageNet: the Caffe model zoo's `nin_imagenet` (Lin et al.).

  python main.py --config=configs/nin_imagenet.py --workdir=runs/nin_imagenet

Recipe: batch 64 and random 224 crops of 256² images with flips as in the model's train
prototxt; SGD momentum 0.9, weight decay 5e-4, lr 0.01 divided by 10 when validation accuracy
stops improving (at most 3 times, within 90 epochs). The Caffe solver's learning rates and
iteration count are not known here, so the lr and epochs are this project's choice; so is He
initialisation (see models/nin.py).

The NiN paper reports no ImageNet result; the model zoo page gives 59.36 % top-1 accuracy on the
validation set for the released model. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('nin',)
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg` may name the variant or dataset, each of which has one choice."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, dropout_rate=0.5)
  recipes.imagenet(config, image_size=224, resize_to=256, crop='alexnet')
  config.batch_size = 64
  config.num_epochs = 90
  recipes.sgd(config, lr=0.01, weight_decay=5e-4)
  recipes.plateau_schedule(config)
  return config
