"""Xception on ImageNet with the paper's recipe (Chollet 2017, §4.2–4.4).

  python main.py --config=configs/xception_imagenet.py --workdir=runs/xception
  # Keras's model (no dropout) or a shallower middle flow:
  python main.py --config=configs/xception_imagenet.py --config.model.dropout_rate=0 ...
  python main.py --config=configs/xception_imagenet.py --config.model.middle_blocks=4 ...

Recipe (paper §4.2–4.3): SGD with momentum 0.9, learning rate 0.045 lowered by a factor 0.94
every two epochs, weight decay 1e-5 (the paper's L2 rate, in TF-slim's sense: gradient + rate ·
w; Inception-v3's 4e-5 was "quite suboptimal" for Xception), dropout 0.5 before the classifier,
no auxiliary tower, 299×299 Inception crops with flips. The optimisation
configuration is the one tuned for Inception-v3, which Xception reuses untuned; the paper gives no
batch size or length (60 K80 GPUs, synchronous, about 3 days), so batch 32 and 100 epochs are
Inception-v3's (Szegedy et al. 2016). No label smoothing (the paper lists none). Not reproduced:
Polyak averaging of the parameters at evaluation.

Paper (Table 1, single model, single crop, ImageNet validation): 79.0 % top-1 / 94.5 % top-5,
as Keras's released weights (Inception-v3 in the same setting: 78.2 / 94.1 %). Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('xception',)
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, middle_blocks=8, dropout_rate=0.5, bn_epsilon=1e-3)
  recipes.imagenet(config, image_size=299, resize_to=342)
  config.batch_size = 32
  config.num_epochs = 100
  recipes.sgd(config, lr=0.045, weight_decay=1e-5, momentum=0.9)
  recipes.exponential_schedule(config, every_epochs=2, factor=0.94)  # staircase, as TF-slim
  config.log_every_steps = 100
  return config
