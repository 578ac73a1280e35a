"""DenseNets on CIFAR-10/100 with the paper's recipe (Huang et al. 2017, §4.2).

  python main.py --config=configs/densenet_cifar10.py --workdir=runs/densenet_bc_100_k12
  python main.py --config=configs/densenet_cifar10.py:densenet40_k12 --workdir=runs/densenet40
  python main.py --config=configs/densenet_cifar10.py:densenet_bc_250_k24,cifar100 --workdir=...
  # the paper's runs without augmentation ("C10"): dropout 0.2 after every conv but the first
  python main.py --config=configs/densenet_cifar10.py --config.model.drop_rate=0.2 \
      --config.dataset.train_preprocess="normalize('cifar10')" ...

Recipe: SGD with Nesterov momentum 0.9 (no dampening), weight decay 1e-4 on every parameter
(the authors' Torch code decays BN and biases too), batch 64, 300 epochs, lr 0.1 divided by 10
at 50 % and 75 % of training (epochs 150 and 225); pad-4 random crops and flips ("C10+"), so no
dropout. Convs start from He normal over fan_out, as in the authors' code.

Paper results, error with augmentation (C10+ / C100+; Table 2, also in the authors' README):
DenseNet-BC L=100 k=12 4.51 / 22.27 % (docs/published_figures.md), DenseNet L=40 k=12 5.24 /
24.42 %,
DenseNet-BC L=250 k=24 3.62 / 17.60 %, DenseNet-BC L=190 k=40 3.46 / 17.18 %. Parameters for
10 classes: 769,162, 1,019,722, 15,324,406 and 25,624,430 (the paper's 0.8M, 1.0M, 15.3M, 25.6M).
Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('densenet_bc_100_k12', 'densenet40_k12', 'densenet_bc_250_k24', 'densenet_bc_190_k40')
DATASETS = ('cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]', e.g. 'densenet40_k12' or 'densenet_bc_190_k40,cifar100'."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, drop_rate=0.0)
  recipes.cifar(config, dataset)
  config.batch_size = 64
  config.num_epochs = 300
  recipes.sgd(config, lr=0.1, weight_decay=1e-4, nesterov=True, decay_norm_and_bias=True)
  recipes.step_schedule(config, (150, 225))
  config.log_every_steps = 100
  return config
