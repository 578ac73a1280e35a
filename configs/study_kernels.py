"""Study: stacked 3×3 convolutions against one 5×5 or 7×7 of the same receptive field (the
notes, after VGG §2.3: the stack has fewer weights, 27C² against 49C², and more non-linearity).

  python main.py --config=configs/study_kernels.py --workdir=runs/study_kernels --sweep

A VGG of three stages (widths 32-64-128, BN, each stage closed by a 2×2 max pool, global
average pool, fc 128-128-classes) on the offline digits, 10 epochs. Stages of two 3×3 convs
against one 5×5, and of three 3×3 against one 7×7 (`model.stacked_3x3`, VGG §4.1's "shallow"
net). Measured (456 s): eval top-1 0.954 (two 3×3) against 0.916 (one 5×5), 0.973 (three 3×3)
against 0.941 (one 7×7); docs/studies.md has the table (conv weights, MACs, accuracy).
"""

import ml_collections

from configs import lenet5_mnist, recipes, sweep


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = lenet5_mnist.get_config()
  config.model = recipes.model(
      'vgg13',
      stage_sizes=(2, 2, 2),
      widths=(32, 64, 128),
      stacked_3x3=True,
      batch_norm=True,
      pool_size=1,
      hidden_width=128,
      dropout_rate=0.0,
  )
  config.num_epochs = 10
  config.log_every_steps = 62
  return config


def get_sweep(arg=None) -> list[dict]:
  del arg
  return sweep.product(
      sweep.axis('model.stage_sizes', [(2, 2, 2), (3, 3, 3)]),
      sweep.axis('model.stacked_3x3', [True, False]),
  )
