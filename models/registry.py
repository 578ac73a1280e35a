"""Name → constructor registry: the one way the trainer and tools build a model."""

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


class NativeInput(NamedTuple):
  """The input a model was designed for, which `main.py --mode=summary --model=...` uses."""

  image_size: int
  channels: int
  num_classes: int


IMAGENET = NativeInput(224, 3, 1000)
INPUT_299 = NativeInput(299, 3, 1000)  # Inception v3/v4, Xception
CIFAR10 = NativeInput(32, 3, 10)


class UnknownModelError(ValueError):
  """A model name or model field that the registry does not know."""


def register(
    name: str, *, native_input: NativeInput = IMAGENET, **defaults: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
  """Registers `fn` (a Module class or factory) under `name`, with fixed keyword defaults.

  One class can back several names, e.g. `register('resnet18', stage_sizes=(2, 2, 2, 2))`.
  `native_input` is the image size, channels and classes of the paper's setting.
  """

  def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if name in _MODELS:
      raise ValueError(f'Model {name!r} is registered twice.')
    _MODELS[name] = lambda **kwargs: fn(**{**defaults, **kwargs})
    _MODELS[name].target = fn  # type: ignore[attr-defined]
    _MODELS[name].native_input = native_input  # type: ignore[attr-defined]
    return fn

  return decorator


def list_models() -> list[str]:
  """All registered model names, sorted."""
  return sorted(_MODELS)


def _check_known(name: str) -> None:
  if name not in _MODELS:
    close = difflib.get_close_matches(name, _MODELS, n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise UnknownModelError(
        f'Unknown model {name!r}.{hint} Known models: {", ".join(list_models())}.'
    )


def native_input(name: str) -> NativeInput:
  """The image size, channels and number of classes `name` was designed for."""
  _check_known(name)
  return _MODELS[name].native_input  # type: ignore[attr-defined]


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  Raises UnknownModelError, naming the known models or the model's fields, when the name or
  a keyword is wrong.
  """
  _check_known(name)
  target = _MODELS[name].target  # type: ignore[attr-defined]
  if dataclasses.is_dataclass(target):
    fields = {f.name for f in dataclasses.fields(target)} - {'parent', 'name'}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
      raise UnknownModelError(
          f'Model {name!r} has no field(s) {", ".join(unknown)}; its fields are: '
          f'{", ".join(sorted(fields))}.'
      )
  return _MODELS[name](num_classes=num_classes, **kwargs)
