"""ShuffleNet v2 (torchvision's) and v1 (megvii's) on ImageNet with megvii's official recipe.

  python main.py --config=configs/shufflenet_imagenet.py --workdir=runs/shufflenet_v2_x1_0
  python main.py --config=configs/shufflenet_imagenet.py:shufflenet_v1_g3 \
      --workdir=runs/shufflenet_v1_g3
  # ShuffleNet v1 0.5× (g=3) with megvii's 12-channel stem:
  python main.py --config=configs/shufflenet_imagenet.py:shufflenet_v1_g3 \
      --config.model.width_multiplier=0.5 --config.model.stem_channels=12 ...

Recipe (megvii-model/ShuffleNet-Series, ShuffleNetV1/train.py): SGD momentum 0.9, lr 0.5 at
batch 1024, weight decay 4e-5 on conv and fc weights only, label smoothing 0.1, 300,000
iterations (240 epochs here), lr decayed linearly to 0, RandomResizedCrop (Inception) crops,
flips and colour jitter 0.4 (brightness, contrast, saturation). The v2 runs use the same
recipe: megvii's ShuffleNetV2+ script has the same settings with 450,000 iterations (its plain
ShuffleNetV2 script was not available to check). torchvision's x0_5/x1_0 weights were ported
from another repository, its x1_5/x2_0 weights trained with torchvision's newer recipe.

Published top-1 (one 224 crop): megvii's README, error 32.2 % for v1 1.0× (g=3) and 30.6 %
for v2 1.0×; torchvision's weights 60.552 / 69.362 / 72.996 / 76.230 % for v2 x0_5 / x1_0 /
x1_5 / x2_0. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = (
    'shufflenet_v2_x1_0',
    'shufflenet_v2_x0_5',
    'shufflenet_v2_x1_5',
    'shufflenet_v2_x2_0',
    'shufflenet_v1_g3',
    'shufflenet_v1_g1',
    'shufflenet_v1_g2',
    'shufflenet_v1_g4',
    'shufflenet_v1_g8',
)
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the variant, e.g. 'shufflenet_v2_x0_5' or 'shufflenet_v1_g8'."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  if variant.startswith('shufflenet_v1'):
    config.model = recipes.model(variant, width_multiplier=1.0, stem_channels=24, fc_bias=False)
  else:
    config.model = recipes.model(variant)
  recipes.imagenet(config, image_size=224, color_jitter=0.4)
  config.batch_size = 1024
  config.num_epochs = 240  # 240 × 1,281,167 / 1024 ≈ 300,270 iterations
  config.label_smoothing = 0.1
  recipes.sgd(config, lr=0.5, weight_decay=4e-5)
  config.optimizer.lr_reference_batch_size = 1024
  recipes.poly_schedule(config, power=1.0)  # linear decay to 0
  config.log_every_steps = 100
  return config
