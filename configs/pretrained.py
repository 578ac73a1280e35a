"""Published ImageNet networks converted into the zoo: evaluate them, look inside, fine-tune them.

Convert a reference's weight file once into a workdir (README, "Pretrained weights", says where
each file comes from), then use it as any trained run:

  python main.py --mode=convert --config=configs/pretrained.py:resnet50 \
      --weights=resnet50-0676ba61.pth --workdir=runs/resnet50_torchvision
  python main.py --mode=predict --workdir=runs/resnet50_torchvision --image=cat.jpg
  python main.py --mode=evaluate --config=configs/pretrained.py:resnet50 \
      --workdir=runs/resnet50_torchvision           # ImageNet validation, the source's crop
  python main.py --mode=evaluate --config=configs/pretrained.py:resnet50,imagenette \
      --workdir=runs/resnet50_torchvision           # Imagenette's labels as ImageNet's
  python main.py --mode=filters --workdir=runs/resnet50_torchvision

Fine-tune it on another dataset: a new classifier, the backbone frozen through its learning-rate
multipliers (add `--config.optimizer.lr_multipliers=''` to train the whole network):

  python main.py --config=configs/pretrained.py:resnet18,offline_digits \
      --config.init_from=runs/resnet18_torchvision --workdir=runs/resnet18_digits

On the ImageNet datasets the config fine-tunes the whole network with its own classifier (lr
0.001, 5 epochs); elsewhere images are resized to the network's input and normalised as its
source expects, and a new classifier trains for one epoch at lr 0.01. Measured
(docs/pretrained.md): the seeded torchvision ResNet-18 of the conversion fixtures (random
weights), its backbone frozen, reached 39.1 % top-1 on the offline digits in that epoch (chance:
10 %; 9.3 minutes on two CPU cores).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from configs import default, recipes

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # Inception's and Keras's: pixels scaled to [-1, 1]


@dataclasses.dataclass(frozen=True)
class Converted:
  """What runs of a converted model need: its input, the evaluation preprocessing its source
  expects, its classifier's layers and the fields the source sets."""

  image_size: int = 224
  resize: int = 256  # the shorter side before the centre crop
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD
  method: str = 'bilinear'
  head: str = 'fc'  # regex over layer names: the classifier(s) a new dataset replaces
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def preprocess(self, resize: int | None = None) -> str:
    """Shorter side to `resize`, the centre `image_size` crop, the source's normalisation."""
    return (
        f'resize_shorter({resize or self.resize}, {self.method!r})|'
        f'center_crop({self.image_size})|normalize({self.mean}, {self.std})'
    )


def _timm(crop_pct: float, mean=IMAGENET_MEAN, std=IMAGENET_STD, size: int = 224) -> Converted:
  """timm's evaluation: bicubic resize to floor(size / crop_pct), centre crop."""
  return Converted(size, int(size / crop_pct), mean, std, 'bicubic')


# torchvision's GoogLeNet and Inception v3 weights come from TensorFlow: torchvision turns
# ImageNet-normalised inputs back into [-1, 1] ones (transform_input), normalising with 0.5 here.
MODELS: dict[str, Converted] = {
    'alexnet': Converted(head='fc8'),
    'googlenet': Converted(mean=HALF, std=HALF, head='fc|aux.*'),
    'inception_v3': Converted(299, 342, HALF, HALF, head='fc|aux.*'),
    'mobilenet_v2': Converted(head='classifier'),
    'mobilenet_v1': Converted(224, 224, HALF, HALF, fields={'act': 'relu6'}),
    'xception': Converted(299, 299, HALF, HALF),
    'seresnet50': _timm(0.95),
    'seresnext50_32x4d': _timm(0.875),
    'inception_v4': _timm(0.875, HALF, HALF, 299),
    'inception_resnet_v2': _timm(0.8975, HALF, HALF, 299),
    **{f'preact_resnet{d}': _timm(0.9, HALF, HALF) for d in (18, 34)},
    **{f'preact_resnet{d}': _timm(0.95, HALF, HALF) for d in (50, 101)},
    **{f'resnet{d}': Converted() for d in (18, 34, 50, 101, 152)},
    **{n: Converted() for n in ('resnext50_32x4d', 'resnext101_32x8d')},
    **{n: Converted() for n in ('wide_resnet50_2', 'wide_resnet101_2')},
    **{f'densenet{d}': Converted(head='classifier') for d in (121, 161, 169, 201)},
    **{f'shufflenet_v2_x{w}': Converted() for w in ('0_5', '1_0', '1_5', '2_0')},
    **{f'squeezenet1_{v}': Converted(head='conv10') for v in (0, 1)},
    **{f'vgg{d}{bn}': Converted(head='head') for d in (11, 13, 16, 19) for bn in ('', '_bn')},
}
VARIANTS = tuple(sorted(MODELS, key=lambda n: (n != 'resnet50', n)))
IMAGENET_DATASETS = ('imagenet2012', 'imagenette')
DATASETS = (*IMAGENET_DATASETS, 'offline_digits', 'cifar10', 'cifar100')


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: the converted model and the dataset, e.g. 'resnet18,offline_digits'."""
  variant, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  converted = MODELS[variant]
  config = default.get_config()
  config.model = recipes.model(variant, **converted.fields)
  config.dataset.name = dataset
  size = converted.image_size
  if dataset in IMAGENET_DATASETS:
    # The 1000-way classifier is kept: Imagenette's labels become their ImageNet classes.
    config.dataset.imagenet_labels = True
    config.dataset.cache = False
    config.dataset.train_preprocess = (
        f'decode_and_random_resized_crop({size})|flip_lr|'
        f'normalize({converted.mean}, {converted.std})'
    )
    config.dataset.eval_preprocess = converted.preprocess()
    config.num_epochs = 5
    lr, batch = 0.001, 64
  else:
    # A new classifier on another dataset: the images in RGB at the network's input size.
    resized = (
        f'to_rgb|resize({size}, {converted.method!r})|'
        f'normalize({converted.mean}, {converted.std})'
    )
    config.dataset.train_preprocess = resized
    config.dataset.eval_preprocess = resized
    config.init_from_exclude = f'({converted.head})/.*'
    config.optimizer.lr_multipliers = f'(?!({converted.head})/).*=0'
    config.num_epochs = 1
    lr, batch = 0.01, 32
  config.batch_size = batch
  config.eval_batch_size = 2 * batch
  recipes.sgd(config, lr=lr, weight_decay=1e-4)
  config.schedule.name = 'cosine'
  config.log_every_steps = 10
  return config
