"""ShuffleNet v1 (megvii's code) and v2 (torchvision's).

Full-size models are only traced (jax.eval_shape); compute runs on single units and on models
with one or two units.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, count, fast_jit, shapes, train_and_eval_step
from model_testing import macs as model_macs

from configs import shufflenet_imagenet
from models import shufflenet

V1 = [f'shufflenet_v1_g{g}' for g in (1, 2, 3, 4, 8)]
V2 = [f'shufflenet_v2_x{w}' for w in ('0_5', '1_0', '1_5', '2_0')]


# torchvision's model cards: num_params and "_ops" (GFLOPS there, which are MACs).
@pytest.mark.parametrize(
    'name,params,gmacs',
    [
        ('shufflenet_v2_x0_5', 1_366_792, 0.040),
        ('shufflenet_v2_x1_0', 2_278_604, 0.145),
        ('shufflenet_v2_x1_5', 3_503_624, 0.296),
        ('shufflenet_v2_x2_0', 7_393_996, 0.583),
    ],
)
def test_v2_parameters_and_macs_match_torchvision(name, params, gmacs):
  assert count(name, 224) == params
  assert round(model_macs(name, 224) / 1e9, 3) == gmacs


# imgclsmob (osmr/imgclsmob, pytorchcv shufflenet.py and its README) publishes ShuffleNet 1×
# counts: g1 1,531,936; g2 1,733,848; g3 1,865,728; g4 1,968,344; g8 2,434,768. Its layer shapes
# are megvii's, but its classifier has a bias: megvii's bias-free fc (the default here) has
# 1,000 fewer (derived). The MACs are derived (kernel size × output positions, summed); megvii's
# README rounds g3 and g8 1.0× to 138 MFLOPs.
@pytest.mark.parametrize(
    'name,params,mmacs,readme',
    [
        ('shufflenet_v1_g1', 1_531_936, 143.08, None),
        ('shufflenet_v1_g2', 1_733_848, 140.84, None),
        ('shufflenet_v1_g3', 1_865_728, 137.46, 138),
        ('shufflenet_v1_g4', 1_968_344, 134.34, None),
        ('shufflenet_v1_g8', 2_434_768, 138.37, 138),
    ],
)
def test_v1_parameters_match_imgclsmob_and_macs(name, params, mmacs, readme):
  assert count(name, 224) == params - 1000
  if name == 'shufflenet_v1_g3':
    assert count(name, 224, fc_bias=True) == params
  macs = model_macs(name, 224) / 1e6
  assert round(macs, 2) == mmacs
  assert readme is None or abs(macs - readme) < 1


# Width multipliers with the stems megvii's code uses. MFLOPs: megvii's README (0.5× g3 38M,
# 0.5× g8 40M, 2.0× g3 524M) and the paper's Table 2 (0.5× 38, 0.25× 13; a 12-channel stem
# fits 0.25× at 13.3 M, imgclsmob's int(24·0.25) = 6 would give 11.0 M).
# Count: imgclsmob's shufflenet_g3_wd2 (0.5×, stem int(24·0.5) = 12, fc with bias) 718,324.
@pytest.mark.parametrize(
    'groups,width,stem,mmacs,params',
    [
        (3, 0.5, 12, 38, 718_324),
        (8, 0.5, 16, 40, None),
        (3, 2.0, 48, 524, None),
        (3, 0.25, 12, 13, None),
    ],
)
def test_v1_width_multiplier_flops_match_megvii_and_the_paper(groups, width, stem, mmacs, params):
  fields = dict(width_multiplier=width, stem_channels=stem, fc_bias=True)
  assert round(model_macs(f'shufflenet_v1_g{groups}', 224, **fields) / 1e6) == mmacs
  if params:
    assert count(f'shufflenet_v1_g{groups}', 224, **fields) == params


def test_v1_stage_sizes_and_grouped_kernels():
  variables, out = shapes('shufflenet_v1_g3', 224)
  assert out['conv1'] == (1, 112, 112, 24)
  assert [out[f'stage{s}_0'][1:] for s in (2, 3, 4)] == [(28, 28, 240), (14, 14, 480), (7, 7, 960)]
  assert out['stage4_3'] == (1, 7, 7, 960) and out['fc'] == (1, 1000)
  params = variables['params']
  kernel = lambda unit, conv: params[unit][conv]['conv']['kernel'].shape
  # Stage 2's first 1×1 conv is not grouped (24 inputs); its branch gives 240 - 24 = 216.
  assert kernel('stage2_0', 'compress_conv') == (1, 1, 24, 60)
  assert kernel('stage2_0', 'dw_conv') == (3, 3, 1, 60)
  assert kernel('stage2_0', 'expand_conv') == (1, 1, 20, 216)
  # Elsewhere both 1×1 convs have 3 groups: 480 → 120 sees 160 inputs per group.
  assert kernel('stage3_1', 'compress_conv') == (1, 1, 160, 120)
  assert kernel('stage3_1', 'expand_conv') == (1, 1, 40, 480)
  assert kernel('stage3_0', 'expand_conv') == (1, 1, 40, 240)  # 480 - 240 concatenated
  assert 'bias' not in params['fc']
  # The stride sits on the depthwise conv.
  inter = variables['intermediates']['stage3_0']
  assert inter['compress_conv']['__call__'][0].shape[1:3] == (28, 28)
  assert inter['dw_conv']['__call__'][0].shape[1:3] == (14, 14)


def test_v2_stage_sizes_and_branches():
  variables, out = shapes('shufflenet_v2_x1_0', 224)
  assert out['conv1'] == (1, 112, 112, 24)
  assert [out[f'stage{s}_0'][1:] for s in (2, 3, 4)] == [(28, 28, 116), (14, 14, 232), (7, 7, 464)]
  assert out['conv5'] == (1, 7, 7, 1024)
  params = variables['params']
  kernel = lambda unit, conv: params[unit][conv]['conv']['kernel'].shape
  # Stride 2: both branches see all 24 inputs; stride 1: the branch sees half of 116.
  assert kernel('stage2_0', 'branch1_0') == (3, 3, 1, 24)
  assert kernel('stage2_0', 'branch1_1') == (1, 1, 24, 58)
  assert kernel('stage2_0', 'branch2_0') == (1, 1, 24, 58)
  assert kernel('stage2_1', 'branch2_0') == (1, 1, 58, 58)
  assert kernel('stage2_1', 'branch2_1') == (3, 3, 1, 58)
  assert 'branch1_0' not in params['stage2_1']
  inter = variables['intermediates']['stage2_0']
  assert inter['branch2_0']['__call__'][0].shape[1:3] == (56, 56)
  assert inter['branch2_1']['__call__'][0].shape[1:3] == (28, 28)
  assert params['fc']['bias'].shape == (1000,)


def _normal(*shape):
  """Test inputs from numpy: jax.random would compile a sampler for every shape."""
  return jnp.asarray(np.random.default_rng(1).standard_normal(shape, dtype=np.float32))


def _unit_fn(unit, x, bn_bias=0.0):
  """(jitted eval-mode apply of `unit`, random variables): weights drawn with numpy from the
  init's shapes (which saves compiling the init), BN statistics 0 and 1, BN biases `bn_bias`."""
  rng = np.random.default_rng(0)
  fill = {'mean': np.zeros, 'var': np.ones, 'bias': lambda shape: np.full(shape, bn_bias)}
  variables = jax.tree_util.tree_map_with_path(
      lambda path, leaf: fill.get(path[-1].key, lambda shape: 0.5 * rng.standard_normal(shape))(
          leaf.shape
      ).astype(np.float32),
      jax.eval_shape(unit.init, FAST_KEY, x),
  )
  return fast_jit(functools.partial(unit.apply, train=False)), variables


