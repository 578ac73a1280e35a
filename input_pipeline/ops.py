"""Preprocessing ops composed from a config string, e.g. "random_crop(28, pad=2)|normalize('mnist')".

Each registered op is a factory: called with the string's arguments it returns
`fn(features, seed) -> features`, where `features` is the example dict and `seed` a
stateless-random seed (int64[2]) unique to this op, example and epoch. Ops see images as
float32 in [0, 1]; random ops must draw only through `seed` so that a config always
produces the same batches.
"""

import ast
import difflib
from typing import Any, Callable, Sequence, Union

import tensorflow as tf

from input_pipeline import datasets

Features = dict[str, tf.Tensor]
Op = Callable[[Features, tf.Tensor], Features]
_OPS: dict[str, Callable[..., Op]] = {}


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Registers an op factory under `name`."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    _OPS[name] = factory
    return factory

  return decorator


def image_op(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Op:
  """Lifts `fn(image, seed) -> image` to an op on the features dict."""
  return lambda features, seed: {**features, 'image': fn(features['image'], seed)}


def list_ops() -> list[str]:
  return sorted(_OPS)


def _parse_call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
  """'name(1, k=2)' or 'name' → ('name', [1], {'k': 2}); arguments must be Python literals."""
  try:
    node = ast.parse(text.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, [], {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      args = [ast.literal_eval(a) for a in node.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
      return node.func.id, args, kwargs
  except (SyntaxError, ValueError):
    pass
  raise ValueError(f'Cannot parse preprocessing op {text!r}: write name(literal args, key=literal).')


def parse(spec: Union[str, Sequence[str]]) -> Op:
  """Composes the ops of `spec` ('op1(...)|op2(...)') into one op; '' is the identity."""
  texts = spec.split('|') if isinstance(spec, str) else list(spec)
  ops = []
  for text in filter(str.strip, texts):
    name, args, kwargs = _parse_call(text)
    if name not in _OPS:
      close = difflib.get_close_matches(name, _OPS, n=3)
      hint = f' Did you mean {", ".join(close)}?' if close else ''
      raise ValueError(f'Unknown preprocessing op {name!r}.{hint} Known ops: {", ".join(list_ops())}.')
    try:
      ops.append(_OPS[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f'Bad arguments for preprocessing op {text.strip()!r}: {e}') from e

  def composed(features: Features, seed: tf.Tensor) -> Features:
    for i, op in enumerate(ops):
      features = op(features, tf.random.experimental.stateless_fold_in(seed, i))
    return features

  return composed


@register('random_crop')
def random_crop(size: Union[int, Sequence[int]], pad: int = 0) -> Op:
  """Zero-pads each side by `pad`, then crops a random `size` window (the CIFAR recipe)."""
  height, width = (size, size) if isinstance(size, int) else size

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    if pad:
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[-1]], seed)

  return image_op(fn)


@register('flip_lr')
def flip_lr() -> Op:
  """Mirrors the image left-right with probability 1/2."""
  return image_op(tf.image.stateless_random_flip_left_right)


@register('center_crop')
def center_crop(size: Union[int, Sequence[int]]) -> Op:
  """Crops the central `size` window."""
  height, width = (size, size) if isinstance(size, int) else size

  def fn(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    del seed
    shape = tf.shape(image)
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    return image[top:top + height, left:left + width]

  return image_op(fn)


@register('resize')
def resize(size: Union[int, Sequence[int]], method: str = 'bilinear') -> Op:
  """Resizes to `size` (int: square)."""
  shape = (size, size) if isinstance(size, int) else tuple(size)
  return image_op(lambda image, seed: tf.image.resize(image, shape, method=method))


@register('normalize')
def normalize(mean: Union[str, Sequence[float]], std: Union[Sequence[float], None] = None) -> Op:
  """(image - mean) / std per channel: `normalize('cifar10')` or `normalize((m,...), (s,...))`."""
  if isinstance(mean, str):
    spec = datasets.get_spec(mean)
    if spec.mean is None:
      raise ValueError(f'No statistics are recorded for dataset {mean!r}; give mean and std.')
    mean, std = spec.mean, spec.std
  if std is None:
    raise ValueError('normalize needs std when mean is given as numbers.')
  mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
  return image_op(lambda image, seed: (image - mean_t) / std_t)
