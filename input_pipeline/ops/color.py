"""Colour augmentation: PCA lighting, brightness/contrast/saturation/hue jitter, grey to RGB.

All work on float images in [0, 1] of shape [H, W, C] or view stacks [V, H, W, C].
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from input_pipeline import stats as stats_lib
from input_pipeline.ops import arguments
from input_pipeline.ops.normalization import check_trailing_shape, require
from input_pipeline.ops.registry import Op, deterministic_image_op, image_op, register

_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)
Range = float | Sequence[float]


@register('pca_lighting', uses_stats=True)
def pca_lighting(
    sigma: float = 0.1,
    stats: str = 'imagenet',
    eigval: Sequence[float] | None = None,
    eigvec: Sequence[Sequence[float]] | None = None,
) -> Op:
  """AlexNet's "fancy PCA": adds eigvec @ (alpha * eigval) to every pixel, alpha ~ N(0, sigma²)
  of shape [C] drawn once per image (mean 0; fb.resnet.torch's Lighting). `eigval`/`eigvec`
  (eigenvectors as columns) default to those of `stats`, a dataset name or stats file."""
  arguments.number(sigma, 'sigma', '>= 0', lambda v: v >= 0)
  if eigval is None or eigvec is None:
    arguments.text(stats, 'stats', 'a dataset name or the path of dataset statistics')
    loaded = stats_lib.load(stats)
    eigval = require(loaded, stats, 'eigval', 'pca_lighting') if eigval is None else eigval
    eigvec = require(loaded, stats, 'eigvec', 'pca_lighting') if eigvec is None else eigvec
  try:
    eigval, eigvec = np.asarray(eigval, np.float32), np.asarray(eigvec, np.float32)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'eigval and eigvec must be numbers, got {eigval!r} and {eigvec!r}.') from e
  channels = eigval.shape[0] if eigval.ndim else 0
  if eigval.ndim != 1 or eigvec.shape != (channels, channels):
    raise ConfigError(
        f'eigval must be [C] and eigvec [C, C], got shapes {eigval.shape} and {eigvec.shape}.'
    )
  eigval_t, eigvec_t = tf.constant(eigval), tf.constant(eigvec)
  message = f'pca_lighting: the image must have {channels} channels, as eigval has'

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = check_trailing_shape(image, (channels,), message)
    alpha = tf.random.stateless_normal([channels], seed, stddev=sigma)
    return image + tf.linalg.matvec(eigvec_t, alpha * eigval_t)

  return image_op(fn)


def _channels_are(image: tf.Tensor, channels: int) -> bool | tf.Tensor:
  """Python bool when the channel count is static, else a scalar bool tensor."""
  static = image.shape[-1] if image.shape.rank is not None else None
  return static == channels if static is not None else tf.equal(tf.shape(image)[-1], channels)


def _if_rgb(image: tf.Tensor, fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """fn(image) for RGB images; grey ones pass unchanged (torchvision's rule for saturation/hue)."""
  rgb = _channels_are(image, 3)
  if isinstance(rgb, bool):
    return fn(image) if rgb else image
  return tf.cond(rgb, lambda: fn(image), lambda: image)


def grey(image: tf.Tensor) -> tf.Tensor:
  """Luma [..., 1] of an RGB image (a grey image is its own)."""
  weighted = lambda: tf.reduce_sum(image * tf.constant(_GREY_WEIGHTS), -1, keepdims=True)
  is_grey = _channels_are(image, 1)
  if isinstance(is_grey, bool):
    return image if is_grey else weighted()
  return tf.cond(is_grey, lambda: image[..., :1], weighted)


def _blend(image: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """factor·image + (1 - factor)·other, clipped to [0, 1] (torchvision's _blend)."""
  return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(image * factor, 0.0, 1.0)


def _contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _blend(image, tf.reduce_mean(grey(image), axis=(-3, -2, -1), keepdims=True), factor)


def _saturation(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  return _if_rgb(image, lambda rgb: _blend(rgb, grey(rgb), factor))


def _hue(image: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
  return _if_rgb(image, lambda rgb: tf.image.adjust_hue(rgb, shift))


def _factor_range(
    value: Range, name: str, centre: float, bound: tuple[float, float]
) -> tuple[float, float] | None:
  """torchvision's rule: v → [centre - v, centre + v] (clamped to `bound`), or an explicit
  (min, max); None when the range is the identity."""
  if arguments.is_number(value):
    if not 0 <= value <= bound[1] - centre:
      raise ConfigError(f'{name} must be in [0, {bound[1] - centre}], got {value!r}.')
    low, high = max(bound[0], centre - value), min(bound[1], centre + value)
  elif not (
      isinstance(value, (tuple, list))
      and len(value) == 2
      and all(arguments.is_number(v) for v in value)
  ):
    raise ConfigError(f'{name} must be a strength or a (min, max) pair of numbers, got {value!r}.')
  else:
    low, high = (float(v) for v in value)
    if not bound[0] <= low <= high <= bound[1]:
      raise ConfigError(
          f'{name} range {tuple(value)} must satisfy {bound[0]} <= min <= max <= {bound[1]}.'
      )
  return None if low == high == centre else (low, high)


@register('color_jitter')
def color_jitter(
    brightness: Range = 0.0,
    contrast: Range = 0.0,
    saturation: Range = 0.0,
    hue: Range = 0.0,
    random_order: bool = True,
) -> Op:
  """torchvision's ColorJitter on [0, 1] images: brightness, contrast and saturation factors
  f ~ U[max(0, 1 - v), 1 + v] (or U[min, max] for a pair) blend the image with black, with its
  mean luma, and with its luma image; hue turns by U[-h, h] of a full turn (h <= 0.5). Each is
  clipped to [0, 1]; with `random_order` they run in a random order, as torchvision's and
  fb.resnet.torch's do. Grey images get brightness and contrast only."""
  ranges = [
      _factor_range(brightness, 'brightness', 1.0, (0.0, np.inf)),
      _factor_range(contrast, 'contrast', 1.0, (0.0, np.inf)),
      _factor_range(saturation, 'saturation', 1.0, (0.0, np.inf)),
      _factor_range(hue, 'hue', 0.0, (-0.5, 0.5)),
  ]
  arguments.flag(random_order, 'random_order')
  adjustments = [_brightness, _contrast, _saturation, _hue]
  active = [(k, adjust, r) for k, (adjust, r) in enumerate(zip(adjustments, ranges)) if r]

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # Each adjustment draws its factor from its own seed, whatever the order.
    def step(k, adjust, low_high):
      factor = tf.random.stateless_uniform(
          [], tf.random.experimental.stateless_fold_in(seed, k), *low_high
      )
      return lambda x: adjust(x, factor)

    steps = [step(*a) for a in active]
    if not random_order or len(steps) < 2:
      for s in steps:
        image = s(image)
      return image
    order = tf.argsort(
        tf.random.stateless_uniform(
            [len(steps)], tf.random.experimental.stateless_fold_in(seed, len(adjustments))
        )
    )
    for position in range(len(steps)):
      image = tf.switch_case(order[position], [lambda s=s, x=image: s(x) for s in steps])
    return image

  return image_op(fn)


@register('to_rgb')
def to_rgb() -> Op:
  """Grey [..., 1] → RGB [..., 3] by repeating the channel; RGB passes unchanged (lets MNIST
  feed three-channel models)."""
  message = 'to_rgb: images must have 1 or 3 channels'

  def fn(image: tf.Tensor) -> tf.Tensor:
    is_grey = _channels_are(image, 1)
    if isinstance(is_grey, bool):
      return tf.repeat(image, 3, axis=-1) if is_grey else check_trailing_shape(image, (3,), message)
    rgb = check_trailing_shape(
        tf.cond(is_grey, lambda: tf.repeat(image, 3, axis=-1), lambda: image), (3,), message
    )
    return rgb if rgb.shape.rank is None else tf.ensure_shape(rgb, rgb.shape[:-1] + [3])

  return deterministic_image_op(fn)
