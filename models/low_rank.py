"""Low-rank factorisation: named conv and dense layers replaced by two thinner maps.

A dense layer W [in, out] becomes x ↦ (x U) V with U [in, r], V [r, out] (`kernel_u`,
`kernel_v`). A k×k conv becomes two convs, either

- 'spatial', scheme 2 of Jaderberg, Vedaldi & Zisserman (2014): a kh×1 conv to r channels
  (`kernel_v` [kh, 1, in, r]) then a 1×kw conv to the output channels (`kernel_h`
  [1, kw, r, out]); the stride and padding of the height axis go to the first, those of the
  width axis to the second, so the output shape is the original's. Params r·(kh·in + kw·out).
- 'channel', as Zhang et al. (2015): a kh×kw conv to r channels (`kernel_u` [kh, kw, in, r],
  the original stride and padding) then a 1×1 conv to the output channels (`kernel_v`
  [1, 1, r, out]). Params r·(kh·kw·in + out).

The factors sit at the original layer's path next to its `bias`, so a factorised model
checkpoints and summarises under the base model's layer names; compression/low_rank.py
initialises them from trained weights by truncated SVD. Jaderberg et al. also fit the factors
to the layer's outputs (their data reconstruction); that is not done here. Grouped, depthwise
and dilated convs are refused. A rank equal to the full rank is exact (and saves nothing); a
larger one is refused.
"""

import functools
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding

from common.errors import ConfigError, did_you_mean
from models.intercepted import Intercepted, layer_call

CONV_MODES = ('spatial', 'channel')
_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def full_rank(kernel_shape: tuple[int, ...], conv: str = 'spatial') -> int:
  """The largest rank of a kernel's factorisation: min(in, out) for a dense [in, out] kernel,
  min(kh·in, kw·out) for a spatial and min(kh·kw·in, out) for a channel conv factorisation."""
  if len(kernel_shape) == 2:
    return min(kernel_shape)
  kh, kw, c_in, c_out = kernel_shape
  return min(kh * c_in, kw * c_out) if conv == 'spatial' else min(kh * kw * c_in, c_out)


def check_conv_mode(conv: str) -> None:
  """ConfigError unless `conv` is one of CONV_MODES."""
  if conv not in CONV_MODES:
    raise ConfigError(f'low_rank_conv={conv!r}; choose {" or ".join(map(repr, CONV_MODES))}.')


def _check_rank(path: str, rank: int, kernel_shape: tuple[int, ...], conv: str) -> None:
  full = full_rank(kernel_shape, conv)
  if rank > full:
    raise ConfigError(
        f'low_rank rank {rank} for {path!r} exceeds its full rank {full} (kernel '
        f'{kernel_shape}); choose 1 to {full} (at {full} it is exact and saves nothing).'
    )


def _contraction(module: nn.Module) -> Callable[..., jax.Array]:
  """The op the layer contracts with: its hook (binarize sets one) or lax's."""
  if isinstance(module, nn.Conv):
    hook = module.conv_general_dilated_cls
    return hook() if hook is not None else jax.lax.conv_general_dilated
  hook = module.dot_general_cls
  return hook() if hook is not None else jax.lax.dot_general


def _bias(module: nn.Module, y: jax.Array) -> jax.Array:
  if not module.use_bias:
    return y
  bias = module.param('bias', module.bias_init, (module.features,), module.param_dtype)
  return y + bias.astype(y.dtype)


def _dense(module: nn.Dense, x: jax.Array, rank: int, path: str) -> jax.Array:
  in_features = x.shape[-1]
  _check_rank(path, rank, (in_features, module.features), 'dense')
  init, dtype = module.kernel_init, module.param_dtype
  u = module.param('kernel_u', init, (in_features, rank), dtype)
  v = module.param('kernel_v', init, (rank, module.features), dtype)
  x, u, v = promote_dtype(x, u, v, dtype=module.dtype)
  dot = _contraction(module)
  y = dot(x, u, (((x.ndim - 1,), (0,)), ((), ())), precision=module.precision)
  y = dot(y, v, (((y.ndim - 1,), (0,)), ((), ())), precision=module.precision)
  return _bias(module, y)


def _pair(value: Any) -> tuple[int, int]:
  if value is None:
    return (1, 1)
  return (value, value) if isinstance(value, int) else tuple(value)


