"""ResNet in ResNet on CIFAR-10/100 (Targ, Almeida & Lyman 2016): the "18-layer + wide" RiR.

  python main.py --config=configs/rir_cifar10.py --workdir=runs/rir_cifar10
  python main.py --config=configs/rir_cifar10.py:cifar100 --workdir=runs/rir_cifar100
  # osmr/imgclsmob's rir_cifar10 (no outer RiR shortcut, 9,492,980 parameters):
  python main.py --config=configs/rir_cifar10.py --config.model.outer_shortcut=False ...

Recipe as public notes on the paper summarise it: SGD momentum 0.9, batch 500, L2 1e-4,
82 epochs, lr ×0.1 after epochs 42 and 62, MSR (He) initialisation. The initial lr is not in
those notes; 0.1 here, as nutszebra/resnet_in_resnet's reproduction. Weight decay skips BN and
biases (this project's default). Augmentation: pad-4 random crops and flips.

Paper result: 18-layer + wide RiR 94.99 % test accuracy on CIFAR-10 (77.10 % on CIFAR-100 as
secondary summaries quote it; the paper's tables were not available here). Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('rir',)
DATASETS = ('cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg` names the dataset: cifar10 (default) or cifar100."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, shortcut='B', outer_shortcut=True)
  recipes.cifar(config, dataset)
  config.batch_size = 500
  config.num_epochs = 82
  recipes.sgd(config, lr=0.1, weight_decay=1e-4)
  recipes.step_schedule(config, (42, 62))
  config.log_every_steps = 50
  return config