def _dependence(unit, x, groups):
  """[i, j]: whether perturbing input channel group j changes output channel group i.

  BN biases of 100 keep every ReLU open, so no path is cut by a dead unit."""
  apply, variables = _unit_fn(unit, x, bn_bias=100.0)
  base = np.asarray(apply(variables, x))
  size = x.shape[-1] // groups
  depends = np.zeros((groups, groups), bool)
  for j in range(groups):
    bumped = np.asarray(apply(variables, x.at[..., j * size : (j + 1) * size].add(3.0)))
    changed = np.abs(bumped - base).reshape(*base.shape[:-1], groups, size).max(axis=(0, 1, 2, 4))
    depends[:, j] = changed > 0
  return depends


def test_v1_channel_shuffle_lets_every_group_see_every_group(monkeypatch):
  unit = shufflenet.ShuffleUnitV1(48, strides=1, groups=3, first_groups=3)
  x = _normal(1, 4, 4, 48)
  assert _dependence(unit, x, 3).all()
  # Without the shuffle the two grouped 1×1 convs keep the groups apart.
  monkeypatch.setattr(shufflenet.layers, 'channel_shuffle', lambda y, groups: y)
  assert (_dependence(unit, x, 3) == np.eye(3, dtype=bool)).all()


def test_v1_stride_two_unit_concatenates_the_average_pooled_input():
  unit = shufflenet.ShuffleUnitV1(48, strides=2, groups=3, first_groups=1)
  x = jnp.abs(_normal(1, 4, 4, 12))  # post-ReLU inputs
  apply, variables = _unit_fn(unit, x)
  out = np.asarray(apply(variables, x))
  assert out.shape == (1, 2, 2, 48)
  # 3×3/2 average pool with padding 1, padding counted (PyTorch's count_include_pad).
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  pooled = np.stack(
      [
          np.stack(
              [padded[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].sum((0, 1)) / 9 for j in range(2)]
          )
          for i in range(2)
      ]
  )
  np.testing.assert_allclose(out[0, ..., :12], pooled, rtol=1e-5, atol=1e-6)


