"""ResNets on CIFAR-10/100: He et al. 2016 §4.2 and the pre-activation nets of He et al. 2016b.

  python main.py --config=configs/resnet_cifar10.py --workdir=runs/resnet20_cifar10
  python main.py --config=configs/resnet_cifar10.py:resnet110 --workdir=runs/resnet110_cifar10
  python main.py --config=configs/resnet_cifar10.py:preact_resnet164,cifar100 --workdir=runs/p164
  # projection shortcuts (option B) instead of zero padding (option A):
  python main.py --config=configs/resnet_cifar10.py:resnet56 --config.model.shortcut=B ...

Recipe (both papers): SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at
32k and 48k iterations, stop at 64k; pad-4 random crops and flips. With 390 steps per epoch
(50,000 // 128) that is decay at epochs 82 and 123 and 164 epochs (63,960 steps). The paper
fixed this schedule on a 45k/5k train/val split; this config trains on all 50k images and
evaluates on the test set. For ResNet-110 the paper warmed up at lr 0.01 until the training
error fell below 80 % (about 400 iterations), then went back to 0.1; here resnet110 and the
pre-activation nets warm up linearly from 0 over one epoch (390 steps) instead.

Paper results, CIFAR-10 test error: ResNet-20/32/44/56/110 8.75/7.51/7.17/6.97/6.43 % (He et
al. 2016, Table 6); pre-activation ResNet-110 6.37 %, ResNet-164 5.46 % (He et al. 2016b).
Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = (
    'resnet20',
    'resnet32',
    'resnet44',
    'resnet56',
    'resnet110',
    'preact_resnet110',
    'preact_resnet164',
)
DATASETS = ('cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]', e.g. 'resnet56' or 'preact_resnet164,cifar100'."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  if variant.startswith('preact_'):
    config.model = recipes.model(variant)
  else:
    config.model = recipes.model(variant, shortcut='A', zero_init_residual=False)
  recipes.cifar(config, dataset)
  config.batch_size = 128
  config.num_epochs = 164
  recipes.sgd(config, lr=0.1, weight_decay=1e-4)
  recipes.step_schedule(config, (82, 123))
  config.schedule.warmup_epochs = (
      1.0 if variant in ('resnet110', 'preact_resnet110', 'preact_resnet164') else 0.0
  )
  config.log_every_steps = 100
  return config
