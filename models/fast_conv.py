"""`lax.conv_general_dilated` and max pooling, rewritten for XLA's CPU backend.

XLA on CPU runs a depthwise convolution (`feature_group_count` = input channels, one filter per
channel) and, worse, its gradients through a generic grouped path: 3–15× slower than the same
layer written as k·k multiply-adds of shifted windows of the input (benchmarks/conv_grad.py).
`conv_general_dilated` computes depthwise convs that way when the backend is the CPU; its
gradients are jax's own of that sum (pads, slices and reductions), so no custom rule is needed.
Every conv on GPU/TPU is lax's.

Ordinary convs keep lax's forward pass and input gradient; their weight gradient is lax's summed
over slices of 16 images (`fast_grad_conv`), faster per layer than XLA's one
convolution over the whole batch (its docstring has the figures); a 1×1 conv's is one matrix
product. For k×k kernels, im2col + matmul, shifted-window matmuls and other dimension numbers
were all slower than lax's (the measured table is in benchmarks/conv_grad.py).

Narrow convs are the third case. XLA's CPU backend hands a conv to YNNPACK only when one of its
channel counts exceeds 16; a network's first layer (1 or 3 input channels into 6 or 16) falls to
Eigen at 1–6 GMAC/s. `few_channel_conv` computes such a conv's forward pass as one matrix
product of patches shared by adjacent output pixels and a banded matrix of the taps; its
gradients are the ordinary convs' (`custom_vjp`). A small narrow conv further in (LeNet-5's
conv2, 6 → 16 channels) keeps lax's forward pass, and its input gradient becomes one matrix
product and col2im (`_col2im_input_grad`), 2.5× Eigen's.

Max pooling is the same story: lax's `reduce_window` max differentiates through XLA's
select-and-scatter, which the CPU runs as a variadic reduce-window over iotas plus a scatter.
`max_pool` takes the running maximum of the k·k strided windows instead, with a select whose
gradient goes to the first maximum of each window, as select-and-scatter's does: values and
gradients are lax's bit for bit, ties included, at 1.2–5× the speed (`max_pool`'s docstring).

`CNN_LINEAGE_FAST_CONV=0` in the environment turns the rewrites off (read at trace time), and
so does tracing inside `plain()`: the summary counts MACs and receptive fields on lax's ops.
"""

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

FAST_CONV_ENV = 'CNN_LINEAGE_FAST_CONV'
_NHWC = lax.ConvDimensionNumbers(
    lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


# XLA's CPU backend sends a conv to YNNPACK only when max(in, out channels) > 16; narrower convs
# run through Eigen, at 1–6 GMAC/s where YNNPACK's run at 20–35 (xla/backends/cpu/ynn_support.cc).
YNNPACK_MIN_WIDTH = 16
WEIGHT_GRAD_BATCH = 16
# Output pixels of a row that `few_channel_conv` computes from one patch (its docstring).
FEW_CHANNEL_BLOCK = 4
# A narrow conv's input gradient goes through col2im when its im2col columns per image
# (H·W·kh·kw·C floats) number at most this; at more, XLA's col2im sums ran slower than Eigen.
COL2IM_MAX_COLUMNS = 32_768

_PLAIN = contextvars.ContextVar('plain_convs', default=False)


@contextlib.contextmanager
def plain() -> Iterator[None]:
  """Models traced inside use lax's convs everywhere: the network as written, not as run fast."""
  token = _PLAIN.set(True)
  try:
    yield
  finally:
    _PLAIN.reset(token)


def enabled() -> bool:
  """Whether the rewrite applies: CPU backend, not switched off by `CNN_LINEAGE_FAST_CONV=0`
  or `plain()`."""
  if _PLAIN.get():
    return False
  if os.environ.get(FAST_CONV_ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return False
  return jax.default_backend() == 'cpu'


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
  """Drop-in for `lax.conv_general_dilated` (nn.Conv's `conv_general_dilated` field)."""
  args = (lhs, rhs, window_strides, padding)
  kwargs = dict(
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
  )
  if not enabled() or not _is_plain_nhwc(*args, **kwargs):
    return lax.conv_general_dilated(*args, **kwargs)
  channels, out_channels = lhs.shape[-1], rhs.shape[-1]
  depthwise = feature_group_count == channels > 1 and rhs.shape[2] == 1
  few_channels = feature_group_count == 1 and channels <= 3 and out_channels <= YNNPACK_MIN_WIDTH
  sliced = feature_group_count == 1 and _weight_grad_slice(lhs) < lhs.shape[0]
  narrow = feature_group_count == 1 and _col2im_pays(lhs, rhs, window_strides, rhs_dilation)
  if not (depthwise or few_channels or sliced or narrow):
    return lax.conv_general_dilated(*args, **kwargs)
  strides, dilation = tuple(window_strides), tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    effective = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation, strict=True)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], effective, strides, padding)
  padding = tuple(tuple(p) for p in padding)
  if depthwise:
    return depthwise_conv(lhs, rhs, strides, padding, dilation)
  if few_channels:
    return few_channel_conv(lhs, rhs, strides, padding, dilation)
  return fast_grad_conv(lhs, rhs, strides, padding, dilation)


