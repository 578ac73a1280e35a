"""VGG on ImageNet with the paper's recipe (Simonyan & Zisserman 2015, §3.1).

  python main.py --config=configs/vgg_imagenet.py --workdir=runs/vgg16
  python main.py --config=configs/vgg_imagenet.py:vgg11_bn --workdir=runs/vgg11_bn

Recipe: batch 256, SGD momentum 0.9, weight decay 5e-4, dropout 0.5 in fc6/fc7, lr 0.01
divided by 10 when validation accuracy stopped improving (3 times in the paper), 74 epochs
(370k iterations). Training crops are 224 from images resized to smallest side S = 256, with
flips and AlexNet's PCA colour shift (σ 0.1). The paper's best models jittered S in [256, 512]:
  --config.dataset.train_preprocess="random_resize_shorter(256, 512)|random_crop(224)|flip_lr|\
pca_lighting(0.1, 'imagenet')|normalize('imagenet')"
Evaluation here is a centre 224 crop, not the paper's dense evaluation over the whole image;
its multi-crop, multi-scale evaluation is close to
  --config.dataset.eval_preprocess="ten_crop(224, scales=(256, 384, 512))|normalize('imagenet')".

Paper, Table 3 (S = 256, one test scale Q = 256; top-1 / top-5 val. error): A (vgg11)
29.6 / 10.4 %, A-LRN (vgg11_lrn) 29.7 / 10.5 % (LRN did not help), B (vgg13) 28.7 / 9.9 %,
C (vgg16_c, 1×1 convs) 28.1 / 9.4 %, D (vgg16, 3×3s in their place) 27.0 / 8.8 %, E (vgg19)
27.3 / 9.0 %. Its best single model, D or E trained with S in [256, 512] and evaluated
multi-crop & dense at three scales, reaches 24.4 / 7.2 % (D) and 24.4 / 7.1 % (E) (Table 5).
The `_bn` variants are torchvision's and not in the paper. Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = (
    'vgg16',
    'vgg11',
    'vgg13',
    'vgg19',
    'vgg11_bn',
    'vgg13_bn',
    'vgg16_bn',
    'vgg19_bn',
    'vgg11_lrn',
    'vgg16_c',
)
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg` is a variant of VARIANTS (default vgg16)."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, dropout_rate=0.5)
  recipes.imagenet(config, image_size=224, resize_to=256, crop='random', lighting=0.1)
  config.batch_size = 256
  config.num_epochs = 74
  recipes.sgd(config, lr=0.01, weight_decay=5e-4)
  recipes.plateau_schedule(config)
  return config
