"""Xception (Chollet 2017), as keras.applications.Xception.

The full-size model is only traced (jax.eval_shape); compute runs with one middle-flow block at
the smallest input (7 px).
"""

import jax
import numpy as np
import pytest
from model_testing import abstract, count, fast_jit, train_and_eval_step

from models import xception
from train_lib.state import num_params


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0].shape[1:]


def test_parameter_count_matches_keras_and_timm():
  # keras.applications.Xception(weights=None): 22,855,952 trainable parameters (also timm's
  # legacy_xception and the paper's Table 3).
  assert count('xception', 299) == 22_855_952


def test_flows_output_sizes_at_299():
  variables = abstract('xception', 299)
  out, params = variables['intermediates'], variables['params']
  # Entry flow: 149 → 147, then three strided blocks (pool at the end of each block).
  assert [_out(out, n) for n in ('conv1', 'conv2', 'block1', 'block2', 'block3')] == [
      (149, 149, 32),
      (147, 147, 64),
      (74, 74, 128),
      (37, 37, 256),
      (19, 19, 728),
  ]
  assert _out(out, 'block1', 'sepconv2') == (147, 147, 128)  # the stride sits in the max pool
  # Middle flow: eight identity-shortcut blocks of three separable convs at 19×19×728.
  assert [_out(out, f'block{i}') for i in range(4, 12)] == [(19, 19, 728)] * 8
  assert 'skip' not in params['block4'] and 'sepconv3' in params['block4']
  assert num_params(params['block4']) == 3 * (9 * 728 + 728 * 728 + 2 * 728) == 1_613_976
  # Exit flow: the width grows on the block's last separable conv, then 1536 and 2048.
  assert _out(out, 'block12') == (10, 10, 1024) and 'block13' not in params
  assert params['block12']['sepconv1']['pointwise']['kernel'].shape == (1, 1, 728, 728)
  assert params['block12']['sepconv2']['pointwise']['kernel'].shape == (1, 1, 728, 1024)
  assert params['block12']['skip']['kernel'].shape == (1, 1, 728, 1024)
  assert _out(out, 'conv3') == (10, 10, 1536) and _out(out, 'bn4') == (10, 10, 2048)
  # A separable conv: one 3×3 filter per channel, then a 1×1 across channels; no biases.
  assert jax.tree.map(lambda leaf: leaf.shape, params['block4']['sepconv1']) == {
      'depthwise': {'kernel': (3, 3, 1, 728)},
      'pointwise': {'kernel': (1, 1, 728, 728)},
  }


def test_relu_acts_on_the_branch_only_so_a_silenced_branch_passes_the_input():
  # A middle-flow block whose last BN outputs zeros returns its input unchanged, negative values
  # included: the shortcut takes the input before the ReLU that opens the branch.
  block = xception.XceptionBlock(8, reps=3)
  x = np.random.default_rng(0).standard_normal((1, 5, 5, 8)).astype(np.float32)
  shapes = jax.eval_shape(block.init, jax.random.key(0), x)
  rng = np.random.default_rng(1)

  def fill(path, leaf):
    names = [k.key for k in path]
    if names[0] == 'batch_stats':
      return (np.ones if names[-1] == 'var' else np.zeros)(leaf.shape, np.float32)
    if names[1] == 'bn3':  # the branch's last BN: γ = β = 0
      return np.zeros(leaf.shape, np.float32)
    return rng.standard_normal(leaf.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  out, inter = fast_jit(lambda v, x: block.apply(v, x, capture_intermediates=True))(variables, x)
  assert np.abs(inter['intermediates']['bn2']['__call__'][0]).max() > 0.5  # the branch computed
  np.testing.assert_array_equal(out, x)


def test_train_and_eval_step_with_one_middle_block():
  train_and_eval_step('xception', xception.MIN_SIZE, middle_blocks=1)


def test_middle_flow_depth_is_a_field_and_small_inputs_are_refused():
  params = abstract('xception', 7, middle_blocks=1)['params']
  assert sorted(k for k in params if k.startswith('block')) == [f'block{i}' for i in range(1, 6)]
  assert num_params(params) == 22_855_952 - 7 * 1_613_976
  with pytest.raises(ValueError, match='at least 7×7'):
    abstract('xception', 6)
