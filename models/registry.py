"""Name → model registry: the one way the trainer and the tools build a model.

Each family file ends with one `register(...)` call per name: the Module class, the fields that
make this variant, the implementation it follows and the parameter count it is pinned to
(tests/test_every_model.py checks every count at the native input).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from common.errors import ConfigError, did_you_mean
from models import compressed
from models.embedding import EmbeddingNet


class NativeInput(NamedTuple):
  """The input a model was designed for, which `main.py --mode=summary --model=...` uses."""

  image_size: int
  channels: int
  num_classes: int


IMAGENET = NativeInput(224, 3, 1000)
INPUT_299 = NativeInput(299, 3, 1000)  # Inception v3/v4, Xception
CIFAR10 = NativeInput(32, 3, 10)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """A registered name: `module(**fields, num_classes=..., **overrides)` builds it."""

  name: str
  module: type[nn.Module]
  fields: Mapping[str, Any]
  reference: str  # the implementation it follows (torchvision, timm, Keras, a paper's table)
  params: int  # trainable parameters on `native_input`, as `reference` publishes them
  native_input: NativeInput
  per_pixel: bool = False  # logits [batch, H, W, num_classes] (segmentation), not [batch, classes]


_MODELS: dict[str, ModelEntry] = {}

# Config fields that turn a backbone into an embedding network (from_config).
EMBEDDING_FIELDS = ('embedding_dim', 'normalize_embedding', 'embedding_classifier')


class UnknownModelError(ConfigError):
  """A model name or model field that the registry does not know."""


def register(
    name: str,
    module: type[nn.Module],
    *,
    reference: str,
    params: int,
    native_input: NativeInput = IMAGENET,
    per_pixel: bool = False,
    **fields: Any,
) -> None:
  """Registers `module` with `fields` under `name`; one class can back several names.

  `reference` names the implementation the variant follows and `params` the parameter count
  it is pinned to, on `native_input` (the paper's image size, channels and classes).
  `per_pixel` marks a model whose logits are [batch, H, W, num_classes] (task='segmentation').
  """
  if name in _MODELS:
    raise ValueError(f'Model {name!r} is registered twice.')
  _check_fields(name, module, fields)
  _MODELS[name] = ModelEntry(name, module, dict(fields), reference, params, native_input, per_pixel)


def list_models() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_MODELS)


def entry(name: str) -> ModelEntry:
  """The registry entry of `name`; UnknownModelError, naming the close and known ones, if none."""
  if name not in _MODELS:
    raise UnknownModelError(
        f'Unknown model {name!r}.{did_you_mean(name, _MODELS)} Known models: '
        f'{", ".join(list_models())}.'
    )
  return _MODELS[name]


def native_input(name: str) -> NativeInput:
  """The image size, channels and number of classes `name` was designed for."""
  return entry(name).native_input


def _check_fields(name: str, module: type[nn.Module], kwargs: Mapping[str, Any]) -> None:
  fields = {f.name for f in dataclasses.fields(module)} - {'parent', 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise UnknownModelError(
        f'Model {name!r} has no field(s) {", ".join(unknown)}; its fields are: '
        f'{", ".join(sorted(fields))}.'
    )


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs; `kwargs` override fields.

  Raises UnknownModelError, naming the known models or the model's fields, when the name or
  a keyword is wrong.
  """
  model = entry(name)
  _check_fields(name, model.module, kwargs)
  return model.module(**{**model.fields, 'num_classes': num_classes, **kwargs})


# config.precision: the compute dtype of every model (parameters and BatchNorm statistics stay
# float32, and every model returns float32 logits).
PRECISIONS = ('float32', 'bfloat16')


def compute_dtype(precision: str = 'float32', model_dtype: Any = None) -> jnp.dtype:
  """The dtype a model computes in under `config.precision` and an optional `config.model.dtype`.

  `model.dtype`, the older per-model switch, wins where precision is left at 'float32';
  otherwise the two must agree. ConfigError, in one line, for an unknown value or a conflict.
  """
  if precision not in PRECISIONS:
    raise ConfigError(
        f'precision={precision!r} is unknown: it must be one of {", ".join(PRECISIONS)}.'
    )
  if model_dtype is None:
    return jnp.dtype(precision)
  try:
    dtype = jnp.dtype(model_dtype)
  except TypeError as e:
    raise ConfigError(
        f'model.dtype={model_dtype!r} is not a dtype; set precision=bfloat16 instead.'
    ) from e
  if precision != 'float32' and dtype != jnp.dtype(precision):
    raise ConfigError(
        f'model.dtype={dtype.name} conflicts with precision={precision}: drop model.dtype '
        '(precision is the one switch).'
    )
  return dtype


def from_config(
    model_config: Mapping[str, Any],
    num_classes: int,
    *,
    precision: str = 'float32',
    **overrides: Any,
) -> nn.Module:
  """The model a config's `model` section names: `name`, and any field of the model.

  `precision` (the config's top-level `precision`) sets the compute dtype, with an older
  `model.dtype` as `compute_dtype` resolves them; `dtype` may be a string ('bfloat16'), as a
  command line gives it. `embedding_dim` > 0 makes it an embedding network
  (models/embedding.py): the backbone's classifier projects to `embedding_dim`, L2-normalised
  unless `normalize_embedding` is False, with a training-only softmax classifier over
  `num_classes` when `embedding_classifier` is True. The fields of `models.compressed.FIELDS`
  rewrite layers as a compression method left them.
  """
  kwargs = {k: v for k, v in model_config.items() if k != 'name'}
  kwargs.update(overrides)
  given = kwargs.pop('dtype', None)
  dtype = compute_dtype(precision, given)
  if given is not None or dtype != jnp.float32:  # models keep their own float32 default
    kwargs['dtype'] = dtype
  embedding = {k: kwargs.pop(k) for k in EMBEDDING_FIELDS if k in kwargs}
  compression = {k: kwargs.pop(k) for k in compressed.FIELDS if k in kwargs}
  if not embedding.get('embedding_dim'):
    return compressed.transform(
        create_model(model_config['name'], num_classes=num_classes, **kwargs), compression
    )
  return EmbeddingNet(
      compressed.transform(
          create_model(model_config['name'], num_classes=embedding['embedding_dim'], **kwargs),
          compression,
      ),
      normalize=embedding.get('normalize_embedding', True),
      num_classes=num_classes if embedding.get('embedding_classifier') else 0,
  )
