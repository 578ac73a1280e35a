"""ResNeXt and Wide ResNet on ImageNet (torchvision's resnext50_32x4d, resnext101_32x8d,
wide_resnet50_2, wide_resnet101_2).

  python main.py --config=configs/resnext_imagenet.py --workdir=runs/resnext50_32x4d
  python main.py --config=configs/resnext_imagenet.py:wide_resnet50_2 --workdir=runs/wrn50_2

ResNeXt recipe, from the authors' Torch code (facebookresearch/ResNeXt, built on
fb.resnet.torch: opts.lua and train.lua): SGD with Nesterov momentum 0.9, weight decay 1e-4
on every parameter, batch 256, lr 0.1 (scaled linearly with the batch) divided by 10 at
epochs 30, 60 and 90, 100 epochs. torchvision's runs for its ResNeXt weights used the same
optimiser but with plain momentum (train.py defaults with --epochs 100; resnext101_32x8d on
64 GPUs, i.e. batch 2048 with the lr left at 0.1).

Wide ResNet recipe: torchvision's reference train.py defaults (plain momentum 0.9, weight
decay 1e-4 on every parameter, lr 0.1 per 256 images ÷10 every 30 epochs, 90 epochs). Its
published wide_resnet weights were trained otherwise (pytorch/vision#912: SGD with cosine
warm restarts for 256 epochs, fp16; lr and batch not given), which this trainer's schedules do
not express.

All four train with fb.resnet.torch's augmentation (the ResNeXt code's): Inception-style
scale and aspect-ratio crops, flips, colour jitter 0.4 and PCA lighting noise 0.1.

Reference, single 224 crop: ResNeXt-50 (32x4d) 22.2 % top-1 error (facebookresearch/ResNeXt
README); WRN-50-2-bottleneck 21.9 / 6.03 % top-1 / top-5 error (szagoruyko/wide-residual-
networks, pretrained/README); torchvision's V1 weights 77.618 % (resnext50_32x4d), 79.312 %
(resnext101_32x8d), 78.468 % (wide_resnet50_2), 78.848 % (wide_resnet101_2) top-1 accuracy.
Not measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the variant, e.g. 'resnext101_32x8d' or 'wide_resnet50_2'."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(variant, stride_on_3x3=True, zero_init_residual=False)
  recipes.imagenet(config, image_size=224, color_jitter=0.4, lighting=0.1)
  config.batch_size = 256
  if variant.startswith('resnext'):
    config.num_epochs = 100
    recipes.sgd(config, lr=0.1, weight_decay=1e-4, nesterov=True, decay_norm_and_bias=True)
    recipes.step_schedule(config, (30, 60, 90))
  else:
    config.num_epochs = 90
    recipes.sgd(config, lr=0.1, weight_decay=1e-4, decay_norm_and_bias=True)
    recipes.step_schedule(config, (30, 60))
  config.optimizer.lr_reference_batch_size = 256
  config.log_every_steps = 100
  return config
