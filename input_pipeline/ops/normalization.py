"""Normalisation: per-channel mean/std, per-pixel mean, ZCA whitening.

Each op takes its statistics as a dataset name ('cifar10', 'imagenet') or the path of a
`dataset_stats.npz` written by `python main.py --mode=dataset_stats` (or its directory),
read once when the op string is parsed.
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from input_pipeline import stats as stats_lib
from input_pipeline.ops import arguments
from input_pipeline.ops.registry import Op, deterministic_image_op, register


def require(stats: stats_lib.DatasetStats, name: str, field: str, op: str) -> np.ndarray:
  """`stats.<field>`, or a ValueError saying why it is missing and how to get it."""
  value = getattr(stats, field)
  if value is not None:
    return value
  if stats.num_examples is not None and stats.zca_note:  # computed here: the note says why
    why = stats.zca_note
  else:
    why = 'only per-channel numbers are recorded for it'
  raise ConfigError(
      f'{op} needs the {field} of {name!r}, which has none: {why}. Compute the '
      'statistics of the images this op sees: run python main.py '
      '--mode=dataset_stats --config=... --workdir=... and pass the path to '
      'dataset_stats.npz.'
  )


def check_trailing_shape(image: tf.Tensor, expected: Sequence[int], message: str) -> tf.Tensor:
  """`image`, checked to end in `expected` dimensions: now if its shape is known, else at run
  time (inside tf.data the size after decoding is known only then)."""
  expected = tuple(int(d) for d in expected)
  static = image.shape[-len(expected) :] if image.shape.rank is not None else image.shape
  if not static.is_compatible_with(expected):
    raise ConfigError(f'{message} (got shape {image.shape.as_list()})')
  if static.is_fully_defined() and static.rank == len(expected):
    return image
  check = tf.debugging.assert_equal(tf.shape(image)[-len(expected) :], expected, message=message)
  with tf.control_dependencies([check]):
    return tf.identity(image)


@register('normalize', uses_stats=True)
def normalize(mean: str | Sequence[float], std: Sequence[float] | None = None) -> Op:
  """(image - mean) / std per channel: `normalize('cifar10')`, a stats file
  `normalize('<workdir>/dataset_stats.npz')`, or `normalize((m,...), (s,...))`."""
  source = ''
  if isinstance(mean, str):
    if std is not None:
      raise ConfigError(
          f'std comes from the statistics of {mean!r}: give only the name, or both as numbers.'
      )
    try:
      stats = stats_lib.load(mean)
    except ValueError as e:
      raise ConfigError(f'{e} Or give the numbers: normalize((m, ...), (s, ...)).') from e
    source = f' in the statistics of {mean!r}; give the numbers: normalize((m, ...), (s, ...))'
    mean, std = stats.mean, stats.std
  else:
    if std is None:
      raise ConfigError('normalize needs std when mean is given as numbers.')
    per_channel = 'a dataset name, a statistics path, or a number per channel'
    arguments.numbers(mean, 'mean', per_channel)
    arguments.numbers(std, 'std', 'a number per channel')
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  if np.any(std <= 0):
    raise ConfigError(
        f'std must be > 0 in every channel (it divides), got {tuple(np.ravel(std).tolist())}'
        f'{source}.'
    )
  if mean.size > 1 and std.size > 1 and mean.shape != std.shape:
    raise ConfigError(
        f'mean and std must have one value per channel each, got {mean.size} and {std.size}.'
    )
  mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
  channels = max(mean.size, std.size)
  message = f'normalize: the image must have {channels} channels, as its mean and std do'

  def fn(image: tf.Tensor) -> tf.Tensor:
    if channels > 1:  # one value for all channels broadcasts; several must match
      image = check_trailing_shape(image, (channels,), message)
    return (image - mean_t) / std_t

  return deterministic_image_op(fn)


def _pixel_mean(stats: str, op: str) -> tuple[stats_lib.DatasetStats, np.ndarray]:
  loaded = stats_lib.load(stats)
  return loaded, require(loaded, stats, 'pixel_mean', op)


def _shape_message(op: str, name: str, shape: Sequence[int]) -> str:
  return (
      f'{op}: the image shape differs from the mean image of {name!r} '
      f'({"x".join(map(str, shape))}); crop or resize to that size before {op}, or compute '
      'the statistics of this pipeline (python main.py --mode=dataset_stats)'
  )


@register('subtract_pixel_mean', uses_stats=True)
def subtract_pixel_mean(stats: str) -> Op:
  """image - the dataset's mean image (AlexNet; He et al. 2016's CIFAR ResNets). Needs images
  of the stored mean's size; works on view stacks [V, H, W, C] too."""
  arguments.text(stats, 'stats', 'a dataset name or the path of dataset statistics')
  _, pixel_mean = _pixel_mean(stats, 'subtract_pixel_mean')
  mean_t = tf.constant(pixel_mean, tf.float32)
  message = _shape_message('subtract_pixel_mean', stats, pixel_mean.shape)
  return deterministic_image_op(
      lambda image: check_trailing_shape(image, pixel_mean.shape, message) - mean_t
  )


@register('zca', uses_stats=True)
def zca(stats: str, epsilon: float | None = None) -> Op:
  """ZCA whitening: (image - mean image), flattened, @ W (W from `stats.compute`).

  `epsilon` None uses the stored W (whose ε the JSON records); another ε rebuilds W from the
  stored one at parse time (one D×D eigendecomposition, 11 s for 32×32×3 on two busy CPU
  cores: the file keeps one D×D matrix, not the covariance as well). Works on view stacks
  [V, H, W, C] too.
  """
  arguments.text(stats, 'stats', 'a dataset name or the path of dataset statistics')
  if epsilon is not None:
    arguments.number(epsilon, 'epsilon', '> 0 (or None for the stored one)', lambda e: e > 0)
  loaded, pixel_mean = _pixel_mean(stats, 'zca')
  w = require(loaded, stats, 'zca', 'zca')
  if epsilon is not None and epsilon != loaded.zca_epsilon:
    w = stats_lib.rezca(w, loaded.zca_epsilon, epsilon)
  mean_t, w_t = tf.constant(pixel_mean, tf.float32), tf.constant(w, tf.float32)
  message = _shape_message('zca', stats, pixel_mean.shape)

  def fn(image: tf.Tensor) -> tf.Tensor:
    centred = check_trailing_shape(image, pixel_mean.shape, message) - mean_t
    flat = tf.reshape(centred, [-1, w.shape[0]])
    return tf.reshape(tf.matmul(flat, w_t), tf.shape(image))

  return deterministic_image_op(fn)