def _is_plain_nhwc(
    lhs,
    rhs,
    window_strides,
    padding,
    *,
    lhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    preferred_element_type,
    precision,
    **_,
) -> bool:
  """A 2-D NHWC/HWIO conv of the kind the rewrites cover exactly: no input dilation, no batch
  groups, no negative padding, lax's default precision and output type."""
  if lhs.ndim != 4 or batch_group_count != 1 or preferred_element_type is not None:
    return False
  if precision is not None or any(d != 1 for d in lhs_dilation or (1, 1)):
    return False
  if lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC:
    return False
  if lhs.shape[-1] % feature_group_count or rhs.shape[3] % feature_group_count:
    return False
  return isinstance(padding, str) or all(lo >= 0 and hi >= 0 for lo, hi in padding)


def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, int] = (1, 1),
) -> jax.Array:
  """Depthwise conv (x: N, H, W, C; kernel: kh, kw, 1, C·m) as kh·kw multiply-adds of strided
  windows of the padded input; output channel c·m + j reads input channel c (lax's order).
  Lower-precision inputs are summed in float32, as XLA's conv accumulates."""
  kh, kw, _, out_channels = kernel.shape
  multiplier = out_channels // x.shape[-1]
  if multiplier > 1:
    x = jnp.repeat(x, multiplier, axis=-1)
  dtype = jnp.result_type(x.dtype, kernel.dtype)
  compute = jnp.promote_types(dtype, jnp.float32)
  x = jnp.pad(x.astype(compute), ((0, 0), *padding, (0, 0)))
  taps = kernel.astype(compute).reshape(kh * kw, out_channels)  # row-major, as _windows yields
  y = None
  for window, tap in zip(_windows(x, (kh, kw), strides, dilation), taps, strict=True):
    term = window * tap
    y = term if y is None else y + term
  return y.astype(dtype)


