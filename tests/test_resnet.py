"""ResNet: torchvision's ImageNet models and the CIFAR models of He et al. 2016.

Full-size models are only traced (jax.eval_shape); compute runs on reduced depths.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, fast_jit
from model_testing import count as param_count

import models
from models import layers, resnet
from train_lib.state import num_params


def _normal(*shape):
  return np.random.default_rng(1).standard_normal(shape, dtype=np.float32)


def _relu(x):
  return np.maximum(np.asarray(x), 0.0)


def _out(tree, *path):
  """The output (shape or value) that `capture_intermediates` recorded for a submodule."""
  for key in path:
    tree = tree[key]
  return tree['__call__'][0]


# torchvision's model cards (resnet18 and resnet50 also in docs/published_figures.md).
@pytest.mark.parametrize(
    'name,count',
    [
        ('resnet18', 11_689_512),
        ('resnet34', 21_797_672),
        ('resnet50', 25_557_032),
        ('resnet101', 44_549_160),
        ('resnet152', 60_192_808),
    ],
)
def test_imagenet_parameter_counts_match_torchvision(name, count):
  assert param_count(name, 224) == count


def test_only_the_head_depends_on_the_number_of_classes():
  assert param_count('resnet18', 224, num_classes=10) == 11_181_642  # docs/published_figures.md
  assert 11_689_512 - 11_181_642 == 990 * (512 + 1)


def test_groups_and_width_per_group_give_torchvisions_resnext_and_wide_resnet():
  # docs/published_figures.md: resnext50_32x4d and wide_resnet50_2, torchvision's settings of
  # these fields.
  assert param_count('resnet50', 224, groups=32, width_per_group=4) == 25_028_904
  assert param_count('resnet50', 224, width_per_group=128) == 68_883_240
  params = abstract('resnet50', 224, groups=32, width_per_group=4)['params']
  # Inner width int(64 · 4/64) · 32 = 128; the grouped 3×3 sees 128/32 = 4 input channels.
  assert params['layer1_0']['conv2']['kernel'].shape == (3, 3, 4, 128)
  assert params['layer1_0']['conv3']['kernel'].shape == (1, 1, 128, 256)
  with pytest.raises(ValueError, match='BasicBlock only supports groups=1'):
    abstract('resnet18', 64, groups=2)


# Option A, 10 classes: resnet20 docs/published_figures.md; the others
# akamaster/pytorch_resnet_cifar10.
# The paper (Table 6) rounds them to 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
@pytest.mark.parametrize(
    'name,count,paper_millions,digits',
    [
        ('resnet20', 269_722, 0.27, 2),
        ('resnet32', 464_154, 0.46, 2),
        ('resnet44', 658_586, 0.66, 2),
        ('resnet56', 853_018, 0.85, 2),
        ('resnet110', 1_727_962, 1.7, 1),
    ],
)
def test_cifar_parameter_counts_match_the_paper(name, count, paper_millions, digits):
  assert param_count(name, 32, num_classes=10) == count
  assert round(count / 1e6, digits) == paper_millions
  # Option B adds a 1×1 conv + BN where the width doubles: 16→32 and 32→64.


@pytest.mark.parametrize('name,count', [('resnet20', 269_722), ('resnet110', 1_727_962)])
def test_cifar_option_b_adds_projections_where_the_width_doubles(name, count):
  # A 1×1 conv + BN at 16→32 and at 32→64: 2,752 parameters, whatever the depth.
  assert param_count(name, 32, num_classes=10, shortcut='B') == count + (16 * 32 + 2 * 32) + (
      32 * 64 + 2 * 64
  )


def test_resnet50_stage_outputs_and_projection_shortcuts():
  inter = abstract('resnet50', 224)['intermediates']
  params = abstract('resnet50', 224)['params']
  assert _out(inter, 'conv1').shape == (1, 112, 112, 64)
  for stage, (size, blocks) in enumerate([(56, 3), (28, 4), (14, 6), (7, 3)], start=1):
    for index in range(blocks):
      assert _out(inter, f'layer{stage}_{index}').shape == (1, size, size, 256 * 2 ** (stage - 1))
      # A projection exactly where the shape changes: the first block of every stage.
      assert ('downsample_conv' in params[f'layer{stage}_{index}']) == (index == 0)
  assert 'layer3_6' not in params and 'layer4_3' not in params
  assert _out(inter, 'fc').shape == (1, 1000)
  assert params['layer2_0']['downsample_conv']['kernel'].shape == (1, 1, 256, 512)


def test_resnet18_uses_basic_blocks_and_keeps_the_width_in_stage_one():
  inter = abstract('resnet18', 224)['intermediates']
  params = abstract('resnet18', 224)['params']
  for stage, size in enumerate([56, 28, 14, 7], start=1):
    assert _out(inter, f'layer{stage}_1').shape == (1, size, size, 64 * 2 ** (stage - 1))
  assert set(params['layer1_0']) == {'conv1', 'bn1', 'conv2', 'bn2'}  # 64 → 64: identity
  assert set(params['layer2_0']) == {
      'conv1',
      'bn1',
      'conv2',
      'bn2',
      'downsample_conv',
      'downsample_bn',
  }
  assert params['layer3_0']['conv1']['kernel'].shape == (3, 3, 128, 256)


@pytest.mark.parametrize('stride_on_3x3,conv1_size,conv2_size', [(True, 56, 28), (False, 28, 28)])
def test_stride_sits_on_the_3x3_in_v1_5_and_on_the_first_1x1_in_the_paper(
    stride_on_3x3, conv1_size, conv2_size
):
  shapes = abstract('resnet50', 224, stage_sizes=(1, 1, 1, 1), stride_on_3x3=stride_on_3x3)
  block = shapes['intermediates']['layer2_0']
  assert _out(block, 'conv1').shape == (1, conv1_size, conv1_size, 128)
  assert _out(block, 'conv2').shape == (1, conv2_size, conv2_size, 128)
  assert _out(block, 'downsample_conv').shape == (1, 28, 28, 512)
  # Same weights either way: the stride moves, the kernels do not.
  kernels = shapes['params']['layer2_0']
  assert (kernels['conv1']['kernel'].shape, kernels['conv2']['kernel'].shape) == (
      (1, 1, 256, 128),
      (3, 3, 128, 128),
  )


def test_half_precision_keeps_float32_parameters_and_logits():
  model = models.create_model('resnet20', num_classes=10, dtype=jnp.bfloat16)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert jax.eval_shape(model.apply, variables, x).dtype == jnp.float32
  inter = abstract('resnet20', 32, num_classes=10, dtype=jnp.bfloat16)['intermediates']
  assert _out(inter, 'layer2_0', 'conv1').dtype == jnp.bfloat16


def test_option_a_shortcut_subsamples_and_zero_pads_without_parameters():
  x = jnp.arange(1 * 4 * 4 * 2, dtype=jnp.float32).reshape(1, 4, 4, 2) + 1
  out = layers.zero_pad_shortcut(x, 4, 2)
  assert out.shape == (1, 2, 2, 4)
  np.testing.assert_array_equal(out[..., :2], x[:, ::2, ::2, :])  # 1×1 stride-2 sampling
  np.testing.assert_array_equal(out[..., 2:], 0.0)
  block = lambda kind: resnet.BasicBlock(4, strides=2, shortcut=kind)
  params_a = jax.eval_shape(block('A').init, jax.random.key(0), x)['params']
  params_b = jax.eval_shape(block('B').init, jax.random.key(0), x)['params']
  assert set(params_a) == {'conv1', 'bn1', 'conv2', 'bn2'}
  assert num_params(params_b) - num_params(params_a) == 2 * 4 + 2 * 4  # 1×1 conv + BN
  with pytest.raises(ValueError, match="Unknown shortcut 'C'"):
    jax.eval_shape(block('C').init, jax.random.key(0), x)


def test_bad_depth_and_block_names_are_refused():
  with pytest.raises(ValueError, match='6n \\+ 2'):
    abstract('resnet20', 32, depth=21)
  with pytest.raises(ValueError, match="Unknown block 'bottle'"):
    abstract('resnet50', 64, block='bottle')


def _check_blocks_output_relu_of_shortcut(inter, block_input, shortcut_fn, num_blocks):
  """Every block's recorded output equals relu(its shortcut), although its branch computed."""
  names = sorted(k for k in inter if k.startswith('layer'))
  assert len(names) == num_blocks
  for name in names:
    out = _out(inter, name)
    assert np.abs(_out(inter[name], 'conv1')).max() > 0.1  # the branch is not idle
    np.testing.assert_allclose(
        out, _relu(shortcut_fn(inter[name], block_input, out.shape[-1])), atol=1e-5, err_msg=name
    )
    block_input = out


