"""Wide Residual Networks on CIFAR-10/100 with the paper's recipe (Zagoruyko & Komodakis 2016).

  python main.py --config=configs/wrn_cifar10.py --workdir=runs/wrn28_10_cifar10
  python main.py --config=configs/wrn_cifar10.py:wrn16_8 --workdir=runs/wrn16_8_cifar10
  python main.py --config=configs/wrn_cifar10.py:wrn40_4,cifar100 --workdir=runs/wrn40_4_cifar100
  # the paper's "wide-dropout" runs: dropout 0.3 between the two convs of every block
  python main.py --config=configs/wrn_cifar10.py --config.model.dropout_rate=0.3 ...

Recipe (paper §3 and the authors' scripts/train_cifar.sh): SGD with Nesterov momentum 0.9
(dampening 0), weight decay 5e-4 on every parameter (the Torch code decays the flattened
parameter vector, BN included), batch 128, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160,
200 epochs; flips and pad-4 random crops with mean/std normalisation. The authors' script pads
by reflection; the crops here pad with zeros.

Paper result, CIFAR-10 test error (mean/std preprocessing, median of 5 runs; the authors'
README): WRN-28-10 4.00 % (docs/published_figures.md), 3.89 % with dropout 0.3; CIFAR-100
19.25 / 18.85 %.
Parameters for 10 classes: 36,479,194 / 10,961,370 / 8,949,210 for WRN-28-10 / 16-8 / 40-4
(the paper's 36.5M, 11.0M, 8.9M). Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('wrn28_10', 'wrn16_8', 'wrn40_4')
DATASETS = ('cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]', e.g. 'wrn16_8' or 'wrn40_4,cifar100'."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, dropout_rate=0.0)
  recipes.cifar(config, dataset)
  config.batch_size = 128
  config.num_epochs = 200
  recipes.sgd(config, lr=0.1, weight_decay=5e-4, nesterov=True, decay_norm_and_bias=True)
  recipes.step_schedule(config, (60, 120, 160), factor=0.2)
  config.log_every_steps = 100
  return config
