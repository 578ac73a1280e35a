"""Translation equivariance of convolution and the approximate invariance max pooling adds.

A stride-1 convolution commutes with a shift, conv(shift(x)) = shift(conv(x)): exactly with
circular padding, and away from the borders with zero padding. A layer of stride s commutes
only with shifts by multiples of s (the output moves by shift / s). Max pooling leaves many
outputs unchanged under a 1-pixel shift: measured on the offline digits below.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY

from models import convolutions as conv
from models import layers

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 16, 16, 3)).astype(np.float32)
KERNEL = RNG.standard_normal((3, 3, 3, 4)).astype(np.float32)
TOL = {'rtol': 1e-5, 'atol': 1e-5}


def shift(x, dy, dx):
  """Circular shift of the spatial axes: pixel (i, j) moves to (i + dy, j + dx)."""
  return jnp.roll(x, (dy, dx), axis=(1, 2))


def circular_pad(x, pad):
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='wrap')


def _close(got, want):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def _far(got, want):
  """Not equal by a wide margin (a large fraction of the values' own scale)."""
  got, want = np.asarray(got), np.asarray(want)
  return np.abs(got - want).max() > 0.1 * np.abs(want).max()


@pytest.mark.parametrize('dy,dx', [(1, 0), (0, 1), (3, -5)])
def test_conv_relu_conv_commutes_with_a_circular_shift(dy, dx):
  """Two of the repo's conv layers (3×3 then 5×5, bias, ReLU between) on circularly padded
  inputs: every output equals the shifted output, borders included."""
  first, second = conv.grouped_conv(4, 3, padding=0), conv.grouped_conv(2, 5, padding=0)

  def net(params, x):
    y = jax.nn.relu(first.apply(params[0], circular_pad(x, 1)))
    return second.apply(params[1], circular_pad(y, 2))

  params = (
      first.init(FAST_KEY, circular_pad(X, 1)),
      second.init(FAST_KEY, jnp.zeros((1, 20, 20, 4))),
  )
  params = jax.tree.map(lambda a: jnp.asarray(RNG.standard_normal(a.shape), jnp.float32), params)
  _close(net(params, shift(X, dy, dx)), shift(net(params, X), dy, dx))


def test_zero_padded_conv_commutes_with_a_shift_away_from_the_borders():
  """conv2d with zero padding 1: after a shift by (2, 3) the outputs agree wherever neither
  the wrapped-around pixels nor the padding reach the 3×3 window (rows 3..14, columns 4..14),
  and differ at the borders."""
  dy, dx = 2, 3
  shifted_first = conv.conv2d(shift(X, dy, dx), KERNEL, padding=1)
  shifted_after = shift(conv.conv2d(X, KERNEL, padding=1), dy, dx)
  interior = (slice(None), slice(dy + 1, 15), slice(dx + 1, 15))
  _close(shifted_first[interior], shifted_after[interior])
  assert _far(shifted_first[:, : dy + 1], shifted_after[:, : dy + 1])


def test_content_inside_a_zero_frame_shifts_exactly():
  """A zero-padded interior shift: content within the 20×20 centre of a 28×28 zero frame (as
  an MNIST digit sits) moved by (3, 2), zeros filling in; the zero-padded conv's output moves
  with it at every position, borders included."""
  image = np.zeros((1, 28, 28, 3), np.float32)
  image[0, 4:24, 4:24] = RNG.uniform(size=(20, 20, 3))
  moved = np.zeros_like(image)
  moved[:, 3:, 2:] = image[:, :-3, :-2]
  _close(conv.conv2d(moved, KERNEL, padding=1), shift(conv.conv2d(image, KERNEL, padding=1), 3, 2))


@pytest.mark.parametrize(
    'layer',
    [
        lambda x: conv.conv2d(circular_pad(x, 1), KERNEL, strides=2),
        lambda x: layers.pool(x, 'max', 2, 2),
    ],
    ids=['conv_stride2', 'max_pool_2x2'],
)
def test_stride_two_commutes_with_a_shift_by_two_not_by_one(layer):
  """A shift by the stride moves the output by one: exact. A 1-pixel shift has no counterpart
  on the output grid: it matches no shift of the output at all."""
  out = layer(X)
  _close(layer(shift(X, 2, 0)), shift(out, 1, 0))
  _close(layer(shift(X, 0, 2)), shift(out, 0, 1))
  one, out = np.asarray(layer(shift(X, 0, 1))), np.asarray(out)
  rolls = (np.roll(out, (dy, dx), axis=(1, 2)) for dy in range(8) for dx in range(8))
  assert all(_far(one, rolled) for rolled in rolls)


def test_max_pooling_keeps_an_isolated_peak_half_the_time():
  """A single bright pixel at each of the 28×28 positions, shifted 1 pixel right: 2×2 max
  pooling at stride 2 is unchanged exactly when the peak stays inside its window, i.e. from the
  even columns: 392 of 784."""
  peaks = np.eye(28 * 28, dtype=np.float32).reshape(-1, 28, 28, 1)
  before = layers.pool(peaks, 'max', 2, 2)
  after = layers.pool(np.roll(peaks, 1, axis=2), 'max', 2, 2)
  assert int(jnp.all(before == after, axis=(1, 2, 3)).sum()) == 392


@pytest.fixture(scope='module')
def digits():
  """100 real offline digits, 10 of each class, in [0, 1]."""
  from input_pipeline import offline_digits  # pylint: disable=import-outside-toplevel

  images, _ = offline_digits.load_arrays()
  return images[::50].astype(np.float32) / 255.0


def _unchanged_fractions(x, window):
  """Over the four 1-pixel shifts, the smallest fraction of pooled outputs (window×window,
  stride 2) left exactly unchanged, and the largest such fraction of pixels, both among values
  that are not background in the image or its shift."""
  pooled, pixels = [], []
  before = np.asarray(layers.pool(x, 'max', window, 2))
  for dy, dx in [(0, 1), (1, 0), (0, -1), (-1, 0)]:
    moved = np.roll(x, (dy, dx), axis=(1, 2))
    after = np.asarray(layers.pool(moved, 'max', window, 2))
    seen = (before > 0) | (after > 0)
    pooled.append((before == after)[seen].mean())
    pixels.append((x == moved)[(x > 0) | (moved > 0)].mean())
  return min(pooled), max(pixels)


def test_max_pooling_is_nearly_invariant_to_a_one_pixel_shift_of_a_digit(digits):
  """The notes: pooling keeps the representation approximately invariant to small shifts.
  Measured on 100 offline digits, 1-pixel shifts in each direction (non-background values):

  - grey levels, 2×2 pooling: 33–35% of pooled outputs unchanged, against 16% of pixels;
    3×3 overlapping pooling (AlexNet's): 45–47%;
  - strokes (pixels ≥ 128, a stroke detector's on/off map), 3×3 pooling: 78–80% unchanged,
    against 59–60% of pixels.

  Exactly equal values are a strict measure; the thresholds leave a margin under each.
  """
  pooled, pixels = _unchanged_fractions(digits, 2)
  assert pooled > 0.30 and pixels < 0.17 and pooled > 1.8 * pixels
  assert _unchanged_fractions(digits, 3)[0] > 0.42
  pooled, pixels = _unchanged_fractions(np.float32(digits >= 128 / 255), 3)
  assert pooled > 0.75 and pixels < 0.62
