"""SqueezeNet v1.0 / v1.1: published counts and mult-adds, pooling layout, Fire modules, bypass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, count, fast_jit, macs, shapes, train_and_eval_step

import models
from models import squeezenet


def test_parameter_counts_and_mult_adds_match_torchvision():
  assert count('squeezenet1_0', 224) == 1_248_424  # docs/published_figures.md (torchvision)
  assert count('squeezenet1_1', 224) == 1_235_496  # torchvision's model card
  assert round(macs('squeezenet1_0', 224) / 1e9, 3) == 0.819  # docs/published_figures.md
  # Derived: 349.2 M for v1.1, 2.35× fewer (the authors' v1.1 README says "2.4x less").
  assert macs('squeezenet1_1', 224) == 349_151_936


@pytest.mark.parametrize('name,conv1_width', [('squeezenet1_0', 96), ('squeezenet1_1', 64)])
def test_bypass_variants_add_shortcuts_where_the_paper_puts_them(name, conv1_width):
  plain = count(name, 224)
  assert count(name, 224, bypass='simple') == plain  # identity shortcuts: no parameters
  # Complex: 1×1 convs with bias around fire2 (conv1 → 128), fire4 (128 → 256), fire6
  # (256 → 384) and fire8 (384 → 512). Derived: 341,248 more for v1.0, 337,152 for v1.1.
  extra = sum(i * o + o for i, o in [(conv1_width, 128), (128, 256), (256, 384), (384, 512)])
  assert count(name, 224, bypass='complex') == plain + extra
  params = abstract(name, 224, bypass='complex')['params']
  assert [n for n in range(2, 10) if 'bypass' in params[f'fire{n}']] == [2, 4, 6, 8]
  assert params['fire2']['bypass']['kernel'].shape == (1, 1, conv1_width, 128)


def test_layout_pool_positions_and_ceil_mode_pooling():
  _, v10 = shapes('squeezenet1_0', 224)
  assert v10['conv1'] == (1, 109, 109, 96)  # 7×7/2, no padding
  # Pools after conv1, fire4 and fire8; ceil mode pools fire4's 54×54 to 27×27 (floor: 26).
  assert [v10[f'fire{n}'][1] for n in range(2, 10)] == [54, 54, 54, 27, 27, 27, 27, 13]
  assert [v10[f'fire{n}'][-1] for n in range(2, 10)] == [128, 128, 256, 256, 384, 384, 512, 512]
  variables, v11 = shapes('squeezenet1_1', 224)
  assert v11['conv1'] == (1, 111, 111, 64)  # 3×3/2
  assert [v11[f'fire{n}'][1] for n in range(2, 10)] == [55, 55, 27, 27, 13, 13, 13, 13]
  assert v11['conv10'] == (1, 13, 13, 1000)
  params = variables['params']
  assert params['fire9']['squeeze']['kernel'].shape == (1, 1, 512, 64)
  assert params['fire9']['expand3x3']['kernel'].shape == (3, 3, 64, 256)
  assert params['fire9']['expand1x1']['bias'].shape == (256,)  # every conv has a bias
  assert params['conv10']['kernel'].shape == (1, 1, 512, 1000)
  assert 'batch_stats' not in variables


def test_smallest_inputs_are_torchvisions():
  assert squeezenet.min_input_size(7, 3) == 21 and squeezenet.min_input_size(3, 3) == 17
  assert shapes('squeezenet1_0', 21)[1]['fire9'] == (1, 1, 1, 512)
  with pytest.raises(ValueError, match='at least 17×17 pixels, got 16×16'):
    abstract('squeezenet1_1', 16)
  with pytest.raises(ValueError, match='at most 8 Fire modules'):
    abstract('squeezenet1_0', 224, stage_sizes=(3, 4, 2))
  with pytest.raises(ValueError, match="Unknown bypass 'full'"):
    abstract('squeezenet1_0', 224, bypass='full')


def test_fire_modules_bypasses_and_torchvision_initialisation():
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype(np.float32)
  fire = functools.partial(squeezenet.Fire, 4, 8, 8)
  model = models.create_model('squeezenet1_1', num_classes=1000, stage_sizes=(1,))

  @fast_jit  # one compile for the whole test
  def run(key, x):
    plain, variables = fire().init_with_output(key, x, capture_intermediates=True)
    inter = variables.pop('intermediates')
    simple = fire(bypass='identity').apply(variables, x)
    complex_, with_conv = fire(bypass='conv').init_with_output(key, x, capture_intermediates=True)
    return {
        'plain': plain,
        'e1': inter['expand1x1']['__call__'][0],
        'e3': inter['expand3x3']['__call__'][0],
        'simple': simple,
        'complex': complex_,
        'bypass': with_conv['intermediates']['bypass']['__call__'][0],
        'bypass_kernel': with_conv['params']['bypass']['kernel'],
        'net': model.init(key, jnp.zeros((1, 9, 9, 3)))['params'],
    }

  out = run(FAST_KEY, x)
  plain = out['plain']
  assert plain.shape == (2, 5, 5, 16)
  np.testing.assert_array_equal(plain[..., :8], np.maximum(out['e1'], 0))  # 1×1 branch first
  np.testing.assert_array_equal(plain[..., 8:], np.maximum(out['e3'], 0))  # then the 3×3
  np.testing.assert_allclose(out['simple'], plain + x, atol=1e-6)
  # Same key, same Fire weights; the complex bypass adds a 1×1 conv of the input.
  assert out['bypass_kernel'].shape == (1, 1, 16, 16)
  np.testing.assert_allclose(out['complex'], plain + out['bypass'], atol=1e-6)
  # torchvision's init: zero biases, conv10 N(0, 0.01), kaiming_uniform_ U(±sqrt(6 / fan_in)).
  params = out['net']
  assert all(
      not np.any(b) for p, b in jax.tree_util.tree_leaves_with_path(params) if p[-1].key == 'bias'
  )
  assert abs(float(np.std(params['conv10']['kernel'])) - 0.01) < 5e-4
  bound = np.sqrt(6 / (9 * 16))  # fire2's expand3x3: fan_in = 3·3·16
  assert 0.95 * bound < np.abs(params['fire2']['expand3x3']['kernel']).max() <= bound


def test_every_squeezenet_trains_and_evaluates():
  # conv1, one pool and fire2; v1.0 with the complex bypass's 1×1 conv around fire2.
  train_and_eval_step('squeezenet1_0', 32, stage_sizes=(1,), bypass='complex')
  train_and_eval_step('squeezenet1_1', 32, stage_sizes=(1,))
