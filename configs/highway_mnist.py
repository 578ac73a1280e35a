"""The thin fully connected highway networks of "Training Very Deep Networks" Fig. 1 (50 units,
depth 10 or 100) on handwritten digits.

  python main.py --config=configs/highway_mnist.py --workdir=runs/highway_fc10
  python main.py --config=configs/highway_mnist.py:highway_fc100,mnist --workdir=runs/hw_fc100
  # the plain counterpart of the figure (71 units, the same parameters per layer):
  python main.py --config=configs/highway_mnist.py --config.model.highway=False \
      --config.model.width=71 ...

The paper chose the learning rate, momentum and gate bias of each depth by random search and
reports training curves, not a test error. Here: SGD momentum 0.9, lr 0.01, weight decay 5e-4,
batch 64, 30 epochs with a cosine schedule (lenet_caffe's recipe). Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('highway_fc10', 'highway_fc100')
DATASETS = ('offline_digits', 'mnist', 'fashion_mnist')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, width=50, highway=True, gate_bias=-2.0)
  config.dataset.name = dataset
  stats = dataset if dataset in ('offline_digits', 'fashion_mnist') else 'mnist'
  config.dataset.train_preprocess = config.dataset.eval_preprocess = f"normalize('{stats}')"
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_epochs = 30
  recipes.sgd(config, lr=0.01, weight_decay=5e-4)
  config.schedule.name = 'cosine'
  return config
