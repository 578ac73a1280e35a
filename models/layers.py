"""Building blocks shared by the model families."""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from models import fast_conv
from models.batch_norm import FormulaBatchNorm

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'relu6': nn.relu6,
    'sigmoid': nn.sigmoid,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'silu': nn.silu,
    'identity': lambda x: x,
}
Pair = int | Sequence[int]
Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]
Initializer = Callable[..., jax.Array]
T = TypeVar('T')

# He et al. 2015 normal init over fan_out: torchvision's kaiming_normal_(mode='fan_out') for convs.
he_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default conv/linear weight init (kaiming_uniform, a=sqrt(5)): U(±1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_default_bias(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default bias init, U(±1/sqrt(fan_in)): flax initialisers do not see fan_in."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def choose(what: str, key: str, table: Mapping[str, T]) -> T:
  """`table[key]`, or a ConfigError naming the choices: `choose('block', 'basic', BLOCKS)`."""
  if key not in table:
    raise ConfigError(f'Unknown {what} {key!r}; choose one of {", ".join(map(repr, table))}.')
  return table[key]


def pair(value: Pair) -> tuple[int, int]:
  """An int as (value, value); a (height, width) pair as a tuple."""
  return (value, value) if isinstance(value, int) else tuple(value)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation function by name."""
  return choose('activation', name, ACTIVATIONS)


def check_input_size(x: jax.Array, minimum: int, name: str) -> None:
  """Refuses inputs too small to leave a 1×1 map at the last pooling (they would give 0×0)."""
  if min(x.shape[1:3]) < minimum:
    raise ConfigError(
        f'{name} needs inputs of at least {minimum}×{minimum} pixels; got '
        f'{x.shape[1]}×{x.shape[2]}.'
    )


def explicit_padding(
    padding: int | Sequence[int] | Sequence[tuple[int, int]],
) -> list[tuple[int, int]]:
  """((top, bottom), (left, right)) from an int (every side), an (h, w) pair (both sides of each
  axis) or the pairs themselves."""
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


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
    raise ConfigError(f'Unknown pooling {kind!r}; choose "max" or "avg".')
  with jax.named_scope(f'{kind}_pool'):  # one row in analysis.summary
    shape, strides = (window, window), (stride, stride)
    if isinstance(padding, str):
      if ceil_mode:
        raise ConfigError('ceil_mode needs numeric padding.')
      fn = fast_conv.max_pool if kind == 'max' else nn.avg_pool
      return fn(x, shape, strides, padding)
    explicit = explicit_padding(padding)
    extra = _ceil_extension(x, window, stride, explicit) if ceil_mode else [(0, 0)] * 2
    total = [(lo, hi + e) for (lo, hi), (_, e) in zip(explicit, extra)]
    if kind == 'max':
      return fast_conv.max_pool(x, shape, strides, total)
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


class ConvNormAct(nn.Module):
  """Convolution → BatchNorm → activation: the unit every family builds on (timm's ConvNormAct).

  Each part can be switched off: `norm=False` (GoogLeNet's Caffe model, VGG without BN, the
  bare convs of pre-activation blocks), `act=None` (the linear projection ending a residual
  branch). Options cover the references the zoo
  follows:

  - `kernel_size`, `strides`, `dilation`: an int or a (height, width) pair (Inception's 1×7).
  - `padding`: None pads k // 2 on each side of each axis, PyTorch's `padding=k // 2` idiom
    ('same' at stride 1 for odd kernels); an int or (h, w) pair pads that much on both sides;
    explicit ((top, bottom), (left, right)); 'SAME' is TensorFlow/Keras's rule (the extra pixel
    at the bottom/right); 'VALID' pads nothing.
  - `groups`: Caffe's `group` (flax's `feature_group_count`); `groups == channels` is depthwise.
  - `use_bias` for the conv (`bias_init` None is PyTorch's default, U(±1/sqrt(fan_in))).
  - BatchNorm's `bn_epsilon`, `bn_momentum` (flax's: the running average keeps `momentum` of
    itself; PyTorch's momentum 0.1 is 0.9 here, Keras's 0.99 is 0.99), `bn_scale` (False: no γ,
    as Keras and TF-slim), `bn_scale_init` (zeros for the last BN of a residual branch) and
    `bn_bias_init`.

  Variables live in children named `conv_name` and `norm_name` ('conv', 'bn'). `inline` (or
  `conv_norm_act`) creates them in the calling module instead, for families whose names are
  flat (ResNet's conv1, bn1).
  """

  features: int
  kernel_size: Pair = 3
  strides: Pair = 1
  padding: Padding | None = None
  dilation: Pair = 1
  groups: int = 1
  use_bias: bool = False
  kernel_init: Initializer = he_fan_out
  bias_init: Initializer | None = None
  norm: bool = True
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9
  bn_scale: bool = True
  bn_scale_init: Initializer = nn.initializers.ones
  bn_bias_init: Initializer = nn.initializers.zeros
  act: str | None = 'relu'
  dtype: Any = jnp.float32
  conv_name: str = 'conv'
  norm_name: str = 'bn'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.inline(x, train)

  @nn.nowrap
  def inline(self, x: jax.Array, train: bool = False) -> jax.Array:
    """The unit applied in the scope of whichever module is running: the conv and the norm
    become that module's children (the unit itself must be unbound: `parent=None`)."""
    kernel = pair(self.kernel_size)
    bias_init = self.bias_init
    if self.use_bias and bias_init is None:
      bias_init = torch_default_bias(kernel[0] * kernel[1] * x.shape[-1] // self.groups)
    x = nn.Conv(
        self.features,
        kernel,
        pair(self.strides),
        padding=_conv_padding(self.padding, kernel),
        kernel_dilation=pair(self.dilation),
        feature_group_count=self.groups,
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        bias_init=bias_init or nn.initializers.zeros,
        dtype=self.dtype,
        name=self.conv_name,
        conv_general_dilated=fast_conv.conv_general_dilated,
    )(x)
    if self.norm:
      x = batch_norm(
          train,
          self.dtype,
          self.bn_epsilon,
          self.bn_momentum,
          use_scale=self.bn_scale,
          scale_init=self.bn_scale_init,
          bias_init=self.bn_bias_init,
          name=self.norm_name,
      )(x)
    return x if self.act is None else activation(self.act)(x)


def conv_norm_act(
    x: jax.Array, train: bool = False, *, conv_name: str, norm_name: str = '', **fields: Any
) -> jax.Array:
  """`ConvNormAct(**fields)` with its conv and norm created in the calling module, named
  `conv_name` and `norm_name` (e.g. ResNet's conv1 and bn1). Call it inside a compact method."""
  unit = ConvNormAct(
      conv_name=conv_name, norm_name=norm_name or f'{conv_name}_bn', parent=None, **fields
  )
  return unit.inline(x, train)


def _conv_padding(padding: Padding | None, kernel: tuple[int, int]) -> Any:
  """ConvNormAct's padding as flax's nn.Conv takes it: k // 2 per axis by default."""
  if padding is None:
    return [(k // 2, k // 2) for k in kernel]
  return padding if isinstance(padding, str) else explicit_padding(padding)


def batch_norm(
    train: bool,
    dtype: Any = jnp.float32,
    epsilon: float = 1e-5,
    momentum: float = 0.9,
    from_formulas: bool = False,
    **kwargs: Any,
) -> nn.Module:
  """BatchNorm, by default with PyTorch's constants (its momentum 0.1 is flax's 0.9; eps 1e-5).

  `from_formulas` builds `batch_norm.FormulaBatchNorm`, the same function and variables written
  out by hand, which also takes `unbiased_variance=True`.
  """
  module = FormulaBatchNorm if from_formulas else nn.BatchNorm
  return module(
      use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype, **kwargs
  )


DROPOUT_SCALINGS = {
    'train': 'inverted: divide kept units by p while training, identity at test',
    'test': 'original: keep units unscaled while training, multiply by p at test',
}


def dropout(x: jax.Array, rate: float, train: bool, scaling: str = 'train') -> jax.Array:
  """Dropout of `rate` with either of its inference rules (keep probability p = 1 − rate).

  `scaling='train'` is inverted dropout (flax's, PyTorch's): the units kept in training are
  divided by p and evaluation is the identity. `scaling='test'` is the rule of Hinton et al.
  2012 and Srivastava et al. 2014 (AlexNet's "multiply their outputs by 0.5"): training keeps
  units unscaled and evaluation multiplies every output by p. Either way a unit's expected
  training output equals its test output. Call it inside a compact method (it creates the
  same `nn.Dropout` whatever the rule, so masks do not depend on it).
  """
  choose('dropout scaling', scaling, DROPOUT_SCALINGS)
  y = nn.Dropout(rate, deterministic=not train)(x)
  if scaling == 'train' or rate == 0.0:
    return y
  return y * jnp.asarray(1.0 - rate, y.dtype) if train else x * jnp.asarray(1.0 - rate, x.dtype)


SHORTCUTS = {'A': 'zero padding', 'B': 'projection'}


def zero_pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Option A shortcut: subsample by `strides`, append zero channels up to `features`.

  No parameters. akamaster/pytorch_resnet_cifar10 puts the zeros half before and half after
  the input channels; appending them gives an equivalent network (a fixed relabelling of the
  channels).
  """
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


def residual_shortcut(
    x: jax.Array, features: int, strides: int, kind: str, project: Callable[[], jax.Array]
) -> jax.Array:
  """What a residual block adds to its branch: `x` itself where the block keeps the shape;
  otherwise option 'A' (zero padding, no parameters) or 'B' (`project()`, the family's strided
  1×1 convolution, with BN or without, of the input or of its pre-activation)."""
  choose('shortcut', kind, SHORTCUTS)
  if strides == 1 and x.shape[-1] == features:
    return x
  if kind == 'A':
    return zero_pad_shortcut(x, features, strides)
  return project()


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet's channel shuffle: view channels as (groups, c/groups), transpose, flatten.

  Channel g·(c/groups) + i moves to i·groups + g, so (when c/groups ≥ groups) each group of
  the next grouped conv sees channels from every group of the previous one.
  """
  *lead, channels = x.shape
  if channels % groups:
    raise ConfigError(f'channel_shuffle: {channels} channels do not split into {groups} groups.')
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
