"""The locally connected layer: a conv whose kernel differs at every output position.

Its values against a naive loop, against a conv when every position holds the same kernel, its
parameter count against the formula, and the notes' parameter arithmetic for a 1000×1000 image
(fully connected 10¹², locally connected 10⁸, a shared conv 100) from the layers' own shapes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY

from models import convolutions as conv
from train_lib.state import num_params

TOL = {'rtol': 1e-5, 'atol': 1e-5}


def _naive_locally_connected(x, kernel, bias, stride, pad, dil):
  """out[n,i,j,o] = Σ_{h,w,c} xpad[n, i·s + h·d, j·s + w·d, c] · K[i,j,h,w,c,o] + b[i,j,o]."""
  x, kernel = np.float64(x), np.float64(kernel)
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  oh, ow, kh, kw, _, cout = kernel.shape
  out = np.zeros((x.shape[0], oh, ow, cout)) + bias
  for i in range(oh):
    for j in range(ow):
      for h in range(kh):
        for w in range(kw):
          out[:, i, j] += xp[:, i * stride + h * dil, j * stride + w * dil] @ kernel[i, j, h, w]
  return out


@pytest.mark.parametrize('stride,pad,dil', [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
def test_every_position_has_its_own_kernel(stride, pad, dil):
  rng = np.random.default_rng(stride + 3 * pad + 5 * dil)
  x = rng.standard_normal((2, 7, 8, 3)).astype(np.float32)
  layer = conv.LocallyConnected(4, 3, stride, pad, dil)
  variables = layer.init(FAST_KEY, x)
  params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), variables)
  want = _naive_locally_connected(
      x, params['params']['kernel'], params['params']['bias'], stride, pad, dil
  )
  np.testing.assert_allclose(np.asarray(layer.apply(params, x)), want, **TOL)


def test_one_kernel_at_every_position_is_a_conv():
  """Weight sharing is the only difference: tiling one HWIO kernel (and one bias) over every
  position gives lax's conv of that kernel, at stride 2 with padding 1."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
  kernel, bias = rng.standard_normal((3, 3, 3, 5)), rng.standard_normal(5)
  layer = conv.LocallyConnected(5, 3, strides=2, padding=1)
  shapes = jax.eval_shape(layer.init, FAST_KEY, x)['params']
  oh, ow = shapes['kernel'].shape[:2]
  tiled = {
      'kernel': np.broadcast_to(kernel, (oh, ow, *kernel.shape)).astype(np.float32),
      'bias': np.broadcast_to(bias, (oh, ow, 5)).astype(np.float32),
  }
  got = layer.apply({'params': tiled}, x)
  want = conv.conv2d(x, jnp.float32(kernel), strides=2, padding=1) + jnp.float32(bias)
  assert got.shape == (2, 5, 5, 5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), **TOL)


def test_parameter_count_is_the_formula():
  """9×9×3 input, 3×3 kernel, stride 2, padding 1: 5×5 positions, each with a 3·3·3×4 kernel
  and 4 biases, 25·(108 + 4) = 2,800, where the shared conv has 112; flax's own unshared conv
  (nn.ConvLocal) counts the same."""
  x = jnp.zeros((1, 9, 9, 3))
  local = jax.eval_shape(conv.LocallyConnected(4, 3, 2, 1).init, FAST_KEY, x)
  shared = jax.eval_shape(nn.Conv(4, (3, 3), 2, 1).init, FAST_KEY, x)
  flax_local = jax.eval_shape(nn.ConvLocal(4, (3, 3), 2, 1).init, FAST_KEY, x)
  assert num_params(local['params']) == 5 * 5 * (3 * 3 * 3 * 4 + 4) == 2_800
  assert num_params(shared['params']) == 3 * 3 * 3 * 4 + 4 == 112
  assert num_params(flax_local['params']) == 2_800


def test_the_notes_parameter_arithmetic_for_a_megapixel_image():
  """The notes: a 1000×1000 image feeding 10⁶ hidden units. Fully connected, every unit sees
  every pixel: a Dense layer from 10⁶ inputs to 10⁶ units, 10¹² weights. Locally connected,
  every unit sees its own 10×10 patch: one unit per pixel, so a 10×10 LocallyConnected layer at
  stride 1 with 'same' padding (4 before, 5 after: 1000 + 9 − 9 = 1000 positions per axis),
  one output channel, 10⁶·100 = 10⁸ weights. Sharing that 10×10 kernel over every position: a
  conv with 100 weights, whatever the number of units. Weights only, as the notes count them
  (no biases). Shapes from jax.eval_shape: nothing is allocated."""
  image = jax.ShapeDtypeStruct((1, 1000, 1000, 1), jnp.float32)
  same = ((4, 5), (4, 5))

  def weights(layer, x):
    variables = jax.eval_shape(layer.init, FAST_KEY, x)
    hidden = jax.eval_shape(layer.apply, variables, x)
    return num_params(variables['params']), int(np.prod(hidden.shape))

  dense = weights(nn.Dense(10**6, use_bias=False), jax.ShapeDtypeStruct((1, 10**6), jnp.float32))
  local = weights(conv.LocallyConnected(1, 10, padding=same, use_bias=False), image)
  shared = weights(conv.grouped_conv(1, 10, padding=same, use_bias=False), image)
  assert dense == (10**12, 10**6)
  assert local == (10**8, 10**6)
  assert shared == (100, 10**6)
  assert dense[0] // local[0] == 10**4  # "four orders of magnitude fewer"
