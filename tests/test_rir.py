"""ResNet in ResNet (Targ et al. 2016): the generalized residual block, the RiR block and the
CIFAR "18-layer + wide" network.

The full network is only traced (jax.eval_shape); compute runs on single blocks and on one RiR
block per stage.
"""

import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, fast_jit, train_and_eval_step
from model_testing import count as param_count

from models import rir

EPS = 1e-5  # layers.batch_norm's epsilon


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0]


def _conv3x3(x, kernel):
  """A stride-1, pad-1 3×3 convolution in NumPy (NHWC, HWIO)."""
  height, width = x.shape[1:3]
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(
      padded[:, i : i + height, j : j + width, :] @ kernel[i, j] for i in range(3) for j in range(3)
  )


def _derived_count(classes=10, outer=True):
  """Stems 2·(3·9·48 + BN 48); a generalized residual layer from c_in to c channels per stream:
  four 3×3 kernels 4·9·c_in·c, two BNs 4c, and a 1×1 projection c_in·c of r where c_in ≠ c;
  the outer shortcut of a widening RiR block another c_in·c; head 1×1 conv 384·classes + BN."""
  layer = lambda c_in, c: 36 * c_in * c + 4 * c + (c_in * c if c_in != c else 0)
  total = 2 * (3 * 9 * 48 + 2 * 48)
  c_in = 48
  for c, blocks in ((48, 2), (96, 3), (192, 3)):
    total += layer(c_in, c) + (c_in * c if outer and c_in != c else 0)
    total += (2 * blocks - 1) * layer(c, c)
    c_in = c
  return total + 384 * classes + 2 * classes


def test_parameter_counts():
  # Without the outer shortcut: osmr/imgclsmob's rir_cifar10 and rir_cifar100, whose tests
  # assert 9,492,980 and 9,527,720 parameters.
  assert _derived_count(outer=False) == 9_492_980
  assert param_count('rir', 32, num_classes=10, outer_shortcut=False) == 9_492_980
  assert param_count('rir', 32, num_classes=100, outer_shortcut=False) == 9_527_720
  # The default adds the two outer projections 48·96 + 96·192 (derived, no published count).
  assert _derived_count() == 9_492_980 + 48 * 96 + 96 * 192 == 9_516_020
  assert param_count('rir', 32, num_classes=10) == 9_516_020
  # Zero-padding shortcuts ('A') have no parameters: the inner projections go too.
  assert param_count('rir', 32, num_classes=10, shortcut='A') == 9_492_980 - 48 * 96 - 96 * 192


def test_18_layer_wide_layout_stages_32_16_8_with_96_192_384_channels():
  shapes = abstract('rir', 32, num_classes=10)
  params, inter = shapes['params'], shapes['intermediates']
  assert _out(inter, 'bn1').shape == (1, 32, 32, 96)  # two 48-channel stems
  blocks = [f'layer{s}_{i}' for s, n in ((1, 2), (2, 3), (3, 3)) for i in range(n)]
  assert set(params) == {'conv1', 'bn1', 'final_conv', 'final_bn'} | set(blocks)
  for name in blocks:
    size, width = {'1': (32, 96), '2': (16, 192), '3': (8, 384)}[name[5]]
    assert _out(inter, name).shape == (1, size, size, width)
    assert set(params[name]) >= {'unit0', 'unit1'} and 'unit2' not in params[name]
    # Projections, inner and outer, only where a stage starts with stride 2.
    widening = name in ('layer2_0', 'layer3_0')
    assert ('downsample_conv' in params[name]) == widening
    assert ('downsample_conv' in params[name]['unit0']) == widening
  # 1 stem + 8 blocks × 2 layers + 1 head = 18 layers.
  assert 1 + sum(len([u for u in params[b] if u.startswith('unit')]) for b in blocks) + 1 == 18
  unit = params['layer2_0']['unit0']
  assert unit['conv']['kernel'].shape == (3, 3, 96, 192)  # both streams in, both out
  assert unit['downsample_conv']['kernel'].shape == (1, 1, 48, 96)  # residual stream only
  assert unit['bn']['scale'].shape == (192,)
  assert _out(inter, 'layer2_0', 'unit0').shape == (1, 16, 16, 192)  # stride on the first layer
  assert params['final_conv']['kernel'].shape == (1, 1, 384, 10)
  assert 'bias' not in params['final_conv'] and params['final_bn']['bias'].shape == (10,)
  with pytest.raises(ValueError, match="Unknown shortcut 'C'"):
    abstract('rir', 32, shortcut='C')


def test_generalized_residual_block_against_its_equation_and_the_outer_shortcut():
  w = 4
  x = np.random.default_rng(0).standard_normal((2, 5, 5, 2 * w), dtype=np.float32)
  layer = rir.GeneralizedResidualBlock(w)
  block = rir.RiRBlock(w)
  wide = rir.RiRBlock(2 * w, strides=2)

  @fast_jit
  def run(x):
    return (
        layer.init_with_output(FAST_KEY, x),
        block.init_with_output(FAST_KEY, x, capture_intermediates=True),
        wide.init_with_output(FAST_KEY, x, capture_intermediates=True),
    )

  (out, variables), (block_out, block_vars), (wide_out, wide_vars) = run(x)
  kernel = np.asarray(variables['params']['conv']['kernel'])
  r, t = x[..., :w], x[..., w:]
  w_rr, w_tr = kernel[:, :, :w, :w], kernel[:, :, w:, :w]  # into the residual stream
  w_rt, w_tt = kernel[:, :, :w, w:], kernel[:, :, w:, w:]  # into the transient stream
  # σ = BN → ReLU on the whole sum; BN at init in eval mode divides by sqrt(1 + eps).
  sigma = lambda y: np.maximum(y / np.sqrt(1 + EPS), 0)
  r_next = sigma(_conv3x3(r, w_rr) + _conv3x3(t, w_tr) + r)
  t_next = sigma(_conv3x3(r, w_rt) + _conv3x3(t, w_tt))  # no shortcut
  np.testing.assert_allclose(out, np.concatenate([r_next, t_next], -1), atol=1e-4)
  # RiR block: the outer identity joins the residual stream after the second layer's σ.
  last = _out(block_vars['intermediates'], 'unit1')
  np.testing.assert_allclose(block_out[..., :w] - last[..., :w], r, atol=1e-5)
  np.testing.assert_array_equal(block_out[..., w:], last[..., w:])
  # Widening and striding: the outer shortcut is a 1×1/2 projection of r.
  outer = np.asarray(wide_vars['params']['downsample_conv']['kernel'])[0, 0]
  last = _out(wide_vars['intermediates'], 'unit1')
  np.testing.assert_allclose(
      wide_out[..., : 2 * w] - last[..., : 2 * w], r[:, ::2, ::2] @ outer, atol=1e-5
  )
  np.testing.assert_array_equal(wide_out[..., 2 * w :], last[..., 2 * w :])
  assert wide_out.shape == (2, 3, 3, 4 * w)


def test_train_and_eval_step():
  # One RiR block per stage; zero-padding shortcuts here (the projections are checked above).
  train_and_eval_step('rir', 16, widths=(8, 16, 32), stage_sizes=(1, 1, 1), shortcut='A')
