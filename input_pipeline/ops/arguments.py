"""Checks of op arguments, run by each op factory when its string is parsed (before any data).

Each check returns the value in the form the op uses, or raises ConfigError saying which
argument was wrong, what was given and what is allowed. The messages leave out the op: `parse`
puts the whole op string in front, e.g. "random_crop('a', pad=2)": size must be ...
"""

from collections.abc import Callable, Sequence
from typing import Any

from common.errors import ConfigError

# tf.image.resize's methods (tf.image.ResizeMethod's values).
RESIZE_METHODS = (
    'bilinear',
    'nearest',
    'bicubic',
    'area',
    'lanczos3',
    'lanczos5',
    'gaussian',
    'mitchellcubic',
)


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def count(value: Any, name: str, least: int = 1, meaning: str = '') -> int:
  """`value`, an int >= `least`; `meaning` (e.g. 'pixels per side') explains it in the message."""
  if not (is_int(value) and value >= least):
    unit = f' ({meaning})' if meaning else ''
    raise ConfigError(f'{name} must be an int >= {least}{unit}, got {value!r}.')
  return value


def counts(value: Any, name: str, meaning: str) -> tuple[int, ...]:
  """`value`, a (possibly empty) sequence of positive ints; `meaning` says what they count."""
  if not (isinstance(value, (tuple, list)) and all(is_int(v) and v >= 1 for v in value)):
    raise ConfigError(f'{name} must be a sequence of positive ints ({meaning}), got {value!r}.')
  return tuple(value)


def size(value: Any, name: str = 'size') -> tuple[int, int]:
  """(height, width) of a positive int (a square) or a pair of positive ints."""
  if is_int(value) and value >= 1:
    return value, value
  if (
      isinstance(value, (tuple, list))
      and len(value) == 2
      and all(is_int(v) and v >= 1 for v in value)
  ):
    return tuple(value)
  raise ConfigError(f'{name} must be a positive int or a (height, width) pair, got {value!r}.')


def number(value: Any, name: str, allowed: str, valid: Callable[[float], bool]) -> float:
  """`value`, a number passing `valid`; `allowed` says which, e.g. '> 0' or 'in [0, 1]'."""
  if not (is_number(value) and valid(value)):
    raise ConfigError(f'{name} must be {allowed}, got {value!r}.')
  return float(value)


def numbers(value: Any, name: str, allowed: str = 'a number or a sequence of numbers') -> Any:
  """`value`, a number or a flat sequence of numbers (per-channel statistics)."""
  flat = value if isinstance(value, (tuple, list)) else (value,)
  if not (flat and all(is_number(v) for v in flat)):
    raise ConfigError(f'{name} must be {allowed}, got {value!r}.')
  return value


def interval(
    value: Any, name: str, allowed: str, valid: Callable[[float, float], bool]
) -> tuple[float, float]:
  """(low, high) of a pair of numbers passing `valid(low, high)`; `allowed` says which."""
  if not (
      isinstance(value, (tuple, list))
      and len(value) == 2
      and all(is_number(v) for v in value)
      and valid(*value)
  ):
    raise ConfigError(f'{name} must be a (min, max) pair with {allowed}, got {value!r}.')
  return float(value[0]), float(value[1])


def choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
  """`value`, one of `choices`."""
  if isinstance(value, bool) or value not in choices:
    raise ConfigError(f'{name} must be one of {", ".join(map(repr, choices))}, got {value!r}.')
  return value


def flag(value: Any, name: str) -> bool:
  """`value`, True or False."""
  if not isinstance(value, bool):
    raise ConfigError(f'{name} must be True or False, got {value!r}.')
  return value


def text(value: Any, name: str, what: str) -> str:
  """`value`, a non-empty string; `what` says what it names."""
  if not (isinstance(value, str) and value):
    raise ConfigError(f'{name} must be {what}, got {value!r}.')
  return value


def resize_method(value: Any) -> str:
  """`value`, one of tf.image.resize's methods."""
  return choice(value, 'method', RESIZE_METHODS)
