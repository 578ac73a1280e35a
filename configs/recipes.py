"""Pieces the family configs share: the `variant[,dataset]` argument and the data recipes.

A family config declares `VARIANTS` and `DATASETS` (the first of each is the default) and
calls `parse_arg`; the smoke test runs every config with every entry of both.
"""

from collections.abc import Sequence
from typing import Any

import ml_collections

from common.errors import ConfigError


def parse_arg(arg: str | None, variants: Sequence[str], datasets: Sequence[str]) -> tuple[str, str]:
  """Splits 'variant,dataset' (either part optional, any order) and checks both."""
  variant, dataset = variants[0], datasets[0]
  for token in filter(None, (t.strip() for t in (arg or '').split(','))):
    if token in variants:
      variant = token
    elif token in datasets:
      dataset = token
    else:
      raise ConfigError(
          f'Unknown config argument {token!r}: variants are {", ".join(variants)}; '
          f'datasets are {", ".join(datasets)}.'
      )
  return variant, dataset


def all_args(variants: Sequence[str], datasets: Sequence[str]) -> list[str]:
  """Every variant on the default dataset, then the default variant on every other dataset."""
  return list(variants) + [f'{variants[0]},{d}' for d in datasets[1:]]


def model(name: str, **fields: Any) -> ml_collections.ConfigDict:
  """config.model: the registry name plus the fields a user may override from the command line."""
  return ml_collections.ConfigDict({'name': name, **fields})


def cifar(config: ml_collections.ConfigDict, dataset: str) -> None:
  """CIFAR-10/100 with the standard augmentation: pad 4, random 32 crop, flip (He et al. 2016)."""
  config.dataset.name = dataset
  config.dataset.train_preprocess = f"random_crop(32, pad=4)|flip_lr|normalize('{dataset}')"
  config.dataset.eval_preprocess = f"normalize('{dataset}')"
  config.batch_size = 128
  config.eval_batch_size = 500


def imagenet(
    config: ml_collections.ConfigDict,
    image_size: int = 224,
    resize_to: int = 256,
    *,
    crop: str = 'inception',
    color_jitter: float | Sequence[float] = 0.0,
    lighting: float = 0.0,
    ten_crop: bool = False,
) -> None:
  """ImageNet training crops, colour augmentation and evaluation views.

  crop: 'inception' — random area (8–100 %) and aspect ratio (3/4–4/3), resized to
  `image_size` (GoogLeNet onwards; torchvision, timm and flax's example), decoding only the
  window of each JPEG; 'random' — random `image_size` crops of the image resized to shorter
  side `resize_to` (VGG); 'alexnet' — the same from its central `resize_to`² square;
  'scale_jitter' — from the image resized to a shorter side in [resize_to, 2·resize_to] (VGG).
  color_jitter: brightness/contrast/saturation strength (fb.resnet.torch: 0.4), or the four
  (brightness, contrast, saturation, hue) strengths (TF-slim's Inception distortion); lighting:
  AlexNet's PCA noise σ (0.1). Evaluation: the centre `image_size` crop of the image resized
  to `resize_to` (AlexNet: of its central square), or with `ten_crop` the ten AlexNet views.
  """
  config.dataset.name = 'imagenet2012'
  config.dataset.cache = False
  resized = f'resize_shorter({resize_to})'
  square = f'{resized}|center_crop({resize_to})' if crop == 'alexnet' else resized
  crops = {
      'inception': f'decode_and_random_resized_crop({image_size})',
      'alexnet': f'{square}|random_crop({image_size})',
      'random': f'{resized}|random_crop({image_size})',
      'scale_jitter': (
          f'random_resize_shorter({resize_to}, {2 * resize_to})|' f'random_crop({image_size})'
      ),
  }
  if crop not in crops:
    raise ConfigError(f'Unknown ImageNet crop {crop!r}; choose from {", ".join(crops)}.')
  train = f'{crops[crop]}|flip_lr'
  if color_jitter:
    strengths = (color_jitter,) * 3 if isinstance(color_jitter, (int, float)) else color_jitter
    train += f'|color_jitter({", ".join(map(str, strengths))})'
  if lighting:
    train += f"|pca_lighting({lighting}, 'imagenet')"
  views = f'{square}|ten_crop({image_size})' if ten_crop else f'{resized}|center_crop({image_size})'
  config.dataset.train_preprocess = f"{train}|normalize('imagenet')"
  config.dataset.eval_preprocess = f"{views}|normalize('imagenet')"
  config.eval_batch_size = 50 if ten_crop else 250


def sgd(
    config: ml_collections.ConfigDict,
    lr: float,
    weight_decay: float,
    *,
    nesterov: bool = False,
    momentum: float = 0.9,
    decay_norm_and_bias: bool = False,
) -> None:
  """SGD with (Nesterov) momentum and L2 weight decay: every paper recipe of this lineage."""
  config.optimizer.update(
      name='nesterov' if nesterov else 'momentum',
      lr=lr,
      momentum=momentum,
      weight_decay=weight_decay,
      decay_norm_and_bias=decay_norm_and_bias,
  )


def step_schedule(
    config: ml_collections.ConfigDict, decay_epochs: Sequence[float], factor: float = 0.1
) -> None:
  """The learning rate times `factor` at each of `decay_epochs`."""
  config.schedule.update(name='step', decay_epochs=tuple(decay_epochs), decay_factor=factor)


def exponential_schedule(
    config: ml_collections.ConfigDict, every_epochs: float, factor: float
) -> None:
  """The learning rate times `factor` every `every_epochs` (Inception v3: 0.94 every 2 epochs)."""
  config.schedule.update(name='exponential', decay_every_epochs=every_epochs, decay_factor=factor)


def poly_schedule(config: ml_collections.ConfigDict, power: float = 1.0) -> None:
  """Caffe's "poly": lr × (1 − t/T)^power down to 0 at the end (power 1: linear decay)."""
  config.schedule.update(name='poly', power=power, final_lr_fraction=0.0)


def plateau_schedule(config: ml_collections.ConfigDict, max_reductions: int = 3) -> None:
  """AlexNet's: divide the learning rate by 10 when validation top-1 stops improving."""
  config.schedule.update(
      name='plateau', metric='eval_top1', decay_factor=0.1, max_reductions=max_reductions
  )
