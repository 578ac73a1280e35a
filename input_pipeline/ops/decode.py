"""Decoding stored images: the first op of every pipeline (added when a config leaves it out)."""

from collections.abc import Sequence

import tensorflow as tf

from input_pipeline.ops import arguments
from input_pipeline.ops.geometry import (
    Size,
    crop_ratio,
    crop_scale,
    random_resized_crop,
    sample_window,
)
from input_pipeline.ops.registry import Features, Op, register

CHANNELS = (0, 1, 3)  # 0: as stored


def decode_uint8(data: tf.Tensor, channels: int = 0) -> tf.Tensor:
  """Encoded bytes (PNG, JPEG, ...) or an already decoded image → uint8 [H, W, C].

  `channels` 0 keeps the stored channel count; 1 or 3 converts.
  """
  if data.dtype == tf.string:
    return tf.io.decode_image(data, channels=channels, expand_animations=False)
  if channels == 3:
    return tf.cond(tf.shape(data)[-1] == 1, lambda: tf.tile(data, [1, 1, 3]), lambda: data)
  if channels == 1:
    return tf.cond(tf.shape(data)[-1] == 3, lambda: tf.image.rgb_to_grayscale(data), lambda: data)
  return data


def to_float(image: tf.Tensor) -> tf.Tensor:
  """uint8 [0, 255] → float32 [0, 1]; float images are left alone."""
  return tf.image.convert_image_dtype(image, tf.float32)


@register('decode', decodes=True)
def decode(channels: int = 0) -> Op:
  """Decodes the stored image to float32 in [0, 1] (`channels` 3 turns grey into RGB)."""
  arguments.choice(channels, 'channels', CHANNELS)
  return lambda features, seed: {
      **features,
      'image': to_float(decode_uint8(features['image'], channels)),
  }


@register('decode_and_random_resized_crop', decodes=True)
def decode_and_random_resized_crop(
    size: Size,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    channels: int = 3,
) -> Op:
  """`random_resized_crop` fused with decoding: JPEGs decode only the crop window (the
  ImageNet speed-up of flax's example); other formats decode whole, then crop."""
  hw, scale, ratio = arguments.size(size), crop_scale(scale), crop_ratio(ratio)
  arguments.choice(channels, 'channels', CHANNELS)
  crop_decoded = random_resized_crop(size, scale, ratio)

  def fn(features: Features, seed: tf.Tensor) -> Features:
    data = features['image']
    if data.dtype != tf.string:
      return crop_decoded({**features, 'image': to_float(data)}, seed)

    def jpeg() -> tf.Tensor:
      offset, window = sample_window(tf.image.extract_jpeg_shape(data), seed, scale, ratio)
      crop = tf.image.decode_and_crop_jpeg(data, tf.concat([offset, window], 0), channels=channels)
      return tf.image.resize(to_float(crop), hw)

    def other() -> tf.Tensor:
      return crop_decoded({'image': to_float(decode_uint8(data, channels))}, seed)['image']

    return {**features, 'image': tf.cond(tf.io.is_jpeg(data), jpeg, other)}

  return fn