def test_zero_init_residual_makes_every_bottleneck_output_relu_of_its_shortcut():
  # Two stages: a projection without stride (64 → 256), an identity, a strided projection.
  model = models.create_model(
      'resnet50', num_classes=10, stage_sizes=(2, 1), zero_init_residual=True
  )
  x = _normal(2, 16, 16, 3)

  @fast_jit
  def run(key, x):
    _, variables = model.init_with_output(key, x, capture_intermediates=True)
    # The first block's input: max pool of relu(bn1(conv1)), from the recorded BN output.
    bn1 = _out(variables['intermediates'], 'bn1')
    return variables, nn.max_pool(nn.relu(bn1), (3, 3), (2, 2), ((1, 1), (1, 1)))

  variables, stem = run(FAST_KEY, x)  # init runs in eval mode: BN uses its initial mean 0, var 1
  params, inter = variables['params'], variables['intermediates']
  assert not np.any(params['layer1_1']['bn3']['scale'])  # zeroed: the branch's last BN
  assert np.all(params['layer1_1']['bn2']['scale'] == 1)
  assert np.all(params['layer2_0']['downsample_bn']['scale'] == 1)

  def shortcut(block, block_input, _):
    return _out(block, 'downsample_bn') if 'downsample_bn' in block else block_input

  _check_blocks_output_relu_of_shortcut(inter, stem, shortcut, num_blocks=3)


