"""Evaluation views: several crops of one image, whose softmax outputs the eval step averages."""

from collections.abc import Sequence

import tensorflow as tf

from input_pipeline.ops import arguments
from input_pipeline.ops.geometry import Size, crop_at, shorter_side_to
from input_pipeline.ops.registry import Op, deterministic_image_op, register


def _five_crops(image: tf.Tensor, height: int, width: int, corners: bool) -> list[tf.Tensor]:
  shape = tf.shape(image)
  bottom, right = shape[0] - height, shape[1] - width
  offsets = [(bottom // 2, right // 2)]
  if corners:
    offsets += [(0, 0), (0, right), (bottom, 0), (bottom, right)]
  return [crop_at(image, top, left, height, width) for top, left in offsets]


@register('ten_crop', views=True)
def ten_crop(size: Size, scales: Sequence[int] = (), corners: bool = True, flip: bool = True) -> Op:
  """AlexNet's test views: the centre and four corner `size` crops, each also mirrored,
  stacked as image[views, h, w, c]. `scales` repeats them with the shorter side resized to
  each scale (multi-scale testing); `corners=False` keeps the centre crop only."""
  height, width = arguments.size(size)
  arguments.counts(scales, 'scales', 'shorter sides')
  arguments.flag(corners, 'corners')
  arguments.flag(flip, 'flip')

  def fn(image: tf.Tensor) -> tf.Tensor:
    resized = [shorter_side_to(image, s) for s in scales] if scales else [image]
    crops = [c for r in resized for c in _five_crops(r, height, width, corners)]
    if flip:
      crops += [tf.image.flip_left_right(c) for c in crops]
    return tf.stack(crops)

  return deterministic_image_op(fn)
