"""Study: overlapping (3×3, stride 2) against non-overlapping (2×2, stride 2) max pooling (the
notes, after AlexNet §3.4: overlap lowers the error a little and makes overfitting harder).

  python main.py --config=configs/study_pooling.py --workdir=runs/study_pooling --sweep

LeNet-5 with BatchNorm, both pools 2/2 or 3/2, 15 epochs of the offline digits, three seeds
each (the effect AlexNet reports, 0.3-0.4 % top-1, is near this scale's seed noise).
Measured (133 s): eval top-1 0.9813 (2/2) against 0.9810 (3/2) over the seeds, no difference;
docs/studies.md has the table.
"""

import ml_collections

from configs import lenet5_mnist, sweep


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = lenet5_mnist.get_config()
  config.num_epochs = 15
  config.log_every_steps = 62
  return config


def get_sweep(arg=None) -> list[dict]:
  del arg
  return sweep.product(
      sweep.axis('model.pool_window', [2, 3]),
      sweep.axis('seed', [0, 1, 2]),
  )
