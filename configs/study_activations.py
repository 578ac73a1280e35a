"""Study: sigmoid, tanh and ReLU in LeNet-5 (the notes: ReLU trains faster, and does not saturate).

  python main.py --config=configs/study_activations.py --workdir=runs/study_activations --sweep

Three points, the same seed, data order and schedule: LeNet-5 without BatchNorm, plain SGD with
momentum at lr 0.05, 10 epochs of the offline digits. docs/studies.md has the measured table and
curves (sweep_curves.png: training loss against steps).
"""

import ml_collections

from configs import lenet5_mnist, sweep


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = lenet5_mnist.get_config()
  config.model.batch_norm = False
  config.num_epochs = 10
  config.schedule.name = 'constant'
  config.schedule.warmup_epochs = 0.0
  config.log_every_steps = 31
  return config


def get_sweep(arg=None) -> list[dict]:
  del arg
  return sweep.axis('model.activation', ['sigmoid', 'tanh', 'relu'])
