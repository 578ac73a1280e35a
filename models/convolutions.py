"""Convolution variants the study notes teach: grouped, depthwise/pointwise, dilated, transposed,
gated, and convolution as im2col + matrix multiply.

NHWC activations and HWIO kernels throughout (flax's layouts); `padding` is PyTorch's (an int pads
every spatial side by that much) or explicit per-axis (low, high) pairs. Initialisers are flax's
defaults (LeCun-normal kernels over the fan-in, zero biases). Building blocks only: no model here
is registered.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import fast_conv
from models.layers import explicit_padding, pair

IntOrPair = int | Sequence[int]
Padding = int | Sequence[tuple[int, int]]


def out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
  """Output length of a conv: floor((size + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> jax.Array:
  """PyTorch's F.conv2d (cross-correlation, no kernel flip) on NHWC / HWIO, via XLA."""
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      pair(strides),
      explicit_padding(padding),
      rhs_dilation=pair(dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups,
  )


def grouped_conv(
    features: int,
    kernel_size: int = 3,
    strides: int = 1,
    padding: Padding | None = None,
    dilation: int = 1,
    groups: int = 1,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
    **kwargs: Any,
) -> nn.Conv:
  """Caffe's `group`: input and output channels split into `groups`; output group i sees only
  input group i, so the kernel is (k, k, C_in/groups, C_out) and costs 1/groups of a full conv.

  A thin nn.Conv (feature_group_count) with PyTorch padding (None: `dilation·(k−1)/2`, "same").
  """
  if padding is None:
    padding = dilation * (kernel_size - 1) // 2
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides,
      padding=explicit_padding(padding),
      kernel_dilation=dilation,
      feature_group_count=groups,
      use_bias=use_bias,
      dtype=dtype,
      conv_general_dilated=fast_conv.conv_general_dilated,
      **kwargs,
  )


def pointwise_conv(
    features: int, groups: int = 1, use_bias: bool = True, dtype: Any = jnp.float32, **kwargs: Any
) -> nn.Conv:
  """1×1 convolution: a Dense layer applied at every pixel, mixing channels only (grouped as
  ShuffleNet's 1×1 group convs when `groups` > 1)."""
  return nn.Conv(
      features,
      (1, 1),
      padding='VALID',
      feature_group_count=groups,
      use_bias=use_bias,
      dtype=dtype,
      **kwargs,
  )


class DepthwiseConv(nn.Module):
  """Depthwise convolution: one k×k filter per input channel (groups = channels), no channel
  mixing; `multiplier` filters per channel give output channel c·multiplier + j from input c."""

  kernel_size: int = 3
  strides: int = 1
  padding: Padding | None = None  # None: dilation·(k−1)/2, "same"
  dilation: int = 1
  multiplier: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    return grouped_conv(
        channels * self.multiplier,
        self.kernel_size,
        self.strides,
        self.padding,
        self.dilation,
        groups=channels,
        use_bias=self.use_bias,
        dtype=self.dtype,
        name='conv',
    )(x)


class SeparableConv(nn.Module):
  """Depthwise-separable convolution (Xception, MobileNet): depthwise k×k then pointwise 1×1.

  Without biases it has k·k·C·m + C·m·C_out weights instead of a full conv's k·k·C·C_out.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Padding | None = None
  dilation: int = 1
  multiplier: int = 1
  use_bias: bool = False
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    x = grouped_conv(
        channels * self.multiplier,
        self.kernel_size,
        self.strides,
        self.padding,
        self.dilation,
        groups=channels,
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        name='depthwise',
    )(x)
    return pointwise_conv(
        self.features,
        use_bias=self.use_bias,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        name='pointwise',
    )(x)


def dilate_kernel(kernel: jax.Array, dilation: int) -> jax.Array:
  """The dense kernel a dilated conv applies: `dilation − 1` zeros between taps, so a k×k kernel
  covers (dilation·(k−1) + 1)² pixels with the same k·k weights."""
  kh, kw, *rest = kernel.shape
  dense = jnp.zeros((dilation * (kh - 1) + 1, dilation * (kw - 1) + 1, *rest), kernel.dtype)
  return dense.at[::dilation, ::dilation].set(kernel)


def conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    strides: IntOrPair = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: IntOrPair = 1,
) -> jax.Array:
  """PyTorch's ConvTranspose2d: every input pixel scatters itself × kernel into the output at
  stride steps; the output is cropped by `padding` and `output_padding` extends the bottom/right.

  `kernel` is (k, k, C_out, C_in): the HWIO kernel of the conv C_out → C_in this transposes
  (PyTorch's (C_in, C_out, k, k) weight permuted (2, 3, 1, 0)). It is that conv's gradient w.r.t.
  its input, computed as a stride-1 conv of the stride-dilated input with the flipped,
  channel-swapped kernel.
  Output size: (H − 1)·stride − 2·padding + dilation·(k − 1) + output_padding + 1.
  """
  strides, dilation = pair(strides), pair(dilation)
  pads, extra = pair(padding), pair(output_padding)
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  edge = [d * (k - 1) - p for d, k, p in zip(dilation, kernel.shape[:2], pads)]
  return jax.lax.conv_general_dilated(
      x,
      flipped,
      (1, 1),
      [(e, e + o) for e, o in zip(edge, extra)],
      lhs_dilation=strides,
      rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )


class ConvTranspose(nn.Module):
  """Transposed ("fractionally strided") convolution with PyTorch's padding / output_padding; it
  upsamples, e.g. 3×3 at stride 2, no padding, takes 2×2 back to the 5×5 its conv reduced.

  The kernel parameter is (k, k, features, C_in), as nn.ConvTranspose(transpose_kernel=True) has it;
  LeCun-normal over this layer's fan-in C_in·k² (PyTorch's default uses features·k² instead).
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int = 0
  output_padding: int = 0
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param(
        'kernel',
        nn.initializers.lecun_normal(in_axis=-1, out_axis=-2),
        (k, k, self.features, x.shape[-1]),
    )
    y = conv_transpose(
        x.astype(self.dtype),
        kernel.astype(self.dtype),
        self.strides,
        self.padding,
        self.output_padding,
        self.dilation,
    )
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class GatedConv(nn.Module):
  """Gated linear unit over convolutions (Dauphin et al. 2017): conv(x) ⊗ sigmoid(gate(x)).

  Two convolutions with separate weights; the ungated path is linear, so gradients pass without
  a squashing derivative. The paper convolves over time with left-only (causal) padding; pass
  padding pairs, e.g. ((k − 1, 0), (0, 0)), for that.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: Padding | None = None
  dilation: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda name: grouped_conv(
        self.features,
        self.kernel_size,
        self.strides,
        self.padding,
        self.dilation,
        use_bias=self.use_bias,
        dtype=self.dtype,
        name=name,
    )
    return conv('conv')(x) * nn.sigmoid(conv('gate')(x))


def im2col(
    x: jax.Array,
    kernel_size: IntOrPair,
    strides: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
) -> jax.Array:
  """Caffe's im2col: every receptive field becomes one row, [N, out_h·out_w, kh·kw·C].

  Row r is the patch under output pixel (r // out_w, r % out_w), flattened in (kh, kw, C) order
  so that it meets an HWIO kernel reshaped to (kh·kw·C, C_out). (Caffe's own rows run in
  (C, kh, kw) order to meet its OIHW weights; the product is the same.)
  """
  (kh, kw), (sh, sw), (dh, dw) = pair(kernel_size), pair(strides), pair(dilation)
  x = jnp.pad(x, [(0, 0), *explicit_padding(padding), (0, 0)])
  n, height, width, channels = x.shape
  oh, ow = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
  taps = [
      x[:, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
      for i in range(kh)
      for j in range(kw)
  ]
  return jnp.stack(taps, axis=3).reshape(n, oh * ow, kh * kw * channels)


def im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: IntOrPair = 1,
    padding: Padding = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> jax.Array:
  """Convolution as Caffe computes it: im2col(x) @ kernel.reshape(kh·kw·C, C_out), one matrix
  product per group (group g's rows take input channels g·C/groups onward)."""
  kh, kw, cin_group, cout = kernel.shape
  (sh, sw), (dh, dw), pads = pair(strides), pair(dilation), explicit_padding(padding)
  patches = im2col(x, (kh, kw), strides, padding, dilation)
  n, positions, _ = patches.shape
  patches = patches.reshape(n, positions, kh * kw, groups, cin_group)
  weights = kernel.reshape(kh * kw, cin_group, groups, cout // groups)
  y = jnp.einsum('npkgc,kcgo->npgo', patches, weights)
  oh = (x.shape[1] + sum(pads[0]) - dh * (kh - 1) - 1) // sh + 1
  ow = (x.shape[2] + sum(pads[1]) - dw * (kw - 1) - 1) // sw + 1
  return y.reshape(n, oh, ow, cout)


class LocallyConnected(nn.Module):
  """A convolution without weight sharing: every output position has its own k×k×C_in×C_out
  kernel and its own bias (DeepFace's locally connected layers, where faces are aligned and
  each region should learn its own features).

  Strides, padding and dilation as `conv2d`. The kernel is (out_h, out_w, k, k, C_in, C_out), one
  HWIO kernel per output position, so the layer holds out_h·out_w·(k·k·C_in·C_out + C_out)
  parameters where a conv holds k·k·C_in·C_out + C_out; the output size follows from the input
  size at init, and the layer takes only that size afterwards. Computed as im2col rows, each
  multiplied by its own position's kernel.
  """

  features: int
  kernel_size: IntOrPair = 3
  strides: IntOrPair = 1
  padding: Padding = 0
  dilation: IntOrPair = 1
  use_bias: bool = True
  # LeCun normal over each position's fan-in k·k·C_in, as a conv's default.
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal(
      in_axis=(2, 3, 4), out_axis=5, batch_axis=(0, 1)
  )
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    (kh, kw), (sh, sw), (dh, dw) = pair(self.kernel_size), pair(self.strides), pair(self.dilation)
    (top, bottom), (left, right) = explicit_padding(self.padding)
    oh = (x.shape[1] + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[2] + left + right - dw * (kw - 1) - 1) // sw + 1
    channels = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (oh, ow, kh, kw, channels, self.features))
    patches = im2col(x.astype(self.dtype), (kh, kw), self.strides, self.padding, self.dilation)
    weights = kernel.astype(self.dtype).reshape(oh * ow, kh * kw * channels, self.features)
    y = jnp.einsum('npk,pko->npo', patches, weights).reshape(x.shape[0], oh, ow, self.features)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (oh, ow, self.features)).astype(self.dtype)
    return y
