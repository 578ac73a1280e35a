"""AlexNet on ImageNet with the paper's recipe (Krizhevsky et al. 2012, §5).

  python main.py --config=configs/alexnet_imagenet.py --workdir=runs/alexnet_paper
  python main.py --config=configs/alexnet_imagenet.py:alexnet --workdir=runs/alexnet

`alexnet_paper` (two towers, LRN) trains on 227×227 crops, the size its layer arithmetic needs
(the paper says 224); torchvision's `alexnet` on 224×224. Recipe: SGD momentum 0.9, weight decay
5e-4, batch 128, lr 0.01 divided by 10 when the validation accuracy stops improving (three
times), 90 epochs, dropout 0.5 in fc6/fc7. `alexnet_paper` takes the paper's data recipe too:
random crops and flips of the central 256×256 square of images resized to shorter side 256,
PCA lighting noise (σ 0.1, ImageNet's eigenvectors), and the average softmax of ten views
(four corners and the centre, each mirrored) at test time. It normalises with the ImageNet
mean and std where the paper subtracted a per-pixel mean image; for that, run
`--mode=dataset_stats` and use subtract_pixel_mean('<workdir>/dataset_stats.npz'). `alexnet`
follows torchvision's reference recipe: random-resized (Inception) crops and flips, one
centre crop at test. The paper reports 37.5 % / 17.0 % top-1 / top-5 error on the ILSVRC-2010
test set; not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('alexnet_paper', 'alexnet')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  widths = (96, 256, 384, 384, 256) if variant == 'alexnet_paper' else (64, 192, 384, 256, 256)
  config.model = recipes.model(
      variant,
      features=widths,
      hidden_features=4096,
      dropout_rate=0.5,
      dropout_scaling='train',
  )
  if variant == 'alexnet_paper':
    recipes.imagenet(config, image_size=227, crop='alexnet', lighting=0.1, ten_crop=True)
  else:
    recipes.imagenet(config, image_size=224)
  config.batch_size = 128
  config.num_epochs = 90
  config.optimizer.name = 'momentum'
  config.optimizer.momentum = 0.9
  config.optimizer.lr = 0.01
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = 'plateau'
  config.schedule.metric = 'eval_top1'
  config.schedule.decay_factor = 0.1
  config.schedule.max_reductions = 3
  config.log_every_steps = 100
  return config