def test_option_a_network_with_zero_init_and_batch_norm_in_training_and_eval():
  model = models.create_model('resnet20', num_classes=10, depth=8, zero_init_residual=True)
  x = 2.0 + _normal(4, 16, 16, 3)

  @fast_jit
  def run(key, x):
    eval_out, variables = model.init_with_output(key, x, capture_intermediates=True)
    variables = dict(variables)
    inter = variables.pop('intermediates')
    train_out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return eval_out, train_out, variables, inter, updates

  eval_out, train_out, variables, inter, updates = run(FAST_KEY, x)

  def shortcut(block, block_input, features):
    assert 'downsample_conv' not in block  # option A: no parameters anywhere
    strides = block_input.shape[1] // _out(block, 'conv1').shape[1]
    return layers.zero_pad_shortcut(block_input, features, strides)

  _check_blocks_output_relu_of_shortcut(inter, _relu(_out(inter, 'bn1')), shortcut, num_blocks=3)
  # BatchNorm: batch statistics in training, running averages in eval.
  assert train_out.shape == eval_out.shape == (4, 10)
  assert not np.allclose(train_out, eval_out, atol=1e-3)
  moved = jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()), updates['batch_stats'], variables['batch_stats']
  )
  assert max(jax.tree.leaves(moved)) > 0.01  # running averages were updated


def test_se_reduction_acts_on_the_residual_branch_before_the_addition():
  x = _normal(2, 8, 8, 64)
  block = resnet.BottleneckBlock(16, se_reduction=4)

  @fast_jit
  def run(key, x):
    variables = block.init(key, x)
    se = variables['params']['se']
    closed = {**se, 'fc2': {**se['fc2'], 'bias': se['fc2']['bias'] - 1e4}}  # sigmoid gate → 0
    return variables, block.apply({**variables, 'params': {**variables['params'], 'se': closed}}, x)

  variables, out = run(FAST_KEY, x)
  assert variables['params']['se']['fc1']['kernel'].shape == (64, 64 // 4)
  # The closed gate shuts the branch, leaving relu(identity shortcut).
  np.testing.assert_allclose(out, _relu(x), atol=1e-6)
  params = abstract('resnet18', 64, stage_sizes=(1, 1, 1, 1), se_reduction=8)['params']
  assert all(
      params[f'layer{s}_0']['se']['fc1']['kernel'].shape == (64 * 2 ** (s - 1), 8 * 2 ** (s - 1))
      for s in range(1, 5)
  )
  assert 'se' not in abstract('resnet18', 64, stage_sizes=(1, 1, 1, 1))['params']['layer1_0']


@pytest.mark.parametrize('name, size', [('resnet20', 16), ('resnet18', 32), ('resnet50', 32)])
def test_plain_nets_drop_the_shortcuts_and_each_block_outputs_relu_of_its_branch(name, size):
  small = {'depth': 8} if name == 'resnet20' else {'stage_sizes': (1, 1)}
  model = models.create_model(name, num_classes=10, residual=False, **small)
  x = _normal(2, size, size, 3)

  @fast_jit
  def run(key, x):
    return model.init_with_output(key, x, capture_intermediates=True)[1]

  variables = run(FAST_KEY, x)
  # The same layers, less the projection shortcuts (option B) where the shape changes.
  residual = jax.tree.map(jnp.shape, abstract(name, size, num_classes=10, **small)['params'])
  projections = [(b, k) for b, layer in residual.items() for k in layer if k.startswith('down')]
  assert bool(projections) == (name != 'resnet20')
  for block, key in projections:
    del residual[block][key]
  assert jax.tree.map(jnp.shape, variables['params']) == residual
  inter = variables['intermediates']
  blocks = sorted(k for k in inter if k.startswith('layer'))
  assert len(blocks) == (3 if name == 'resnet20' else 2)
  for block in blocks:
    last = 'bn2' if 'bn3' not in inter[block] else 'bn3'
    np.testing.assert_allclose(
        _out(inter, block), _relu(_out(inter, block, last)), atol=1e-6, err_msg=block
    )


def test_a_plain_net_with_zero_init_residual_is_refused():
  with pytest.raises(ValueError, match='without shortcuts'):
    abstract('resnet20', 16, residual=False, zero_init_residual=True)
