"""Augmentations that hide or mix image content: cutout (per example) and mixup (per batch)."""

import tensorflow as tf

from input_pipeline.ops import arguments
from input_pipeline.ops.registry import Features, Op, image_op, register


@register('cutout')
def cutout(size: int, fill: float = 0.0) -> Op:
  """DeVries & Taylor 2017: a `size`×`size` square, centred anywhere in the image (clipped at
  the border), set to `fill`. Put it after normalisation so that 0 is the mean."""
  arguments.count(size, 'size', 1, 'the side of the square')
  arguments.number(fill, 'fill', 'a number', lambda _: True)

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(image)
    centre = tf.random.stateless_uniform([2], seed, 0, tf.int32.max, dtype=tf.int32) % shape[:2]
    rows, cols = tf.range(shape[0]), tf.range(shape[1])
    inside_rows = (rows >= centre[0] - size // 2) & (rows < centre[0] - size // 2 + size)
    inside_cols = (cols >= centre[1] - size // 2) & (cols < centre[1] - size // 2 + size)
    hole = inside_rows[:, None, None] & inside_cols[None, :, None]
    return tf.where(hole, tf.cast(fill, image.dtype), image)

  return image_op(fn)


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
  a = tf.random.stateless_gamma([], seed, alpha)
  b = tf.random.stateless_gamma([], tf.random.experimental.stateless_fold_in(seed, 1), alpha)
  return a / (a + b)


@register('mixup', batch=True)
def mixup(alpha: float = 0.2) -> Op:
  """Zhang et al. 2018: each batch becomes λ·x + (1 − λ)·x[perm], λ ~ Beta(alpha, alpha).

  Adds `mix_label` (the partner's label) and `mix_weight` (1 − λ, per example); the train
  step's loss is (1 − w)·loss(label) + w·loss(mix_label).
  """
  arguments.number(alpha, 'alpha', '> 0 (Beta(alpha, alpha))', lambda a: a > 0)

  def fn(batch: Features, seed: tf.Tensor) -> Features:
    lam = _beta(seed, alpha)
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(tf.shape(batch['label'])[0]), tf.random.experimental.stateless_fold_in(seed, 2)
    )
    image = lam * batch['image'] + (1.0 - lam) * tf.gather(batch['image'], perm)
    return {
        **batch,
        'image': image,
        'mix_label': tf.gather(batch['label'], perm),
        'mix_weight': tf.fill(tf.shape(batch['label']), 1.0 - lam),
    }

  return fn