def test_v2_channel_split_passes_the_first_half_through():
  unit = shufflenet.ShuffleUnitV2(16, strides=1)
  x = _normal(1, 4, 4, 16)
  apply, variables = _unit_fn(unit, x)
  out = np.asarray(apply(variables, x))
  # After the 2-group shuffle, even channels are the untouched first half of the input.
  np.testing.assert_array_equal(out[..., 0::2], np.asarray(x[..., :8]))
  # The branch (odd channels) reads only the second half.
  first = np.asarray(apply(variables, x.at[..., :8].add(3.0)))
  second = np.asarray(apply(variables, x.at[..., 8:].add(3.0)))
  np.testing.assert_array_equal(first[..., 1::2], out[..., 1::2])
  np.testing.assert_array_equal(second[..., 0::2], out[..., 0::2])
  assert not np.array_equal(second[..., 1::2], out[..., 1::2])


def test_widths_that_do_not_split_into_groups_are_rejected():
  with pytest.raises(ValueError, match='do not split into 2 groups'):
    count('shufflenet_v1_g2', 64, width_multiplier=0.5)
  with pytest.raises(ValueError, match='no groups=5'):
    count('shufflenet_v1_g3', 64, groups=5)


def test_config_variants_build_their_model_with_megviis_recipe():
  for variant in shufflenet_imagenet.VARIANTS:
    config = shufflenet_imagenet.get_config(variant)
    assert config.model.name == variant
  config = shufflenet_imagenet.get_config('shufflenet_v1_g8')
  assert (config.batch_size, config.optimizer.lr, config.optimizer.weight_decay) == (
      1024,
      0.5,
      4e-5,
  )
  assert config.label_smoothing == 0.1 and not config.optimizer.decay_norm_and_bias


# Every name once through the trainer's train and eval steps with two units in stage 2 (one
# stride 2, one stride 1) and the other stages dropped.
@pytest.mark.parametrize('name', V1 + V2)
def test_train_and_eval_step(name):
  train_and_eval_step(name, 32, stage_repeats=(2, 0, 0))