def _conv(module: nn.Conv, x: jax.Array, rank: int, path: str, mode: str) -> jax.Array:
  size = module.kernel_size
  kernel_size = (size,) if isinstance(size, int) else tuple(size)  # an int is a 1-D conv
  if len(kernel_size) != 2 or x.ndim != 4:
    raise ConfigError(f'low_rank: {path!r} is not a 2-D conv on NHWC inputs; remove it.')
  if module.feature_group_count != 1:
    raise ConfigError(
        f'low_rank: {path!r} is a grouped or depthwise conv (feature_group_count='
        f'{module.feature_group_count}); factorise only full convs.'
    )
  if _pair(module.kernel_dilation) != (1, 1) or _pair(module.input_dilation) != (1, 1):
    raise ConfigError(f'low_rank: {path!r} is a dilated conv; factorise only undilated convs.')
  if module.mask is not None:
    raise ConfigError(f'low_rank: {path!r} is a masked conv; remove it from low_rank.')
  padding = canonicalize_padding(module.padding, 2)
  if isinstance(padding, str) and padding not in ('SAME', 'VALID', 'SAME_LOWER'):
    raise ConfigError(f'low_rank: {path!r} has padding {padding!r}; only zero padding is done.')
  (kh, kw), (sh, sw) = kernel_size, _pair(module.strides)
  c_in, c_out = x.shape[-1], module.features
  _check_rank(path, rank, (kh, kw, c_in, c_out), mode)
  init, dtype = module.kernel_init, module.param_dtype
  if mode == 'spatial':
    first = module.param('kernel_v', init, (kh, 1, c_in, rank), dtype)
    second = module.param('kernel_h', init, (1, kw, rank, c_out), dtype)
    strides = ((sh, 1), (1, sw))
    if isinstance(padding, str):  # 'SAME' pads each axis for its own kernel size and stride
      pads = (padding, padding)
    else:
      pads = ([padding[0], (0, 0)], [(0, 0), padding[1]])
  else:
    first = module.param('kernel_u', init, (kh, kw, c_in, rank), dtype)
    second = module.param('kernel_v', init, (1, 1, rank, c_out), dtype)
    strides, pads = ((sh, sw), (1, 1)), (padding, 'VALID')
  x, first, second = promote_dtype(x, first, second, dtype=module.dtype)
  conv = functools.partial(
      _contraction(module), dimension_numbers=_DIMENSIONS, precision=module.precision
  )
  y = conv(x, first, strides[0], pads[0])
  y = conv(y, second, strides[1], pads[1])
  return _bias(module, y)


def _factorised_layer(
    next_fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: Any,
    *,
    prefix: tuple[str, ...],
    ranks: Mapping[str, int],
    conv: str,
    seen: dict[str, str],
) -> Any:
  """Computes the named conv and dense layers factorised; records every conv/dense in `seen`
  (path → type), so that names matching no layer can be reported."""
  path = layer_call(context, prefix)
  if path is None:
    return next_fun(*args, **kwargs)
  module = context.module
  seen[path] = type(module).__name__
  if path not in ranks:
    return next_fun(*args, **kwargs)
  x = args[0] if args else kwargs['inputs']
  if isinstance(module, nn.Dense):
    return _dense(module, x, ranks[path], path)
  return _conv(module, x, ranks[path], path, conv)


class Factorized(Intercepted):
  """`base` with the layers in `ranks` factorised (`factorize`); `interceptor` is
  `_factorised_layer`. Names that match no conv or dense layer raise at the call."""

  ranks: tuple[tuple[str, int], ...] = ()
  conv: str = 'spatial'

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    ranks, seen = dict(self.ranks), {}
    interceptor = functools.partial(
        self.interceptor, prefix=self.path, ranks=ranks, conv=self.conv, seen=seen
    )
    with nn.intercept_methods(interceptor):
      out = self.base(*args, **kwargs)
    unknown = [path for path in ranks if path not in seen]
    if unknown:
      raise ConfigError(
          f'low_rank names {", ".join(map(repr, unknown))}, not a conv or dense layer of the '
          f'model.{did_you_mean(unknown[0], seen)} Its layers: {", ".join(seen)}.'
      )
    return out


def factorize(model: nn.Module, ranks: Mapping[str, int], *, conv: str = 'spatial') -> nn.Module:
  """`model` with each layer `ranks` names ('layer1_0/conv1': r) factorised at rank r: dense as
  in→r→out, convs `conv`='spatial' (Jaderberg et al. 2014) or 'channel' (Zhang et al. 2015)."""
  check_conv_mode(conv)
  for path, rank in ranks.items():
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
      raise ConfigError(f'low_rank rank for {path!r} is {rank!r}; give an integer ≥ 1.')
  ranks = tuple(sorted((path, int(rank)) for path, rank in ranks.items()))
  return Factorized(model, _factorised_layer, ranks=ranks, conv=conv)
