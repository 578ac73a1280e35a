"""LeNet-5 on handwritten digits: the modern `lenet5` (default), the 1998 paper's `lenet5_1998`,
or Caffe's 20-50-500 `lenet_caffe` (the original that configs/compression.py compresses).

  python main.py --config=configs/lenet5_mnist.py --workdir=runs/lenet5
  python main.py --config=configs/lenet5_mnist.py:mnist --workdir=runs/lenet5_mnist
  python main.py --config=configs/lenet5_mnist.py:fashion_mnist --workdir=runs/lenet5_fashion
  python main.py --config=configs/lenet5_mnist.py:lenet5_1998 --workdir=runs/lenet5_1998
  python main.py --config=configs/lenet5_mnist.py:lenet5_1998,mnist --workdir=runs/lenet5_1998_mnist
  python main.py --config=configs/lenet5_mnist.py:lenet_caffe --workdir=runs/lenet_caffe
  # the modern net in the paper's squashing + subsampling form:
  python main.py ... --config.model.activation=sigmoid --config.model.pooling=avg

The paper reports 0.95 % test error on the full MNIST (60k training images). Measured here on
the offline digits (4,000 train / 1,000 test, 2 CPU cores):
- lenet5, 30 epochs: eval_top1 0.981 (1.9 % error), eval_loss 0.0556 (0.986 and 0.988 with
  --config.seed=1 and =2), in 89-176 s of training depending on the machine's load.
- lenet5_1998 (the paper's net with its RBF output, logits −distance²/16; 30 epochs of Adam,
  batch 32): `python main.py --config=configs/lenet5_mnist.py:lenet5_1998 --workdir=...` gave
  eval_top1 0.979 (eval_loss 0.0651) in 114 s of training; with `--config.seed=1` and `=2`,
  0.979 and 0.980. At `--config.model.rbf_temperature=1` (the raw −distance²) it reached
  0.964; with `--config.model.output=dense` (a trained softmax layer) 0.975.
- lenet_caffe, 30 epochs: eval_top1 0.980 (eval_loss 0.065) in 76 s of training.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('lenet5', 'lenet5_1998', 'lenet_caffe')
DATASETS = ('offline_digits', 'mnist', 'fashion_mnist')

# The paper scales pixels so that the background is -0.1 and the ink 1.175 (§II-B); lenet5_1998
# pads 28×28 digits to 32×32 with the background value inside the model.
_BACKGROUND, _INK = -0.1, 1.175


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS, e.g. 'lenet5_1998,mnist'."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.dataset.name = dataset
  config.eval_batch_size = 500
  if variant == 'lenet5':
    config.model = recipes.model(
        'lenet5',
        activation='relu',
        pooling='max',
        pool_window=2,
        pool_stride=2,
        batch_norm=True,
        dropout_rate=0.0,
        dropout_scaling='train',
    )
    stats = dataset if dataset in ('offline_digits', 'fashion_mnist') else 'mnist'
    config.dataset.train_preprocess = f"random_crop(28, pad=2)|normalize('{stats}')"
    config.dataset.eval_preprocess = f"normalize('{stats}')"
    config.batch_size = 64
    config.num_epochs = 30
    config.optimizer.name = 'momentum'
    config.optimizer.lr = 0.05
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = 'cosine'
    config.schedule.warmup_epochs = 1.0
    config.log_every_steps = 62
    return config

  if variant == 'lenet_caffe':
    # Caffe's lenet_solver.prototxt: SGD momentum 0.9, lr 0.01, weight decay 5e-4, batch 64,
    # pixels in [0, 1] (decoding already scales them, as Caffe's 1/256 does); a cosine schedule
    # stands in for its "inv" decay.
    config.model = recipes.model('lenet_caffe')
    config.dataset.train_preprocess = 'random_crop(28, pad=2)'
    config.dataset.eval_preprocess = ''
    config.batch_size = 64
    config.num_epochs = 30
    config.optimizer.name = 'momentum'
    config.optimizer.lr = 0.01
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = 'cosine'
    config.log_every_steps = 62
    return config

  config.model = recipes.model(
      'lenet5_1998',
      output='rbf',
      rbf_temperature=16.0,
      input_size=32,
      pad_value=_BACKGROUND,
      paper_init=False,
  )
  std = 1.0 / (_INK - _BACKGROUND)
  scale = f'normalize(({-_BACKGROUND * std!r},), ({std!r},))'
  config.dataset.train_preprocess = f'random_crop(28, pad=2)|{scale}'
  config.dataset.eval_preprocess = scale
  # Adam stands in for the paper's per-parameter (diagonal Levenberg-Marquardt) step sizes: with
  # plain momentum SGD (batch 64) this net learned more slowly and ended lower here.
  config.batch_size = 32
  config.num_epochs = 30
  config.optimizer.name = 'adam'
  config.optimizer.lr = 0.002
  config.optimizer.weight_decay = 0.0
  config.schedule.name = 'cosine'
  config.schedule.warmup_epochs = 1.0
  config.log_every_steps = 125
  return config
