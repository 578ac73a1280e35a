"""Resizing, padding, cropping and flipping: where an image's pixels end up."""

from collections.abc import Sequence

import tensorflow as tf

from common.errors import ConfigError
from input_pipeline.ops import arguments
from input_pipeline.ops.registry import Op, deterministic_image_op, image_op, register

Size = int | Sequence[int]
PAD_MODES = ('constant', 'reflect', 'symmetric')  # tf.pad's, any case


def _padding(pad: int, mode: str) -> str:
  """`mode` for tf.pad, after checking `pad` (pixels per side) and `mode`."""
  arguments.count(pad, 'pad', 0, 'pixels per side')
  if not isinstance(mode, str) or mode.lower() not in PAD_MODES:
    raise ConfigError(f'mode must be one of {", ".join(map(repr, PAD_MODES))}, got {mode!r}.')
  return mode.upper()


def crop_scale(scale: Sequence[float]) -> tuple[float, float]:
  """Inception crops' range of area fractions, checked."""
  return arguments.interval(scale, 'scale', '0 < min <= max <= 1', lambda a, b: 0 < a <= b <= 1)


def crop_ratio(ratio: Sequence[float]) -> tuple[float, float]:
  """Inception crops' range of aspect ratios (width / height), checked."""
  return arguments.interval(ratio, 'ratio', '0 < min <= max', lambda a, b: 0 < a <= b)


def shorter_side_to(
    image: tf.Tensor, size: tf.Tensor, method: str = 'bilinear', antialias: bool = True
) -> tf.Tensor:
  """Scales `image` so that its shorter side is `size`, keeping the aspect ratio."""
  shape = tf.cast(tf.shape(image)[-3:-1], tf.float32)
  scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
  new_shape = tf.cast(tf.round(shape * scale), tf.int32)
  return tf.image.resize(image, new_shape, method=method, antialias=antialias)


def crop_at(
    image: tf.Tensor, top: tf.Tensor, left: tf.Tensor, height: int, width: int
) -> tf.Tensor:
  """The `height`×`width` window at (top, left); fails clearly if the image is smaller."""
  shape = tf.shape(image)
  tf.debugging.assert_greater_equal(
      shape[-3:-1],
      tf.constant([height, width]),
      message=f'image smaller than the {height}x{width} crop; resize it first',
  )
  return image[..., top : top + height, left : left + width, :]


def sample_window(
    image_shape: tf.Tensor, seed: tf.Tensor, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[tf.Tensor, tf.Tensor]:
  """Inception-style crop window: area fraction in `scale`, aspect ratio in `ratio`.

  Returns (offset [y, x], size [h, w]); after 100 failed draws the whole image.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape,
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=tuple(ratio),
      area_range=tuple(scale),
      max_attempts=100,
      use_image_if_no_bounding_boxes=True,
  )
  return begin[:2], size[:2]


@register('resize')
def resize(size: Size, method: str = 'bilinear', antialias: bool = False) -> Op:
  """Resizes to `size` (int: a square), ignoring the aspect ratio."""
  hw, method = arguments.size(size), arguments.resize_method(method)
  arguments.flag(antialias, 'antialias')
  return deterministic_image_op(
      lambda image: tf.image.resize(image, hw, method=method, antialias=antialias)
  )


@register('resize_shorter')
def resize_shorter(size: int, method: str = 'bilinear', antialias: bool = True) -> Op:
  """Scales the shorter side to `size`, keeping the aspect ratio (torchvision's Resize(int))."""
  arguments.count(size, 'size')
  arguments.resize_method(method)
  arguments.flag(antialias, 'antialias')
  return deterministic_image_op(lambda image: shorter_side_to(image, size, method, antialias))


@register('ensure_min_size')
def ensure_min_size(size: int, method: str = 'bilinear') -> Op:
  """Scales images whose shorter side is below `size` up to it (small datasets into models
  with a minimum input size); larger images are left alone."""
  arguments.count(size, 'size')
  arguments.resize_method(method)

  def fn(image: tf.Tensor) -> tf.Tensor:
    shorter = tf.reduce_min(tf.shape(image)[-3:-1])
    return tf.cond(
        shorter < size,
        lambda: shorter_side_to(image, size, method),
        lambda: tf.cast(image, tf.float32),
    )

  return deterministic_image_op(fn)


@register('random_resize_shorter')
def random_resize_shorter(min_size: int, max_size: int, method: str = 'bilinear') -> Op:
  """VGG's scale jittering: the shorter side to an integer drawn uniformly from [min, max]."""
  arguments.count(min_size, 'min_size')
  arguments.count(max_size, 'max_size', min_size, 'at least min_size')
  arguments.resize_method(method)

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    size = tf.random.stateless_uniform([], seed, min_size, max_size + 1, dtype=tf.int32)
    return shorter_side_to(image, size, method)

  return image_op(fn)


@register('pad')
def pad(pad: int, mode: str = 'constant') -> Op:
  """Pads each side by `pad` pixels: 'constant' (zeros), 'reflect' or 'symmetric'."""
  mode = _padding(pad, mode)
  return deterministic_image_op(lambda image: tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode))


@register('random_crop')
def random_crop(size: Size, pad: int = 0, mode: str = 'constant') -> Op:
  """Pads each side by `pad` (zeros unless `mode`), then crops a random `size` window (CIFAR)."""
  height, width = arguments.size(size)
  mode = _padding(pad, mode)

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    if pad:
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode)
    return tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[-1]], seed)

  return image_op(fn)


@register('center_crop')
def center_crop(size: Size) -> Op:
  """Crops the central `size` window."""
  height, width = arguments.size(size)

  def fn(image: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(image)
    return crop_at(image, (shape[-3] - height) // 2, (shape[-2] - width) // 2, height, width)

  return deterministic_image_op(fn)


@register('random_resized_crop')
def random_resized_crop(
    size: Size,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    method: str = 'bilinear',
) -> Op:
  """Inception's crop (torchvision RandomResizedCrop): a window of random area and aspect
  ratio, resized to `size`. `decode_and_random_resized_crop` does the same on JPEG bytes."""
  hw, method = arguments.size(size), arguments.resize_method(method)
  scale, ratio = crop_scale(scale), crop_ratio(ratio)

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    offset, window = sample_window(tf.shape(image), seed, scale, ratio)
    crop = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([window, [-1]], 0))
    return tf.image.resize(crop, hw, method=method)

  return image_op(fn)


@register('flip_lr')
def flip_lr() -> Op:
  """Mirrors the image left-right with probability 1/2."""
  return image_op(tf.image.stateless_random_flip_left_right)
