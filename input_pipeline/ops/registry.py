"""The op registry and the parser that turns "op1(...)|op2(...)" into one preprocessing function.

An op factory, called with the string's arguments, returns `fn(features, seed) -> features`:
`features` is one example's dict ('image', 'label', ...) for per-example ops, or a whole
batch's for batch ops (mixup), and `seed` is a stateless-random seed (int64[2]) unique to
this op and this example (or batch) in this epoch. Images are float32 in [0, 1] after
`decode`; random ops draw only through `seed`, so a config always yields the same batches.
"""

import ast
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from common.errors import ConfigError, did_you_mean

Features = dict[str, tf.Tensor]
Op = Callable[[Features, tf.Tensor], Features]


@dataclasses.dataclass(frozen=True)
class _Entry:
  factory: Callable[..., Op]
  batch: bool  # works on whole batches (mixup), so it runs after batching
  decodes: bool  # turns encoded bytes into an image; only as the first op
  uses_stats: bool  # consumes dataset statistics (normalisation, ZCA, PCA lighting)
  views: bool  # stacks several views of the image (evaluation only)


_OPS: dict[str, _Entry] = {}


def register(
    name: str,
    *,
    batch: bool = False,
    decodes: bool = False,
    uses_stats: bool = False,
    views: bool = False,
) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Registers an op factory under `name`."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    _OPS[name] = _Entry(factory, batch, decodes, uses_stats, views)
    return factory

  return decorator


def image_op(fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> Op:
  """Lifts `fn(image, seed) -> image` to an op on the features dict."""
  return lambda features, seed: {**features, 'image': fn(features['image'], seed)}


def deterministic_image_op(fn: Callable[[tf.Tensor], tf.Tensor]) -> Op:
  """Lifts `fn(image) -> image`, which draws no randomness, to an op."""
  return lambda features, seed: {**features, 'image': fn(features['image'])}


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
  raise ConfigError(
      f'Cannot parse preprocessing op {text!r}: write name(literal args, key=literal).'
  )


def _split(spec: str | Sequence[str]) -> list[str]:
  texts = spec.split('|') if isinstance(spec, str) else list(spec)
  return [t.strip() for t in texts if t.strip()]


def _entry(text: str) -> _Entry:
  name = _parse_call(text)[0]
  if name not in _OPS:
    raise ConfigError(
        f'Unknown preprocessing op {name!r}.{did_you_mean(name, _OPS)} Known ops: '
        f'{", ".join(list_ops())}.'
    )
  return _OPS[name]


def _compose(ops: list[Op], first_index: int) -> Op:
  def composed(features: Features, seed: tf.Tensor) -> Features:
    for i, op in enumerate(ops, first_index):
      features = op(features, tf.random.experimental.stateless_fold_in(seed, i))
    return features

  return composed


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """A parsed op string: per-example ops, then (optionally) batch ops such as mixup.

  Calling it runs the per-example ops; `batch_fn` is None when there are no batch ops.
  """

  names: tuple[str, ...]  # the ops' names, in order
  example_fn: Op
  batch_fn: Op | None
  views: bool  # some op stacks views: images become [views, H, W, C]

  def __call__(self, features: Features, seed: tf.Tensor) -> Features:
    return self.example_fn(features, seed)


def parse(spec: str | Sequence[str]) -> Preprocess:
  """Parses 'op1(...)|op2(...)'; '' is the identity. Batch ops must come last."""
  texts = _split(spec)
  example_ops, batch_ops = [], []
  for position, text in enumerate(texts):
    entry = _entry(text)
    if entry.decodes and position:
      raise ConfigError(f'{text!r} decodes the stored image, so it must be the first op.')
    if batch_ops and not entry.batch:
      raise ConfigError(
          f'{text!r} works on single examples, so it must come before the batch '
          f'op {texts[position - 1]!r}.'
      )
    name, args, kwargs = _parse_call(text)
    try:
      op = entry.factory(*args, **kwargs)
    except (TypeError, ValueError) as e:  # ConfigError too: the op's own check of its arguments
      raise ConfigError(f'Bad arguments for preprocessing op {text!r}: {e}') from e
    (batch_ops if entry.batch else example_ops).append(op)
  return Preprocess(
      names=tuple(_parse_call(t)[0] for t in texts),
      example_fn=_compose(example_ops, 0),
      batch_fn=_compose(batch_ops, len(example_ops)) if batch_ops else None,
      views=any(_entry(t).views for t in texts),
  )


def with_decode(spec: str, after_decode: Sequence[str] = ()) -> str:
  """`spec` with `decode` in front unless its first op already decodes, and the ops
  `after_decode` right after the decoding op."""
  texts = _split(spec)
  if not (texts and _entry(texts[0]).decodes):
    texts = ['decode'] + texts
  return '|'.join(texts[:1] + list(after_decode) + texts[1:])


def before_stats(spec: str) -> str:
  """The ops of `spec` before its first statistics-consuming (or view, or batch) op: the
  images that op sees, which `dataset_stats` describes."""
  texts = _split(spec)
  cut = next(
      (
          i
          for i, t in enumerate(texts)
          if _entry(t).uses_stats or _entry(t).views or _entry(t).batch
      ),
      len(texts),
  )
  return '|'.join(texts[:cut])


def without_stats(spec: str) -> str:
  """`spec` less its statistics-consuming ops: the same pixels, crops and views, unnormalised
  (how a person should see the image the model sees)."""
  return '|'.join(t for t in _split(spec) if not _entry(t).uses_stats)
