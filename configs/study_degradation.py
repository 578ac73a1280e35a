"""Study: degradation, and residual connections curing it (the notes, after He et al. 2016
Fig. 1 and 6: a deeper plain net has a higher *training* error; the residual net does not).

  python main.py --config=configs/study_degradation.py --workdir=runs/study_degradation --sweep

The CIFAR ResNets of §4.2 (BN, option-A shortcuts) and their plain counterparts
(`model.residual=False`, the same layers without shortcuts) at depths 8, 20, 32 and 56, on
the offline digits, SGD with momentum at lr 0.1, 8 epochs. Measured (1,484 s of training):
final training loss of the plain nets 0.055 / 0.035 / 0.080 / 0.449 at depths 8 / 20 / 32 / 56,
of the residual nets 0.067 / 0.034 / 0.028 / 0.026; docs/studies.md has the table and sweep.png.
"""

import ml_collections

from configs import lenet5_mnist, recipes, sweep


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = lenet5_mnist.get_config()
  config.model = recipes.model(
      'resnet20', depth=20, residual=True, shortcut='A', zero_init_residual=False
  )
  config.num_epochs = 8
  recipes.sgd(config, lr=0.1, weight_decay=1e-4)
  config.log_every_steps = 31
  return config


def get_sweep(arg=None) -> list[dict]:
  del arg
  return sweep.product(
      sweep.axis('model.residual', [False, True]),
      sweep.axis('model.depth', [8, 20, 32, 56]),
  )
