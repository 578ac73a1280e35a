"""Study: BatchNorm against none across learning rates (the notes: BN allows a larger rate).

  python main.py --config=configs/study_batchnorm.py --workdir=runs/study_batchnorm --sweep

LeNet-5 with and without BatchNorm after each conv and hidden dense layer, plain SGD with
momentum at four constant learning rates, 5 epochs of the offline digits, one seed and data
order. docs/studies.md has the measured table (sweep.png: final accuracy against the rate).
"""

import ml_collections

from configs import lenet5_mnist, sweep


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = lenet5_mnist.get_config()
  config.num_epochs = 5
  config.optimizer.weight_decay = 0.0
  config.schedule.name = 'constant'
  config.schedule.warmup_epochs = 0.0
  config.log_every_steps = 31
  return config


def get_sweep(arg=None) -> list[dict]:
  del arg
  return sweep.product(
      sweep.axis('model.batch_norm', [False, True]),
      sweep.axis('optimizer.lr', [0.01, 0.1, 0.5, 2.0]),
  )
