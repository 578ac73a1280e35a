"""Shared layers against naive references: LRN, PyTorch/Caffe pooling sizes, ConvBN."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import layers


def _naive_lrn(x, size, k, alpha, beta):
  """The AlexNet paper's §3.3 formula, one channel at a time."""
  channels = x.shape[-1]
  out = np.empty_like(x)
  for c in range(channels):
    lo, hi = max(0, c - size // 2), min(channels - 1, c + size // 2)
    out[..., c] = x[..., c] / (k + alpha * np.sum(x[..., lo : hi + 1] ** 2, axis=-1)) ** beta
  return out


@pytest.mark.parametrize('alpha_over_size', [False, True])
def test_local_response_norm_matches_the_paper_formula(alpha_over_size):
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 3, 9))) * 30  # large: α matters
  got = layers.local_response_norm(jnp.asarray(x), alpha_over_size=alpha_over_size)
  alpha = 1e-4 / 5 if alpha_over_size else 1e-4
  want = _naive_lrn(x, 5, 2.0, alpha, 0.75)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert not np.allclose(want, x / 2.0**0.75, rtol=1e-3)  # the neighbours' sum does matter


def test_local_response_norm_gradient_matches_the_naive_one():
  x = jax.random.normal(jax.random.key(1), (1, 2, 2, 6)) * 30
  loss = lambda f: lambda v: jnp.sum(jnp.sin(f(v)))  # noqa: E731
  naive = lambda v: jnp.stack(
      [  # noqa: E731
          v[..., c] / (2.0 + 1e-4 * jnp.sum(v[..., max(0, c - 2) : c + 3] ** 2, -1)) ** 0.75
          for c in range(6)
      ],
      -1,
  )
  np.testing.assert_allclose(
      jax.grad(loss(layers.local_response_norm))(x), jax.grad(loss(naive))(x), rtol=1e-5, atol=1e-7
  )


@pytest.mark.parametrize(
    'size, window, stride, padding',
    [
        (112, 3, 2, 0),
        (56, 3, 2, 0),
        (14, 2, 2, 0),
        (13, 3, 2, 0),
        (55, 3, 2, 0),
        (7, 3, 1, 1),
        (28, 3, 2, 1),
    ],
)
def test_ceil_mode_pooling_has_pytorchs_output_size(size, window, stride, padding):
  out = math.ceil((size + 2 * padding - window) / stride) + 1
  if (out - 1) * stride >= size + padding:  # PyTorch drops a window that starts in the padding
    out -= 1
  x = jnp.ones((1, size, size, 1))
  assert layers.pool(x, 'max', window, stride, padding, ceil_mode=True).shape[1] == out
  floor = (size + 2 * padding - window) // stride + 1
  assert layers.pool(x, 'max', window, stride, padding).shape[1] == floor


def test_max_pool_padding_never_wins_and_avg_pool_counts_it():
  x = -jnp.ones((1, 2, 2, 1))
  np.testing.assert_array_equal(layers.pool(x, 'max', 3, 1, 1), -1.0)  # pads with -inf
  corner = layers.pool(jnp.ones((1, 2, 2, 1)), 'avg', 3, 1, 1)[0, 0, 0, 0]
  assert float(corner) == pytest.approx(4 / 9)  # PyTorch's count_include_pad=True


def test_conv_bn_uses_pytorch_padding_groups_and_zero_init():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  block = layers.ConvBN(8, kernel_size=3, strides=2, groups=2)
  variables = block.init(jax.random.key(1), x)
  assert variables['params']['conv']['kernel'].shape == (3, 3, 2, 8)  # 4/2 inputs per group
  assert block.apply(variables, x).shape == (2, 5, 5, 8)  # (9 + 2 - 3) // 2 + 1
  zero = layers.ConvBN(8, scale_init=jax.nn.initializers.zeros, act='identity')
  np.testing.assert_array_equal(zero.apply(zero.init(jax.random.key(1), x), x), 0.0)


def _naive_avg_pool(x, window, stride, padding, out_size):
  """PyTorch's avg_pool2d (count_include_pad=True, ceil_mode), one window at a time."""
  size = x.shape[0]
  out = np.zeros((out_size, out_size))
  for i in range(out_size):
    for j in range(out_size):
      h0, w0 = i * stride - padding, j * stride - padding
      h1, w1 = min(h0 + window, size + padding), min(w0 + window, size + padding)
      count = (h1 - h0) * (w1 - w0)  # padding counts, the ceil-mode overhang does not
      out[i, j] = x[max(h0, 0) : min(h1, size), max(w0, 0) : min(w1, size)].sum() / count
  return out


@pytest.mark.parametrize(
    'size, window, stride, padding', [(4, 3, 2, 0), (14, 5, 3, 0), (8, 3, 2, 1), (7, 3, 1, 1)]
)
def test_average_pooling_divides_as_pytorch_and_caffe_do(size, window, stride, padding):
  x = np.asarray(jax.random.normal(jax.random.key(2), (size, size)))
  got = layers.pool(
      jnp.asarray(x)[None, :, :, None], 'avg', window, stride, padding, ceil_mode=True
  )[0, :, :, 0]
  np.testing.assert_allclose(
      got, _naive_avg_pool(x, window, stride, padding, got.shape[0]), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('size, out', [(13, 6), (5, 3), (1, 7), (6, 6)])
def test_adaptive_average_pooling_uses_pytorchs_bins(size, out):
  x = np.asarray(jax.random.normal(jax.random.key(3), (size, size + 2)))
  want = np.zeros((out, out))
  for i in range(out):
    for j in range(out):
      rows = slice(i * size // out, -(-(i + 1) * size // out))
      cols = slice(j * (size + 2) // out, -(-(j + 1) * (size + 2) // out))
      want[i, j] = x[rows, cols].mean()
  got = layers.adaptive_avg_pool(jnp.asarray(x)[None, :, :, None], out)[0, :, :, 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_average_pooling_gradient_splits_each_window_equally_under_jit():
  size, window, stride, padding = 8, 3, 2, 1
  out = 5  # ceil((8 + 2 - 3) / 2) + 1 = 5; the last window starts inside (8 + 1), so it stays
  weights = np.asarray(jax.random.normal(jax.random.key(4), (out, out)))
  loss = lambda v: jnp.sum(
      weights
      * layers.pool(  # noqa: E731
          v[None, :, :, None], 'avg', window, stride, padding, ceil_mode=True
      )[0, :, :, 0]
  )
  grad = jax.jit(jax.grad(loss))(jnp.zeros((size, size)))
  want = np.zeros((size, size))
  for i in range(out):
    for j in range(out):
      h0, w0 = i * stride - padding, j * stride - padding
      h1, w1 = min(h0 + window, size + padding), min(w0 + window, size + padding)
      want[max(h0, 0) : min(h1, size), max(w0, 0) : min(w1, size)] += weights[i, j] / (
          (h1 - h0) * (w1 - w0)
      )
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
