"""Building blocks shared by the model families."""

import functools
from collections.abc import Callable, Sequence
from typing import Any, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'relu6': nn.relu6,
    'sigmoid': nn.sigmoid,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'silu': nn.silu,
    'identity': lambda x: x,
}

Padding = Union[str, int, Sequence[tuple[int, int]]]

# He et al. 2015 normal init over fan_out: torchvision's kaiming_normal_(mode='fan_out') for convs.
he_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default conv/linear weight init (kaiming_uniform, a=sqrt(5)): U(±1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_default_bias(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default bias init, U(±1/sqrt(fan_in)): flax initialisers do not see fan_in."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation function by name."""
  if name not in ACTIVATIONS:
    raise ValueError(f'Unknown activation {name!r}; choose one of {", ".join(ACTIVATIONS)}.')
  return ACTIVATIONS[name]


def check_input_size(x: jax.Array, minimum: int, name: str) -> None:
  """Refuses inputs too small to leave a 1×1 map at the last pooling (they would give 0×0)."""
  if min(x.shape[1:3]) < minimum:
    raise ValueError(
        f'{name} needs inputs of at least {minimum}×{minimum} pixels; got '
        f'{x.shape[1]}×{x.shape[2]}.'
    )


def _explicit_padding(padding: int | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
  return [(padding, padding)] * 2 if isinstance(padding, int) else [tuple(p) for p in padding]


def _ceil_extension(
    x: jax.Array, window: int, stride: int, pads: list[tuple[int, int]]
) -> list[tuple[int, int]]:
  """Extra right padding for ceil-mode output sizes; as PyTorch, no window starts in the padding."""
  extra = []
  for (lo, hi), size in zip(pads, x.shape[1:3]):
    n = -(-(size + lo + hi - window) // stride) + 1
    if (n - 1) * stride >= size + lo:
      n -= 1
    extra.append((0, max(0, (n - 1) * stride + window - size - lo - hi)))
  return extra


def pool(
    x: jax.Array,
    kind: str,
    window: int,
    stride: int,
    padding: Padding = 'VALID',
    ceil_mode: bool = False,
) -> jax.Array:
  """Max or average pooling over the spatial axes of an NHWC tensor, as PyTorch and Caffe do it.

  `padding` is 'VALID'/'SAME', an int (both sides) or per-axis pairs. Max pooling pads with
  -inf; average pooling counts explicit padding as zeros (count_include_pad) but a window that
  `ceil_mode` lets hang past the padding divides only by what it covers.
  """
  if kind not in ('max', 'avg'):
    raise ValueError(f'Unknown pooling {kind!r}; choose "max" or "avg".')
  with jax.named_scope(f'{kind}_pool'):  # one row in analysis.summary
    shape, strides = (window, window), (stride, stride)
    if isinstance(padding, str):
      if ceil_mode:
        raise ValueError('ceil_mode needs numeric padding.')
      fn = nn.max_pool if kind == 'max' else nn.avg_pool
      return fn(x, shape, strides, padding)
    explicit = _explicit_padding(padding)
    extra = _ceil_extension(x, window, stride, explicit) if ceil_mode else [(0, 0)] * 2
    total = [(lo, hi + e) for (lo, hi), (_, e) in zip(explicit, extra)]
    if kind == 'max':
      return nn.max_pool(x, shape, strides, total)
    dims, steps = (1, window, window, 1), (1, stride, stride, 1)
    summed = jax.lax.reduce_window(
        x, np.zeros((), x.dtype), jax.lax.add, dims, steps, [(0, 0), *total, (0, 0)]
    )
    covered = jnp.pad(
        jnp.ones((1, *x.shape[1:3], 1), x.dtype), [(0, 0), *explicit, (0, 0)], constant_values=1
    )
    count = jax.lax.reduce_window(
        covered, np.zeros((), x.dtype), jax.lax.add, dims, steps, [(0, 0), *extra, (0, 0)]
    )
    return summed / count


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's AdaptiveAvgPool2d: output cell i averages rows floor(i·H/s) .. ceil((i+1)·H/s).

  Written as two averaging matrices, so any input size works (a smaller map repeats cells).
  """
  height, width = x.shape[1:3]
  if (height, width) == (size, size):
    return x
  with jax.named_scope('adaptive_avg_pool'):

    def weights(n: int) -> np.ndarray:
      w = np.zeros((size, n), np.float32)
      for i in range(size):
        start, end = (i * n) // size, -(-((i + 1) * n) // size)
        w[i, start:end] = 1.0 / (end - start)
      return w

    return jnp.einsum(
        'nhwc,ih,jw->nijc', x, weights(height).astype(x.dtype), weights(width).astype(x.dtype)
    )


def local_response_norm(
    x: jax.Array,
    size: int = 5,
    k: float = 2.0,
    alpha: float = 1e-4,
    beta: float = 0.75,
    alpha_over_size: bool = False,
) -> jax.Array:
  """Local response normalisation across channels (Krizhevsky et al. 2012, §3.3).

  b_c = a_c / (k + alpha * sum_{c' within size/2 of c} a_c'^2)^beta. The AlexNet paper's
  alpha multiplies the raw sum (k=2, n=5, alpha=1e-4, beta=0.75); Caffe and PyTorch divide
  alpha by `size` (`alpha_over_size=True`), as GoogLeNet's Caffe model does with k=1.
  """
  with jax.named_scope('lrn'):
    squared = jnp.square(x.astype(jnp.float32))
    half = size // 2
    window_sum = jax.lax.reduce_window(
        squared,
        0.0,
        jax.lax.add,
        (1, 1, 1, size),
        (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)),
    )
    scale = alpha / size if alpha_over_size else alpha
    return (x / jnp.power(k + scale * window_sum, beta).astype(x.dtype)).astype(x.dtype)


class ConvBN(nn.Module):
  """Conv (no bias) → BatchNorm → activation: the unit of most post-2015 CNNs.

  `padding` follows PyTorch (an int pads both sides), so output sizes match torchvision;
  `groups` is Caffe's `group` (flax's `feature_group_count`). `scale_init=zeros` gives the
  zero-initialised last BN of a residual branch; `kernel_init` defaults to torchvision's
  He normal over fan_out.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Padding = None  # None: kernel_size // 2
  groups: int = 1
  act: str = 'relu'
  scale_init: Callable[..., jax.Array] = nn.initializers.ones
  kernel_init: Callable[..., jax.Array] = he_fan_out
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    padding = self.kernel_size // 2 if self.padding is None else self.padding
    x = nn.Conv(
        self.features,
        (self.kernel_size, self.kernel_size),
        self.strides,
        padding=padding,
        feature_group_count=self.groups,
        use_bias=False,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        name='conv',
    )(x)
    x = batch_norm(train, self.dtype, scale_init=self.scale_init, name='bn')(x)
    return activation(self.act)(x)


def batch_norm(
    train: bool, dtype: Any = jnp.float32, epsilon: float = 1e-5, **kwargs: Any
) -> nn.BatchNorm:
  """BatchNorm with PyTorch's constants (momentum 0.1 there = 0.9 here, eps 1e-5 by default)."""
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=epsilon, dtype=dtype, **kwargs
  )


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet's channel shuffle: view channels as (groups, c/groups), transpose, flatten.

  Channel g·(c/groups) + i moves to i·groups + g, so (when c/groups ≥ groups) each group of
  the next grouped conv sees channels from every group of the previous one.
  """
  *lead, channels = x.shape
  if channels % groups:
    raise ValueError(f'channel_shuffle: {channels} channels do not split into {groups} groups.')
  with jax.named_scope('channel_shuffle'):
    x = x.reshape(*lead, groups, channels // groups)
    return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): scale each channel by a gate computed from the
  global average of all channels, through a bottleneck of channels / `reduction`.

  fc1 → ReLU → fc2 → sigmoid, both with biases, as the paper and timm's `SEModule` (whose
  1×1 convs timm's ResNets initialise with He normal over fan_out, the default here).
  """

  reduction: int = 16
  kernel_init: Callable[..., jax.Array] = he_fan_out
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    dense = functools.partial(nn.Dense, kernel_init=self.kernel_init, dtype=self.dtype)
    s = nn.relu(dense(max(1, channels // self.reduction), name='fc1')(s))
    s = nn.sigmoid(dense(channels, name='fc2')(s))
    return x * s