def _windows(
    x: jax.Array,
    window: tuple[int, int],
    strides: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> Iterator[jax.Array]:
  """The kh·kw strided windows of a padded `x` (spatial axes 1 and 2), one per tap (i, j) in
  row-major order: window (i, j) holds what every output position reads at tap (i, j)."""
  (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
  out_h = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
  out_w = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
  rest = x.shape[3:]
  for i in range(kh):
    for j in range(kw):
      start = (0, i * dh, j * dw, *(0,) * len(rest))
      limit = (x.shape[0], i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, *rest)
      yield lax.slice(x, start, limit, (1, sh, sw, *(1,) * len(rest)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def few_channel_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, int] = (1, 1),
) -> jax.Array:
  """A conv of ≤ 3 input channels and ≤ 16 output channels (x: N, H, W, C; kernel: kh, kw, C, O),
  which XLA's CPU backend runs through Eigen at 1–6 GMAC/s, as one matrix product over patches
  in channel-major order. Each column of the product is `FEW_CHANNEL_BLOCK` (B) adjacent output
  pixels of a row: the kh × S patch of the (C, N, H, W) planes they read (S = (B−1)·sw +
  (kw−1)·dw + 1 columns), times a banded matrix that places each tap at its pixel's offset,
  (B·O) × (kh·S·C). The patches are a B·kw/S-th of im2col's windows, for S/kw times its
  multiply-adds (LeNet-5's conv1: 2.5× smaller, 1.6× the multiply-adds). Forward pass, one core,
  best of 30 calls, im2col → patches: LeNet-5's conv1 (128×28×28×1 → 6, 5×5) 2.1–2.3 → 1.2 ms
  (lax's: 7.2), a 7×7/2 stem (32×224×224×3 → 16) 188–204 → 144–146, ResNet-20's stem
  (128×32×32×3 → 16, 3×3) 4.3–4.9 → 4.7–4.9. Its gradients are `fast_grad_conv`'s (`custom_vjp`;
  in a train step the input is data, and its gradient is never computed). Lower-precision
  operands are multiplied as they are and summed in float32, as XLA's conv does."""
  (kh, kw, _, out_channels), block = kernel.shape, FEW_CHANNEL_BLOCK
  (sh, sw), (dh, dw) = strides, dilation
  dtype = jnp.result_type(x.dtype, kernel.dtype)
  (top, bottom), (left, right) = padding
  out_w = (x.shape[2] + left + right - (kw - 1) * dw - 1) // sw + 1
  blocks, span = -(-out_w // block), (block - 1) * sw + (kw - 1) * dw + 1
  right = max(right, (blocks - 1) * block * sw + span - x.shape[2] - left)  # whole blocks
  planes = jnp.pad(
      jnp.moveaxis(x.astype(dtype), -1, 0), ((0, 0), (0, 0), (top, bottom), (left, right))
  )
  patches = _stacked_windows(planes, (kh, span), (sh, block * sw), (dh, 1))
  # placement[b, j, s]: pixel b of a block reads tap column j at patch column s.
  placement = np.zeros((block, kw, span), np.float32)
  for b in range(block):
    placement[b, range(kw), [b * sw + j * dw for j in range(kw)]] = 1
  # One matrix product (B·O, kh·S·C) @ (kh·S·C, N·H'·B'): as a dot, XLA materialises the result
  # once; written as sums of products it fused them into every consumer and recomputed them.
  banded = jnp.einsum('bjs,ijco->boisc', placement.astype(dtype), kernel.astype(dtype))
  sum_type = jnp.promote_types(dtype, jnp.float32)
  patches = patches.reshape(-1, *patches.shape[3:])  # (kh·S·C, N, H', B')
  y = jnp.tensordot(
      banded.reshape(block * out_channels, -1), patches, 1, preferred_element_type=sum_type
  )
  y = y.reshape(block, out_channels, *y.shape[1:])  # (B, O, N, H', B')
  y = jnp.transpose(y, (2, 3, 4, 0, 1)).reshape(*y.shape[2:4], blocks * block, out_channels)
  return y[:, :, :out_w].astype(dtype)


def _stacked_windows(
    planes: jax.Array,
    window: tuple[int, int],
    strides: tuple[int, int],
    dilation: tuple[int, int],
) -> jax.Array:
  """The kh·kw strided windows of padded `planes` (spatial axes last), stacked in front:
  (kh, kw, *planes.shape[:-2], H', W'). Built as two stacks, the kw column offsets and then the
  kh row offsets of those, which XLA fuses into one copy; one stack of the kh·kw slices was kh·kw
  copies and then a concatenation (LeNet-5's conv1 in the train step: 2.4 → 0.9 ms)."""
  (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
  out_h = (planes.shape[-2] - (kh - 1) * dh - 1) // sh + 1
  out_w = (planes.shape[-1] - (kw - 1) * dw - 1) // sw + 1
  columns = jnp.stack(
      [
          lax.slice_in_dim(planes, j * dw, j * dw + (out_w - 1) * sw + 1, sw, axis=-1)
          for j in range(kw)
      ]
  )
  return jnp.stack(
      [
          lax.slice_in_dim(columns, i * dh, i * dh + (out_h - 1) * sh + 1, sh, axis=-2)
          for i in range(kh)
      ]
  )


def _few_channel_forward(x, kernel, strides, padding, dilation):
  return few_channel_conv(x, kernel, strides, padding, dilation), (x, kernel)


def _nhwc_conv(x, kernel, strides, padding, dilation):
  return lax.conv_general_dilated(
      x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=_NHWC
  )


def _weight_grad_slice(x: jax.Array) -> int:
  """Images per slice of the weight gradient: `WEIGHT_GRAD_BATCH` in float32; all of them in a
  lower precision, where each slice's sum would be rounded before they are added."""
  return WEIGHT_GRAD_BATCH if x.dtype == jnp.float32 else x.shape[0]


def _col2im_pays(x, kernel, strides, dilation) -> bool:
  """Whether a conv's input gradient is faster as `_col2im_input_grad` than as XLA's: a float32
  conv that XLA's CPU backend runs through Eigen (≤ 16 channels each way), with a kernel
  larger than 1×1, stride 1, undilated, and at most `COL2IM_MAX_COLUMNS` im2col columns per
  image."""
  kh, kw, channels, out_channels = kernel.shape
  return (
      x.dtype == jnp.float32
      and kh * kw > 1
      and max(channels, out_channels) <= YNNPACK_MIN_WIDTH
      and all(s == 1 for s in strides)
      and all(d == 1 for d in dilation or (1, 1))
      and x.shape[1] * x.shape[2] * kh * kw * channels <= COL2IM_MAX_COLUMNS
  )


def _col2im_input_grad(x_shape, kernel, padding, grad):
  """A stride-1 conv's input gradient as one matrix product and col2im: the output gradient
  times the kernel gives every tap's contribution (N, H', W', kh, kw, C); the kh·kw of them,
  each padded to its offset, summed, and cropped by the forward padding, are the gradient.

  The sum ends in a matrix product with the identity (exact for finite values). XLA fuses
  elementwise producers into each consumer: a max pool's gradient reads every element four
  times and would compute the kh·kw-term sum four times over, while a dot is never fused into
  its consumer. LeNet-5's conv2 (6 → 16 channels, 5×5, batch 128): 5.6 ms as XLA's Eigen conv,
  2.2 ms this way; its train step 16.6 → 12.6 ms (one core, best of 3 processes of 15 steps).
  """
  kh, kw, channels, _ = kernel.shape
  taps = jnp.einsum('nhwo,ijco->nhwijc', grad, kernel)
  full = sum(
      jnp.pad(taps[:, :, :, i, j], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
      for i in range(kh)
      for j in range(kw)
  )
  full = jnp.tensordot(full, jnp.eye(channels, dtype=full.dtype), 1)
  (top, _), (left, _) = padding
  return full[:, top : top + x_shape[1], left : left + x_shape[2]]


def _fast_backward(strides, padding, dilation, residuals, grad):
  """The input gradient by col2im where `_col2im_pays`, else lax's; lax's weight gradient,
  summed over slices of the batch (a matrix product for a 1×1 conv)."""
  x, kernel = residuals
  conv = functools.partial(_nhwc_conv, strides=strides, padding=padding, dilation=dilation)
  if _col2im_pays(x, kernel, strides, dilation):
    dx = _col2im_input_grad(x.shape, kernel, padding, grad)
  else:
    # A conv is linear in each operand: its transposes are lax's gradients, with no forward pass.
    (dx,) = jax.linear_transpose(lambda x: conv(x, kernel), x)(grad)
  if kernel.shape[:2] == (1, 1) and not any(sum(pair) for pair in padding):
    return dx, _pointwise_weight_grad(x, grad, strides).astype(kernel.dtype)
  size = _weight_grad_slice(x)
  dw = None
  for start in range(0, x.shape[0], size):
    x_part, grad_part = x[start : start + size], grad[start : start + size]
    (term,) = jax.linear_transpose(lambda k, x_part=x_part: conv(x_part, k), kernel)(grad_part)
    dw = term if dw is None else dw + term
  return dx, dw


def _pointwise_weight_grad(x, grad, strides):
  """A 1×1 conv's weight gradient as the (N·H'·W', C)ᵀ @ (N·H'·W', O) matrix product, which
  XLA's CPU backend runs 3–4× faster than its convolution (benchmarks/conv_grad.py)."""
  x = x[:, :: strides[0], :: strides[1]][:, : grad.shape[1], : grad.shape[2]]
  sum_type = jnp.promote_types(x.dtype, jnp.float32)
  dw = jnp.tensordot(x, grad, ((0, 1, 2), (0, 1, 2)), preferred_element_type=sum_type)
  return dw[None, None]


few_channel_conv.defvjp(_few_channel_forward, _fast_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def fast_grad_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: tuple[int, int],
    padding: tuple[tuple[int, int], ...],
    dilation: tuple[int, int] = (1, 1),
) -> jax.Array:
  """lax's conv with faster gradients: the weight gradient summed over slices of
  `WEIGHT_GRAD_BATCH` images (for a 1×1 kernel, one matrix product), and a narrow conv's input
  gradient as a matrix product and col2im (`_col2im_input_grad`).

  XLA's CPU backend computes a conv's weight gradient as one convolution with the batch as its
  contracted feature dimension and the output gradient as a kernel the size of the image
  (ResNet-20's 16→16 layers: a 32×32 kernel over 128 features, at 5–12 GMAC/s in YNNPACK).
  Over slices of 16 images the same sum runs faster: a layer's forward pass and both gradients
  1.08–1.21× (`python -m benchmarks.conv_grad --only=regular`, one core, batch 128: 16→16 at
  32×32 37.9 → 35.0 ms, 64→64 at 8×8 23.9 → 20.6), ResNet-20's train step 1.27×. The forward
  pass is lax's, and so is every other input gradient."""
  return _nhwc_conv(x, kernel, strides, padding, dilation)


def _fast_grad_forward(x, kernel, strides, padding, dilation):
  return _nhwc_conv(x, kernel, strides, padding, dilation), (x, kernel)


fast_grad_conv.defvjp(_fast_grad_forward, _fast_backward)


def max_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = 'VALID',
) -> jax.Array:
  """Drop-in for `flax.linen.max_pool` on NHWC inputs, rewritten on the CPU (see the module).

  Measured, forward + gradient, one core (`python -m benchmarks.conv_grad --only=maxpool
  --rounds=5 --reps=2`, load average 2–3), lax → rewrite: LeNet-5's 2×2/2 pool of 128×28×28×6
  6.6 → 1.8 ms; AlexNet's 3×3/2 of 32×55×55×64 152 → 29 ms; ResNet's 3×3/2 stem pool of
  32×112×112×64 949 → 231 ms; GoogLeNet's 3×3/1 of 32×28×28×192 343 → 295 ms.
  """
  strides = tuple(strides or window_shape)
  if not enabled() or x.ndim != 4:
    return nn.max_pool(x, tuple(window_shape), strides, padding)
  (kh, kw), (sh, sw) = window_shape, strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (sh, sw), padding)
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  y = None
  for window in _windows(x, (kh, kw), (sh, sw)):
    # A later window wins only if strictly larger (or NaN, which max propagates), so the
    # gradient goes to the first maximum, as select-and-scatter sends it.
    y = window if y is None else jnp.where((window > y) | jnp.isnan(window), window, y)
  return y
