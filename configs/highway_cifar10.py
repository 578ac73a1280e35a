"""Highway B (Srivastava, Greff & Schmidhuber 2015, Table 3) on CIFAR-10 or CIFAR-100.

  python main.py --config=configs/highway_cifar10.py --workdir=runs/highway19
  python main.py --config=configs/highway_cifar10.py:highway19,cifar100 --workdir=runs/hw19_c100

The authors' released solver: Nesterov momentum 0.9, lr 0.025 per batch of 100, ×0.1 at 100k,
150k and 175k of 200k iterations (epochs 200, 300 and 350 of 400 on the 50,000 training
images), weight decay 0.001; dropout 0.2 in the model. Their images were globally contrast
normalised and randomly cropped from copies padded by 8 (flipped as well); here pad-8 crops and
flips on per-channel normalised images. Paper: 7.54 % test error on CIFAR-10. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('highway19',)
DATASETS = ('cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, dropout_rate=0.2, gate_bias=-2.0)
  recipes.cifar(config, dataset)
  config.dataset.train_preprocess = f"random_crop(32, pad=8)|flip_lr|normalize('{dataset}')"
  config.num_epochs = 400
  recipes.sgd(config, lr=0.025, weight_decay=1e-3, nesterov=True)
  config.optimizer.lr_reference_batch_size = 100
  recipes.step_schedule(config, (200, 300, 350))
  return config
