"""The notes' convolution variants against naive loops: value and gradient, float32 to 1e-5.

Each naive reference is a numpy loop over output pixels and kernel taps written here; its
gradient (of a random linear functional <out, R> w.r.t. input and kernel) is the same loop
run backwards by hand, as the notes derive ∇w11 = δ11·a11 + δ12·a12 + … .
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, fast_jit

from models import convolutions as conv
from models import layers

RNG = np.random.default_rng(0)
TOL = {'rtol': 1e-5, 'atol': 1e-5}


def _randn(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def _close(got, want):
  np.testing.assert_allclose(np.asarray(got), want, **TOL)


def naive_conv(x, k, stride=1, pad=0, dil=1, groups=1, r=None):
  """out[n,i,j,o] = Σ_{h,w,c ∈ group(o)} xpad[n, i·s + h·d, j·s + w·d, c] · k[h,w,c,o].

  With a cotangent `r` (shaped as out) also returns d<out,r>/dx and d<out,r>/dk by hand.
  """
  x, k = np.float64(x), np.float64(k)
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, height, width, _ = xp.shape
  kh, kw, cg, cout = k.shape
  og = cout // groups
  oh, ow = (height - dil * (kh - 1) - 1) // stride + 1, (width - dil * (kw - 1) - 1) // stride + 1
  out, dxp, dk = np.zeros((n, oh, ow, cout)), np.zeros_like(xp), np.zeros_like(k)
  for i in range(oh):
    for j in range(ow):
      for h in range(kh):
        for w in range(kw):
          for g in range(groups):
            row, col = i * stride + h * dil, j * stride + w * dil
            cin, co = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
            out[:, i, j, co] += xp[:, row, col, cin] @ k[h, w, :, co]
            if r is not None:
              dxp[:, row, col, cin] += r[:, i, j, co] @ k[h, w, :, co].T
              dk[h, w, :, co] += xp[:, row, col, cin].T @ r[:, i, j, co]
  if r is None:
    return out
  return out, dxp[:, pad : height - pad, pad : width - pad], dk


def naive_conv_transpose(x, k, stride=1, pad=0, out_pad=0, dil=1, r=None):
  """Scatter-add: input pixel (y, x) adds x[y,x,:] · k[h,w] at (y·s + h·d − p, x·s + w·d − p).

  `k` is (kh, kw, C_out, C_in) as PyTorch's (C_in, C_out, kh, kw) weight permuted (2, 3, 1, 0).
  """
  x, k = np.float64(x), np.float64(k)
  n, height, width, _ = x.shape
  kh, kw, cout, _ = k.shape
  oh = (height - 1) * stride - 2 * pad + dil * (kh - 1) + out_pad + 1
  ow = (width - 1) * stride - 2 * pad + dil * (kw - 1) + out_pad + 1
  out, dx, dk = np.zeros((n, oh, ow, cout)), np.zeros_like(x), np.zeros_like(k)
  for y in range(height):
    for z in range(width):
      for h in range(kh):
        for w in range(kw):
          row, col = y * stride + h * dil - pad, z * stride + w * dil - pad
          if 0 <= row < oh and 0 <= col < ow:  # the rest is cropped by `padding`
            out[:, row, col] += x[:, y, z] @ k[h, w].T
            if r is not None:
              dx[:, y, z] += r[:, row, col] @ k[h, w]
              dk[h, w] += r[:, row, col].T @ x[:, y, z]
  return out if r is None else (out, dx, dk)


def _grads(fn, *args, r=None):
  """(fn(*args), d<fn(*args), r>/d args, r) for a random r unless given, in one cheap compile."""
  if r is None:
    r = _randn(*jax.eval_shape(fn, *args).shape)

  def value_and_vjp(r, *a):
    out, vjp = jax.vjp(fn, *a)
    return out, vjp(r)

  out, grads = fast_jit(value_and_vjp)(r, *args)
  return out, grads, r


# --- 1. grouped convolution (Caffe's `group`) ------------------------------------------------


@pytest.mark.parametrize('groups, stride, pad, dil', [(1, 1, 1, 1), (2, 2, 1, 1), (4, 1, 2, 2)])
def test_grouped_conv_matches_a_loop_over_groups(groups, stride, pad, dil):
  x = _randn(2, 6, 6, 8)
  layer = conv.grouped_conv(4, 3, stride, pad, dil, groups=groups, use_bias=False)
  k = _randn(3, 3, 8 // groups, 4)
  assert jax.eval_shape(layer.init, jax.random.key(0), x)['params']['kernel'].shape == k.shape
  out, (dx, dk), r = _grads(lambda a, b: layer.apply({'params': {'kernel': b}}, a), x, k)
  want, want_dx, want_dk = naive_conv(x, k, stride, pad, dil, groups, r=r)
  _close(out, want)
  _close(dx, want_dx)
  _close(dk, want_dk)


def test_output_group_sees_only_its_input_group():
  layer = conv.grouped_conv(6, 3, groups=2)
  x = _randn(1, 5, 5, 4)
  params = {'params': {'kernel': _randn(3, 3, 2, 6), 'bias': _randn(6)}}
  changed = x.copy()
  changed[..., 2:] = _randn(1, 5, 5, 2)  # change input group 1 only
  apply = fast_jit(layer.apply)
  before, after = apply(params, x), apply(params, changed)
  np.testing.assert_array_equal(before[..., :3], after[..., :3])  # output group 0 unchanged
  assert not np.allclose(before[..., 3:], after[..., 3:])


def test_notes_group_example_32_in_48_out_group_2():
  # The notes: 32 input channels, a 3×3 conv to 48 outputs, group 2 → two groups of 16 in / 24 out.
  layer = conv.grouped_conv(48, 3, groups=2, use_bias=False)
  params = jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 100, 100, 32)))['params']
  assert params['kernel'].shape == (3, 3, 16, 48)
  assert params['kernel'].size == 3 * 3 * 16 * 48 == 3 * 3 * 32 * 48 // 2  # half the full conv


# --- 2. depthwise, pointwise, depthwise-separable --------------------------------------------


@pytest.mark.parametrize('multiplier, stride', [(1, 1), (2, 2)])
def test_depthwise_conv_filters_each_channel_alone(multiplier, stride):
  x = _randn(2, 5, 5, 3)
  layer = conv.DepthwiseConv(3, stride, multiplier=multiplier, use_bias=False)
  k = _randn(3, 3, 1, 3 * multiplier)
  params = jax.eval_shape(layer.init, jax.random.key(0), x)['params']
  assert params['conv']['kernel'].shape == k.shape
  out, (dx, dk), r = _grads(lambda a, b: layer.apply({'params': {'conv': {'kernel': b}}}, a), x, k)
  want, want_dx, want_dk = naive_conv(x, k, stride, 1, groups=3, r=r)
  # Output channel c·m + j is input channel c correlated with filter c·m + j, nothing else.
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  c, j = 2, multiplier - 1
  direct = sum(
      xp[:, h : h + 5 : stride, w : w + 5 : stride, c] * k[h, w, 0, c * multiplier + j]
      for h in range(3)
      for w in range(3)
  )
  _close(want[..., c * multiplier + j], direct)
  _close(out, want)
  _close(dx, want_dx)
  _close(dk, want_dk)


@pytest.mark.parametrize('groups', [1, 2])
def test_pointwise_conv_is_a_per_pixel_matrix_product(groups):
  x = _randn(2, 3, 3, 4)
  k = _randn(1, 1, 4 // groups, 6)
  layer = conv.pointwise_conv(6, groups=groups, use_bias=False)
  out, (dx, dk), r = _grads(lambda a, b: layer.apply({'params': {'kernel': b}}, a), x, k)
  cin, cout = 4 // groups, 6 // groups
  want = np.concatenate(
      [
          x[..., g * cin : (g + 1) * cin] @ k[0, 0, :, g * cout : (g + 1) * cout]
          for g in range(groups)
      ],
      -1,
  )
  _close(out, want)
  _, want_dx, want_dk = naive_conv(x, k, groups=groups, r=r)
  _close(dx, want_dx)
  _close(dk, want_dk)


def test_separable_conv_is_depthwise_then_pointwise_with_fewer_weights():
  c, cout, k = 32, 64, 3
  layer = conv.SeparableConv(cout, k)
  x = _randn(1, 4, 4, c)
  params = jax.eval_shape(layer.init, jax.random.key(0), x)['params']
  assert params['depthwise']['kernel'].shape == (k, k, 1, c)
  assert params['pointwise']['kernel'].shape == (1, 1, c, cout)
  count = sum(p.size for p in jax.tree_util.tree_leaves(params))
  assert count == k * k * c + c * cout == 2336  # vs k·k·c·cout = 18432 for a full 3×3 conv
  full = jax.eval_shape(conv.grouped_conv(cout, k, use_bias=False).init, jax.random.key(0), x)
  assert full['params']['kernel'].size == k * k * c * cout == 18432
  small = conv.SeparableConv(5, k)
  got, p = fast_jit(small.init_with_output)(FAST_KEY, x[..., :3])
  want = naive_conv(
      naive_conv(x[..., :3], p['params']['depthwise']['kernel'], pad=1, groups=3),
      p['params']['pointwise']['kernel'],
  )
  _close(got, want)


# --- 3. channel shuffle ----------------------------------------------------------------------


@pytest.mark.parametrize('channels, groups', [(6, 2), (12, 3), (8, 4)])
def test_channel_shuffle_index_formula_and_inverse(channels, groups):
  x = _randn(2, 3, 3, channels)
  per = channels // groups
  # View channels as a (groups, per) matrix, read it column by column: output i·groups + g is
  # input g·per + i — so each run of `groups` outputs takes one channel from every group.
  want = np.empty_like(x)
  for g in range(groups):
    for i in range(per):
      want[..., i * groups + g] = x[..., g * per + i]
  shuffle = lambda a: layers.channel_shuffle(a, groups)
  unshuffle = lambda a: layers.channel_shuffle(a, per)
  shuffled, restored = fast_jit(lambda a: (shuffle(a), unshuffle(shuffle(a))))(x)
  np.testing.assert_array_equal(shuffled, want)
  np.testing.assert_array_equal(restored, x)  # un-shuffle = shuffle with c/groups groups
  assert not np.array_equal(shuffled, x)


# --- 4. dilated convolution ------------------------------------------------------------------


def test_dilated_3x3_equals_5x5_with_zeros_between_taps():
  x, k = _randn(2, 9, 9, 2), _randn(3, 3, 2, 3)
  dense = np.asarray(fast_jit(conv.dilate_kernel, static_argnums=1)(k, 2))
  assert dense.shape == (5, 5, 2, 3)
  np.testing.assert_array_equal(dense[::2, ::2], k)
  mask = np.zeros((5, 5), bool)
  mask[::2, ::2] = True
  np.testing.assert_array_equal(dense[~mask], 0.0)

  dilated = lambda a, b: conv.conv2d(a, b, 1, 1, dilation=2)
  out, (dx, dk), r = _grads(dilated, x, k)
  assert out.shape == (2, 7, 7, 3) and conv.out_size(9, 3, 1, 1, 2) == 7  # 9 + 2 − 5 + 1
  dense_out, (dense_dx, dense_dk5), _ = _grads(lambda a, b: conv.conv2d(a, b, 1, 1), x, dense, r=r)
  _close(out, dense_out)
  _close(dx, dense_dx)
  _close(dk, np.asarray(dense_dk5)[::2, ::2])  # the gradient of each tap is the 5×5's at that tap
  want, want_dx, want_dk = naive_conv(x, k, 1, 1, 2, r=r)
  _close(out, want)
  _close(dx, want_dx)
  _close(dk, want_dk)


def test_dilated_3x3_covers_a_5x5_field_with_9_weights():
  # Which input pixels one output pixel depends on: the gradient of that output w.r.t. the input.
  pixel = lambda a: conv.conv2d(a, jnp.ones((3, 3, 1, 1)), dilation=2)[0, 0, 0, 0]
  field = fast_jit(jax.grad(pixel))(jnp.zeros((1, 7, 7, 1)))[0, :, :, 0]
  rows, cols = np.nonzero(np.asarray(field))
  assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (5, 5)
  assert len(rows) == 9


# --- 5. transposed convolution ---------------------------------------------------------------


def test_transposed_conv_takes_the_notes_2x2_back_to_5x5():
  # The notes: 5×5 input, 3×3 kernel, stride 2, no padding → 2×2; the transposed conv → 5×5.
  k = _randn(3, 3, 1, 1)
  down = jax.eval_shape(lambda a: conv.conv2d(a, k, 2), jnp.zeros((1, 5, 5, 1)))
  assert down.shape == (1, 2, 2, 1)
  y = _randn(1, 2, 2, 1)
  # flax's ConvTranspose with transpose_kernel=True and VALID padding is PyTorch's padding=0.
  layer = nn.ConvTranspose(1, (3, 3), (2, 2), 'VALID', use_bias=False, transpose_kernel=True)
  got, flax_got = fast_jit(
      lambda a, b: (conv.conv_transpose(a, b, 2), layer.apply({'params': {'kernel': b}}, a))
  )(y, k)
  assert got.shape == (1, 5, 5, 1)
  _close(got, naive_conv_transpose(y, k, 2))
  _close(flax_got, naive_conv_transpose(y, k, 2))
  module = conv.ConvTranspose(4, 3, strides=2, padding=1, output_padding=1)
  params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 2, 2, 3)))['params']
  assert params['kernel'].shape == (3, 3, 4, 3)
  up = jax.eval_shape(module.apply, {'params': params}, jnp.zeros((1, 2, 2, 3)))
  assert up.shape == (1, 4, 4, 4)  # (2 − 1)·2 − 2 + 2 + 1 + 1


@pytest.mark.parametrize(
    'size, stride, pad, out_pad, dil',
    [(2, 2, 0, 0, 1), (3, 2, 1, 1, 1), (3, 3, 1, 2, 1), (3, 1, 2, 0, 2), (2, 2, 1, 1, 2)],
)
def test_transposed_conv_is_a_scatter_add_with_pytorch_sizes(size, stride, pad, out_pad, dil):
  x, k = _randn(2, size, size, 3), _randn(3, 3, 2, 3)
  out, (dx, dk), r = _grads(lambda a, b: conv.conv_transpose(a, b, stride, pad, out_pad, dil), x, k)
  assert out.shape[1] == (size - 1) * stride - 2 * pad + dil * 2 + out_pad + 1  # PyTorch's formula
  want, want_dx, want_dk = naive_conv_transpose(x, k, stride, pad, out_pad, dil, r=r)
  _close(out, want)
  _close(dx, want_dx)
  _close(dk, want_dk)


@pytest.mark.parametrize('size, stride, pad, dil', [(5, 2, 0, 1), (7, 2, 1, 1), (8, 3, 1, 2)])
def test_transposed_conv_is_the_transpose_of_the_strided_conv(size, stride, pad, dil):
  # <conv(x), y> == <x, conv_transpose(y)> with the same HWIO kernel, when conv_transpose's
  # output_padding restores the rows the strided conv's floor dropped.
  k = _randn(3, 3, 2, 4)
  x = _randn(1, size, size, 2)
  forward = lambda a: conv.conv2d(a, k, stride, pad, dil)
  y = _randn(*jax.eval_shape(forward, x).shape)
  out_pad = size - ((y.shape[1] - 1) * stride - 2 * pad + dil * 2 + 1)

  @fast_jit
  def both_sides(x, y):
    ty = conv.conv_transpose(y, k, stride, pad, out_pad, dil)
    grad = jax.grad(lambda a: jnp.sum(forward(a) * y))(x)
    return jnp.sum(forward(x) * y), jnp.sum(x * ty), ty, grad

  lhs, rhs, ty, grad = both_sides(x, y)
  assert ty.shape == x.shape
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
  # It is exactly the gradient of the conv w.r.t. its input (the backward pass of the notes).
  _close(ty, grad)


# --- 6. gated convolution --------------------------------------------------------------------


def test_gated_conv_is_conv_times_sigmoid_of_a_separate_conv():
  layer = conv.GatedConv(4, 3, padding=1)
  x = _randn(2, 5, 5, 3)
  params = fast_jit(layer.init)(FAST_KEY, x)['params']
  assert set(params) == {'conv', 'gate'}
  assert params['conv']['kernel'].shape == params['gate']['kernel'].shape == (3, 3, 3, 4)
  assert not np.allclose(params['conv']['kernel'], params['gate']['kernel'])  # not shared
  a_k, b_k = _randn(3, 3, 3, 4), _randn(3, 3, 3, 4)
  a_b, b_b = _randn(4), _randn(4)
  apply = lambda v, ak, bk: layer.apply(
      {'params': {'conv': {'kernel': ak, 'bias': a_b}, 'gate': {'kernel': bk, 'bias': b_b}}}, v
  )
  out, (dx, dak, dbk), r = _grads(apply, x, a_k, b_k)
  a = naive_conv(x, a_k, pad=1) + a_b
  b = naive_conv(x, b_k, pad=1) + b_b
  sig = 1 / (1 + np.exp(-b))
  _close(out, a * sig)
  # By hand: d/da = r·σ(b) (the linear path), d/db = r·a·σ(b)(1 − σ(b)).
  _, dx_a, want_dak = naive_conv(x, a_k, pad=1, r=r * sig)
  _, dx_b, want_dbk = naive_conv(x, b_k, pad=1, r=r * a * sig * (1 - sig))
  _close(dak, want_dak)
  _close(dbk, want_dbk)
  _close(dx, dx_a + dx_b)
  assert not np.allclose(dak, dbk)


# --- 8. convolution as im2col + matrix multiply ----------------------------------------------


def test_im2col_reproduces_the_notes_worked_example():
  # The notes: a 3×3×3 input, two 2×2×3 kernels → a 2×2×2 output; the im2col matrix is 4×12.
  x, k = _randn(1, 3, 3, 3), _randn(2, 2, 3, 2)
  patches, out = fast_jit(lambda a, b: (conv.im2col(a, 2), conv.im2col_conv(a, b)))(x, k)
  assert patches.shape == (1, 4, 12)
  np.testing.assert_array_equal(patches[0, 0], x[0, :2, :2].reshape(-1))  # first receptive field
  np.testing.assert_array_equal(patches[0, 3], x[0, 1:, 1:].reshape(-1))  # last one
  assert out.shape == (1, 2, 2, 2)
  _close(out, (patches[0] @ k.reshape(12, 2)).reshape(1, 2, 2, 2))
  _close(out, naive_conv(x, k))


@pytest.mark.parametrize(
    'stride, pad, dil, groups',
    [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (2, 1, 1, 2), (3, ((1, 0), (2, 1)), 2, 4)],
)
def test_im2col_conv_matches_xla_conv_in_value_and_gradient(stride, pad, dil, groups):
  x, k = _randn(2, 8, 7, 4), _randn(3, 2, 4 // groups, 8)
  pads = [(pad, pad)] * 2 if isinstance(pad, int) else pad
  xla = lambda a, b: jax.lax.conv_general_dilated(
      a,
      b,
      (stride, stride),
      pads,
      rhs_dilation=(dil, dil),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups,
  )
  out, (dx, dk), r = _grads(lambda a, b: conv.im2col_conv(a, b, stride, pad, dil, groups), x, k)
  want, (want_dx, want_dk), _ = _grads(xla, x, k, r=r)
  _close(out, want)
  _close(dx, want_dx)
  _close(dk, want_dk)


# --- 9. pooling backprop ---------------------------------------------------------------------

NOTES_DELTA = np.array([[2.0, 8.0], [4.0, 6.0]], np.float32)  # the notes' upstream gradient


def _pool_grad(fn, x, delta):
  """d<fn(x), delta>/dx: the error the pooling layer hands back to its input."""
  _, (grad,), _ = _grads(fn, x[None, :, :, None], r=delta[None, :, :, None])
  return np.asarray(grad[0, :, :, 0])


def test_max_pool_backprop_routes_each_error_to_the_argmax_only():
  x = np.array([[1, 3, 0, 2], [5, 2, 9, 1], [0, 7, 3, 4], [6, 1, 2, 8]], np.float32)
  want = np.zeros((4, 4), np.float32)
  want[1, 0], want[1, 2], want[2, 1], want[3, 3] = 2, 8, 4, 6  # arg-maxes 5, 9, 7, 8
  for fn in (lambda v: layers.pool(v, 'max', 2, 2), lambda v: nn.max_pool(v, (2, 2), (2, 2))):
    np.testing.assert_array_equal(_pool_grad(fn, x, NOTES_DELTA), want)


def test_average_pool_backprop_spreads_each_error_over_its_block():
  x = _randn(4, 4)
  want = np.kron(NOTES_DELTA / 4, np.ones((2, 2), np.float32))  # 2/4, 8/4, 4/4, 6/4 per block
  for fn in (lambda v: layers.pool(v, 'avg', 2, 2), lambda v: nn.avg_pool(v, (2, 2), (2, 2))):
    np.testing.assert_allclose(_pool_grad(fn, x, NOTES_DELTA), want, rtol=1e-6)


def test_overlapping_max_pool_accumulates_where_windows_share_the_max():
  # AlexNet's 3×3 stride-2 pooling: on 5×5, column 2 and row 2 lie in two windows each.
  x = _randn(5, 5)
  x[1, 2] = 50.0  # the max of the two top windows (rows 0–2, columns 0–2 and 2–4)
  x[3, 2] = 60.0  # the max of the two bottom windows (rows 2–4)
  delta = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
  want = np.zeros((5, 5), np.float32)
  want[1, 2], want[3, 2] = 1 + 2, 4 + 8
  np.testing.assert_array_equal(_pool_grad(lambda v: layers.pool(v, 'max', 3, 2), x, delta), want)
