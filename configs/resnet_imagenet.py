"""ResNets on ImageNet with the flax ImageNet example's recipe.

  python main.py --config=configs/resnet_imagenet.py --workdir=runs/resnet50_imagenet
  python main.py --config=configs/resnet_imagenet.py:resnet18 --workdir=runs/resnet18_imagenet
  python main.py --config=configs/resnet_imagenet.py:preact_resnet50 --workdir=runs/preact50
  # the paper's v1 block (stride on the first 1×1) instead of torchvision's v1.5:
  python main.py --config=configs/resnet_imagenet.py --config.model.stride_on_3x3=False ...

Recipe (flax examples/imagenet): SGD momentum 0.9, lr 0.1 per 256 images (scaled linearly with
the batch), weight decay 1e-4 on the weights only (not on BN or biases), cosine decay after 5
warmup epochs, 90 epochs, Inception (random-resized) 224 crops and flips; like the flax
example's blocks, the plain ResNets zero-initialise the last BN scale of every residual branch.
He et al. 2016 used step decay instead (lr divided by 10 at epochs 30 and 60):
`--config.schedule.name=step --config.schedule.decay_epochs=(30,60)
--config.schedule.warmup_epochs=0`.

Reference: ResNet-50 reaches about 76.5 % top-1 with this recipe (docs/published_figures.md; the
flax example's README reports 76.27-76.72 %). Those runs trained the flax example's default 100
epochs (e.g. 125,100 steps of 1,024 images); add `--config.num_epochs=100` to match them.
Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = (
    'resnet50',
    'resnet18',
    'resnet34',
    'resnet101',
    'resnet152',
    'preact_resnet18',
    'preact_resnet34',
    'preact_resnet50',
    'preact_resnet101',
    'preact_resnet152',
)
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the variant, e.g. 'resnet18' or 'preact_resnet50'."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  if variant.startswith('preact_'):
    config.model = recipes.model(variant)
  else:
    config.model = recipes.model(variant, stride_on_3x3=True, zero_init_residual=True)
  recipes.imagenet(config, image_size=224)
  config.batch_size = 256
  config.num_epochs = 90
  recipes.sgd(config, lr=0.1, weight_decay=1e-4)
  config.optimizer.lr_reference_batch_size = 256
  config.schedule.name = 'cosine'
  config.schedule.warmup_epochs = 5.0
  config.log_every_steps = 100
  config.eval_every_steps = 0
  return config
