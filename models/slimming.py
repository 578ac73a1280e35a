"""Slimming: named conv and dense layers built with fewer output channels, as filter pruning
leaves them (Li et al. 2017, "Pruning Filters for Efficient ConvNets").

`slim(model, {'layer1_0/conv1': 10})` runs the registered model with that layer's `features` set
to 10 before its call, so flax creates (or reads) a [kh, kw, in, 10] kernel and a [10] bias; the
layers after it see the narrower input and size their own kernels, BatchNorm statistics and
group counts from it, as they do for any input. Variable paths stay the base model's; only
shapes shrink. compression/filter_pruning.py chooses the widths and slices trained variables
to them.

A depthwise conv (feature_group_count = its input channels) whose input narrowed keeps being
depthwise: its group count becomes the new input width, and its `features` the new width times
its channel multiplier unless `widths` names it. Only flax's nn.Conv and nn.Dense are slimmed:
other layers with kernels (LeNet-1998's TableConv `c3`, convolutions.ConvTranspose) are refused.
"""

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from common.errors import ConfigError, did_you_mean
from models.intercepted import LAYERS, Intercepted


def _grouped(module: nn.Conv, x: Any, path: str, width: int | None) -> tuple[int, int | None]:
  """(feature_group_count, features) for a conv whose input may have narrowed: a depthwise
  conv (input narrower than its group count) follows its input; a grouped one is refused."""
  groups, channels = module.feature_group_count, x.shape[-1]
  if groups == 1 or channels % groups == 0 and channels >= groups:
    return groups, width
  if channels > groups:
    raise ConfigError(
        f'slim: grouped conv {path!r} ({groups} groups) gets {channels} input channels, not a '
        'multiple of its groups; do not narrow the layer that feeds a grouped conv.'
    )
  multiplier = module.features // groups
  features = channels * multiplier if width is None else width
  if features % channels:
    raise ConfigError(
        f'slim: depthwise conv {path!r} now has {channels} input channels, so its width must '
        f'be a multiple of {channels}; widths gives {features}.'
    )
  return channels, features


def _slimmed_layer(
    next_fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: Any,
    *,
    prefix: tuple[str, ...],
    widths: Mapping[str, int],
    seen: dict[str, str],
) -> Any:
  """Calls conv and dense layers with their slimmed `features` (and a depthwise conv with its
  new group count); records every module's path and type in `seen` for error messages."""
  module = context.module
  if context.method_name != '__call__' or len(module.path) <= len(prefix):
    return next_fun(*args, **kwargs)
  path = '/'.join(module.path[len(prefix) :])
  seen.setdefault(path, type(module).__name__)
  if not isinstance(module, LAYERS):
    if path in widths:
      raise ConfigError(
          f'slim: {path!r} is a {type(module).__name__}; only nn.Conv and nn.Dense layers can '
          'be given a width.'
      )
    return next_fun(*args, **kwargs)
  width = widths.get(path)
  if isinstance(module, nn.Conv) and args:
    groups, width = _grouped(module, args[0], path, width)
    if groups != module.feature_group_count:
      object.__setattr__(module, 'feature_group_count', groups)
  if width is not None:
    object.__setattr__(module, 'features', width)
  return next_fun(*args, **kwargs)


class Slimmed(Intercepted):
  """`base` with the conv and dense layers in `widths` narrowed (`slim`); `interceptor` is
  `_slimmed_layer`. Names that match no layer of the model raise at the call."""

  widths: tuple[tuple[str, int], ...] = ()

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    widths, seen = dict(self.widths), {}

    def interceptor(next_fun, call_args, call_kwargs, context):
      return self.interceptor(
          next_fun, call_args, call_kwargs, context, prefix=self.path, widths=widths, seen=seen
      )

    with nn.intercept_methods(interceptor):
      out = self.base(*args, **kwargs)
    unknown = [path for path in widths if path not in seen and not self._holds(path)]
    if unknown:
      layers = [p for p, kind in seen.items() if kind in ('Conv', 'Dense')]
      raise ConfigError(
          f'widths names {", ".join(map(repr, unknown))}, not a layer of the model.'
          f'{did_you_mean(unknown[0], layers)} Its conv and dense layers include: '
          f'{", ".join(layers[:8])}{" …" if len(layers) > 8 else ""}.'
      )
    return out

  def _holds(self, path: str) -> bool:
    """Whether the variables hold a layer at `path` (one this call did not run, such as an
    auxiliary head in eval mode)."""
    node = self.variables.get('params', {})
    for part in path.split('/'):
      if not hasattr(node, 'get') or part not in node:
        return False
      node = node[part]
    return True


def slim(model: nn.Module, widths: Mapping[str, int]) -> nn.Module:
  """`model` with each conv/dense layer `widths` names ('layer1_0/conv1': 10) given that many
  output channels; `model` itself when `widths` is empty."""
  if not widths:
    return model
  for path, width in widths.items():
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
      raise ConfigError(f'widths[{path!r}] is {width!r}; give an integer ≥ 1.')
  return Slimmed(
      model, _slimmed_layer, widths=tuple(sorted((str(p), int(w)) for p, w in widths.items()))
  )
