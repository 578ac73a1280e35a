"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-28-10, WRN-16-8, WRN-40-4 on CIFAR.

Full-size models are only traced (jax.eval_shape); compute runs on one block and on depth 10.
"""

import jax
import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, fast_jit, train_and_eval_step
from model_testing import count as param_count

from models import wide_resnet


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0]


def _derived_count(depth, k, classes=10):
  """Stem 3·9·16; per group of width w after c_in channels: the first block BN(c_in) +
  9·c_in·w + BN(w) + 9w² + a 1×1 projection c_in·w where c_in ≠ w, the other n − 1 blocks
  BN(w) + 9w² + BN(w) + 9w²; final BN(64k); fc 64k·classes + classes."""
  n, total, c_in = (depth - 4) // 6, 3 * 9 * 16, 16
  for w in (16 * k, 32 * k, 64 * k):
    total += 2 * c_in + 9 * c_in * w + 2 * w + 9 * w * w + (c_in * w if c_in != w else 0)
    total += (n - 1) * (4 * w + 18 * w * w)
    c_in = w
  return total + 2 * c_in + c_in * classes + classes


# Exact counts of the authors' code and xternalz/WideResNet-pytorch (bias-free convs), derived
# here by arithmetic; the paper (Tables 4 and 5, 10 classes) rounds them to 36.5M, 11.0M, 8.9M.
@pytest.mark.parametrize(
    'name,depth,k,count,paper_millions',
    [
        ('wrn28_10', 28, 10, 36_479_194, 36.5),
        ('wrn16_8', 16, 8, 10_961_370, 11.0),
        ('wrn40_4', 40, 4, 8_949_210, 8.9),
    ],
)
def test_parameter_counts_match_the_paper(name, depth, k, count, paper_millions):
  assert _derived_count(depth, k) == count
  assert param_count(name, 32, num_classes=10) == count
  assert round(count / 1e6, 1) == paper_millions


def test_wrn28_10_stages_halve_32_16_8_with_projections_where_the_width_changes():
  shapes = abstract('wrn28_10', 32, num_classes=10)
  params, inter = shapes['params'], shapes['intermediates']
  assert _out(inter, 'conv1').shape == (1, 32, 32, 16)
  for stage, (size, width) in enumerate([(32, 160), (16, 320), (8, 640)], start=1):
    for index in range(4):  # n = (28 − 4) / 6
      assert _out(inter, f'layer{stage}_{index}').shape == (1, size, size, width)
      assert ('downsample_conv' in params[f'layer{stage}_{index}']) == (index == 0)
  assert 'layer1_4' not in params and 'layer4_0' not in params
  block = params['layer2_0']
  assert set(block) == {'bn1', 'conv1', 'bn2', 'conv2', 'downsample_conv'}
  assert block['bn1']['scale'].shape == (160,)  # pre-activation of the block's input
  assert block['conv1']['kernel'].shape == (3, 3, 160, 320)
  assert block['downsample_conv']['kernel'].shape == (1, 1, 160, 320)
  assert 'bias' not in block['conv1'] and 'bias' not in params['conv1']
  # The stride sits on the first 3×3 and on the projection.
  assert _out(inter, 'layer2_0', 'conv1').shape == (1, 16, 16, 320)
  assert params['final_bn']['scale'].shape == (640,)
  assert params['fc']['kernel'].shape == (640, 10)
  # k = 1: the first block keeps 16 channels, so its shortcut is the identity.
  assert 'downsample_conv' not in abstract('wrn16_8', 32, widen_factor=1)['params']['layer1_0']
  with pytest.raises(ValueError, match='6n \\+ 4'):
    abstract('wrn28_10', 32, depth=26)


def test_dropout_sits_between_the_two_convs():
  x = np.random.default_rng(0).standard_normal((2, 4, 4, 8), dtype=np.float32)
  blocks = {
      'torch': wide_resnet.WideBasicBlock(8, dropout_rate=0.5),
      'pytorch_port': wide_resnet.WideBasicBlock(8, dropout_rate=0.5, dropout_before_bn=True),
      'none': wide_resnet.WideBasicBlock(8),
  }

  @fast_jit
  def run(x):
    variables = blocks['none'].init(FAST_KEY, x)  # the same parameters for all three
    result = {}
    for kind, block in blocks.items():
      for seed in (1, 2):  # training mode with two dropout draws
        result[f'{kind}/{seed}'] = block.apply(
            variables,
            x,
            train=True,
            mutable=['batch_stats'],
            capture_intermediates=True,
            rngs={'dropout': jax.random.key(seed, impl='rbg')},
        )
      result[f'{kind}/eval'] = block.apply(variables, x)
    return result

  result = run(x)
  inter = lambda kind, seed, name: _out(result[f'{kind}/{seed}'][1]['intermediates'], name)
  for kind in blocks:
    # Nothing random before the first conv; the identity shortcut adds the raw input.
    np.testing.assert_array_equal(inter(kind, 1, 'conv1'), inter(kind, 2, 'conv1'))
    np.testing.assert_allclose(result[f'{kind}/1'][0] - inter(kind, 1, 'conv2'), x, atol=1e-6)
    # Evaluation never drops: all three blocks agree there.
    np.testing.assert_allclose(result[f'{kind}/eval'], result['none/eval'], atol=1e-6)
  # The authors' Torch code drops right before conv2, after BN → ReLU; the PyTorch port drops
  # conv1's output, so bn2 sees it; without dropout two training passes are identical.
  np.testing.assert_array_equal(inter('torch', 1, 'bn2'), inter('torch', 2, 'bn2'))
  assert not np.allclose(inter('torch', 1, 'conv2'), inter('torch', 2, 'conv2'))
  assert not np.allclose(inter('pytorch_port', 1, 'bn2'), inter('pytorch_port', 2, 'bn2'))
  np.testing.assert_array_equal(result['none/1'][0], result['none/2'][0])


# Depth 10 (one block per group) at 16×16, with dropout; the default depths are counted above.
# The three names share one class, so the same shrunk network compiles once (the tests'
# compilation cache serves the other two).
@pytest.mark.parametrize('name', ['wrn28_10', 'wrn16_8', 'wrn40_4'])
def test_train_and_eval_step(name):
  train_and_eval_step(name, 16, depth=10, widen_factor=1, dropout_rate=0.3)
