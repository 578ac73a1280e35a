"""Inception v3 (torchvision's) and BN-Inception (Cadene's pretrainedmodels port).

Full-size models are only traced (jax.eval_shape); compute runs at small inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from digit_steps import train_losses
from model_testing import FAST_KEY, count, fast_jit, shapes, train_and_eval_step

import models
from configs import inception_imagenet
from models import fast_conv, inception
from train_lib import schedules
from train_lib.state import num_params

RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}


@functools.cache
def _train_abstract(name, size, **fields):
  """eval_shape of init and of a training forward pass: aux heads get parameters and sow."""
  model = models.create_model(name, num_classes=1000, **fields)
  x = jnp.zeros((1, size, size, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=True), RNGS, x)
  apply = functools.partial(
      model.apply,
      train=True,
      rngs=RNGS,
      capture_intermediates=True,
      mutable=['batch_stats', 'intermediates'],
  )
  _, state = jax.eval_shape(apply, variables, x)
  return variables, state['intermediates']


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0].shape


# --- Inception v3 -----------------------------------------------------------------------------


def test_inception_v3_parameter_counts():
  variables, _ = _train_abstract('inception_v3', 299)
  # torchvision, with aux (docs/published_figures.md).
  assert num_params(variables['params']) == 27_161_264
  # The aux head: conv0 768·128 + BN 256, conv1 25·128·768 + BN 1536, fc 768·1000 + 1000
  # = 98_560 + 2_459_136 + 769_000 = 3_326_696; without it 23_834_568 (timm's inception_v3).
  assert num_params(variables['params']['aux']) == 3_326_696
  assert count('inception_v3', 299) == 27_161_264 - 3_326_696 == 23_834_568
  # Keras InceptionV3's trainable count (BatchNorm without γ), checked with
  # keras.applications.InceptionV3(weights=None): 17_216 fewer, one γ per BN channel.
  assert count('inception_v3', 299, bn_scale=False) == 23_817_352 == 23_834_568 - 17_216


def test_inception_v3_grid_sizes_and_factorised_kernels_at_299():
  variables, out = shapes('inception_v3', 299)
  assert [
      out[n][1:]
      for n in ('conv2d_1a_3x3', 'conv2d_2a_3x3', 'conv2d_2b_3x3', 'conv2d_3b_1x1', 'conv2d_4a_3x3')
  ] == [(149, 149, 32), (147, 147, 32), (147, 147, 64), (73, 73, 80), (71, 71, 192)]
  assert out['mixed_5b'][1:] == (35, 35, 256)
  assert out['mixed_5c'][1:] == out['mixed_5d'][1:] == (35, 35, 288)
  for name in ('6a', '6b', '6c', '6d', '6e'):
    assert out[f'mixed_{name}'][1:] == (17, 17, 768)
  assert out['mixed_7a'][1:] == (8, 8, 1280)
  assert out['mixed_7b'][1:] == out['mixed_7c'][1:] == (8, 8, 2048)
  assert out['fc'] == (1, 1000) and 'aux' not in variables['params']  # eval: no aux head
  params = variables['params']
  # 17×17 modules: 7×7 factorised into 1×7 and 7×1, c7 = 128, 160, 160, 192.
  assert [
      params[f'mixed_{n}']['branch7x7_1']['conv']['kernel'].shape[-1]
      for n in ('6b', '6c', '6d', '6e')
  ] == [128, 160, 160, 192]
  assert params['mixed_6b']['branch7x7_2']['conv']['kernel'].shape == (1, 7, 128, 128)
  assert params['mixed_6b']['branch7x7_3']['conv']['kernel'].shape == (7, 1, 128, 192)
  assert params['mixed_6b']['branch7x7dbl_2']['conv']['kernel'].shape == (7, 1, 128, 128)
  # 8×8 modules: the 3×3 outputs split into parallel 1×3 and 3×1 convolutions.
  assert params['mixed_7b']['branch3x3_2a']['conv']['kernel'].shape == (1, 3, 384, 384)
  assert params['mixed_7b']['branch3x3_2b']['conv']['kernel'].shape == (3, 1, 384, 384)
  assert params['mixed_7c']['branch3x3dbl_3b']['conv']['kernel'].shape == (3, 1, 384, 384)
  # The 35 → 17 reduction: stride-2 3×3 convs next to a max pool that passes 288 channels.
  assert params['mixed_6a']['branch3x3']['conv']['kernel'].shape == (3, 3, 288, 384)
  assert 384 + 96 + 288 == 768


def test_inception_v3_aux_head_runs_on_mixed_6e_in_training_only():
  variables, sown = _train_abstract('inception_v3', 299)
  assert _out(sown, 'aux', 'conv0') == (1, 5, 5, 128)  # 17×17 pooled 5×5 / 3
  assert _out(sown, 'aux', 'conv1') == (1, 1, 1, 768)  # the 5×5 conv
  assert sown['aux']['aux_logits'][0].shape == (1, 1000)
  model = models.create_model('inception_v3', num_classes=1000)
  _, state = jax.eval_shape(
      functools.partial(model.apply, mutable=['intermediates']),
      variables,
      jnp.zeros((1, 299, 299, 3)),
  )
  assert not state.get('intermediates')  # eval sows nothing
  # Below 299 px Mixed_6e is smaller than 17×17 and the head's 5×5 conv has nothing to see.
  with pytest.raises(ValueError, match='at least 17×17'):
    _train_abstract('inception_v3', 107)
  variables, sown = _train_abstract('inception_v3', 107, aux_logits=False)
  assert 'aux' not in variables['params'] and 'aux' not in sown


def test_basic_conv2d_is_conv_without_bias_then_batch_norm_eps_1e_3_then_relu():
  block = inception.BasicConv2d(4, (1, 3), padding=(0, 1))
  x = np.random.default_rng(0).standard_normal((2, 3, 5, 2)).astype(np.float32)
  variables = block.init(jax.random.key(0), x)
  assert set(variables['params']['conv']) == {'kernel'}
  kernel = np.asarray(variables['params']['conv']['kernel'])
  assert kernel.shape == (1, 3, 2, 4)
  y, _ = block.apply(variables, x, train=True, mutable=['batch_stats'])
  padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (0, 0)])
  conv = sum(np.einsum('nhwc,co->nhwo', padded[:, :, k : k + 5], kernel[0, k]) for k in range(3))
  mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  np.testing.assert_allclose(y, np.maximum((conv - mean) / np.sqrt(var + 1e-3), 0), atol=1e-5)


def test_inception_v3_aux_head_trains_at_its_smallest_input():
  """The head alone on 17×17 maps (what Mixed_6e gives at 299 px), with torchvision's init."""
  head = inception.InceptionAux(3)
  x = jax.random.normal(jax.random.key(1), (2, 17, 17, 8))
  # Default optimisation for init: at -O0 its 2.5M random values take longer than compiling.
  params = jax.jit(head.init)(FAST_KEY, x)['params']
  assert abs(float(jnp.std(params['conv1']['conv']['kernel'])) - 0.01) < 5e-4
  assert abs(float(jnp.std(params['fc']['kernel'])) - 0.001) < 2e-4

  def loss(params, x):
    logits, state = head.apply(
        {'params': params}, x, train=True, mutable=['batch_stats', 'intermediates']
    )
    return jnp.sum(logits**2), (logits, state['intermediates']['aux_logits'][0])

  grads, (logits, sown) = fast_jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  np.testing.assert_array_equal(logits, sown)
  assert logits.shape == (2, 3)
  assert float(jnp.abs(grads[0]['conv0']['conv']['kernel']).max()) > 0
  assert float(jnp.abs(grads[1]).max()) > 0  # reaches Mixed_6e through the 5×5 / 3 pool


def test_inception_v3_train_and_eval_step():
  # 107 px is the smallest input that leaves Mixed_7a–7c at 2×2 (75 px gives 1×1, where BN over
  # a batch of 2 normalises two numbers and the gradient explodes); the aux head needs 299 px.
  train_and_eval_step('inception_v3', 107, aux_logits=False)


# --- BN-Inception -----------------------------------------------------------------------------

BLOCKS = ('3a', '3b', '3c', '4a', '4b', '4c', '4d', '4e', '5a', '5b')
# Figure 5 of Ioffe & Szegedy 2015, transcribed: pooling per module and the concatenated width
# that its columns add up to (the figure prints 576 for 4c/4d and 1024 for 4e; the columns and
# the Caffe port give 608 and 1056).
FIGURE5_POOL = {
    '3a': 'avg',
    '3b': 'avg',
    '3c': 'max',
    '4a': 'avg',
    '4b': 'avg',
    '4c': 'avg',
    '4d': 'avg',
    '4e': 'max',
    '5a': 'avg',
    '5b': 'max',
}
WIDTHS = {
    '3a': 256,
    '3b': 320,
    '3c': 576,
    '4a': 576,
    '4b': 576,
    '4c': 608,
    '4d': 608,
    '4e': 1056,
    '5a': 1024,
    '5b': 1024,
}


def test_bninception_parameter_counts():
  # Cadene's pretrainedmodels bninception: 11,295,240 in osmr/imgclsmob's model table (and its
  # tests assert it). The paper's "13.6·10⁶ parameters" is not what its Figure 5 widths give.
  assert count('bninception', 224) == 11_295_240
  # Derived: the paper's separable first conv, 7×7 depthwise 3 → 24 (1_176, no bias) and 1×1
  # 24 → 64 (1_600 with bias), instead of the 7×7 conv's 9_472.
  assert count('bninception', 224, separable_stem=True) == 11_295_240 - 9_472 + 1_176 + 1_600


def test_bninception_grid_and_widths_at_224():
  variables, out = shapes('bninception', 224)
  assert out['conv1_7x7_s2'][1:] == (112, 112, 64)
  assert out['conv2_3x3'][1:] == (56, 56, 192)
  sides = [out[f'inception_{b}'][1] for b in BLOCKS]
  assert sides == [28, 28, 14, 14, 14, 14, 14, 7, 7, 7]  # 3c and 4e reduce the grid
  assert {b: out[f'inception_{b}'][3] for b in BLOCKS} == WIDTHS
  params = variables['params']
  # Stride-2 modules: no 1×1 branch and no pool projection; the pooled input passes through.
  for block, in_width in (('3c', 320), ('4e', 608)):
    assert not {'1x1', 'pool_proj'} & set(params[f'inception_{block}'])
    p = params[f'inception_{block}']
    assert (
        p['3x3']['conv']['kernel'].shape[-1]
        + p['double_3x3_2']['conv']['kernel'].shape[-1]
        + in_width
        == WIDTHS[block]
    )
  # GoogLeNet's 5×5 replaced by two 3×3; no conv but the first is larger than 3×3.
  assert params['inception_3a']['double_3x3_1']['conv']['kernel'].shape == (3, 3, 64, 96)
  assert params['inception_3a']['double_3x3_2']['conv']['kernel'].shape == (3, 3, 96, 96)
  kernels = [
      (path[0].key, leaf.shape[0])
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if path[-1].key == 'kernel' and leaf.ndim == 4
  ]
  assert {k for layer, k in kernels if layer == 'conv1_7x7_s2'} == {7}
  assert max(k for layer, k in kernels if layer != 'conv1_7x7_s2') == 3
  assert params['inception_3a']['1x1']['conv']['bias'].shape == (64,)  # the Caffe port's biases
  assert 'batch_stats' in variables


def test_bninception_pooling_per_module_follows_figure5():
  variables, out = shapes('bninception', 224)
  inputs = {
      '3a': (28, 192),
      **{
          b: (out[f'inception_{a}'][1], out[f'inception_{a}'][3])
          for a, b in zip(BLOCKS, BLOCKS[1:])
      },
  }
  for name in BLOCKS:
    side, width = inputs[name]
    block = inception.BNInceptionBlock(inception.BN_INCEPTION_BLOCKS[name])
    block_vars = {
        'params': variables['params'][f'inception_{name}'],
        'batch_stats': variables['batch_stats'][f'inception_{name}'],
    }
    with fast_conv.plain():  # the module as written, not CPU's rewrite of its max pool
      jaxpr = jax.make_jaxpr(block.apply)(block_vars, jnp.zeros((1, side, side, width)))
    prims = [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]
    assert prims.count('reduce_window_max') == (FIGURE5_POOL[name] == 'max'), name
    assert ('reduce_window_sum' in prims) == (FIGURE5_POOL[name] == 'avg'), name


def test_bninception_train_and_eval_step():
  # 64 px leaves 4e–5b at 2×2 (32 px gives 1×1, a degenerate BN over a batch of 2).
  train_and_eval_step('bninception', 64)


# --- Config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'variant, size, every, factor',
    [('inception_v3', 299, 2.0, 0.94), ('bninception', 224, 4 / 3, 0.96)],
)
def test_config_schedule_and_input_size(variant, size, every, factor):
  config = inception_imagenet.get_config(variant)
  assert f'random_resized_crop({size})' in config.dataset.train_preprocess
  assert f'center_crop({size})' in config.dataset.eval_preprocess
  lr = schedules.create_learning_rate_fn(
      config.schedule, 1.0, steps_per_epoch=30, total_steps=config.num_epochs * 30
  )
  step = round(every * 30)
  np.testing.assert_allclose(
      [lr(step - 1), lr(step), lr(3 * step)], [1, factor, factor**3], rtol=1e-6
  )


# --- SE-BN-Inception --------------------------------------------------------------------------


def test_se_bninception_adds_the_se_blocks_of_its_module_widths():
  # Hu et al.'s Caffe SE-BN-Inception: 11,931,622 weights in their prototxt (BatchNorm's
  # scale and shift counted, no conv biases). Each module's SE: C → C/16 → C with biases.
  se = sum(2 * c * (c // 16) + c // 16 + c for c in WIDTHS.values())
  assert se == 646_398
  plain = count('bninception', 224, conv_bias=False)
  assert count('se_bninception', 224) == plain + se == 11_931_622
  # The port's conv biases are all that conv_bias adds: one per output channel of every conv.
  variables, _ = shapes('bninception', 224)
  biases = sum(
      leaf.size
      for path, leaf in jax.tree_util.tree_leaves_with_path(variables['params'])
      if path[-1].key == 'bias' and path[-2].key == 'conv'
  )
  assert count('bninception', 224) - plain == biases == 10_016
  se_params = shapes('se_bninception', 224)[0]['params']
  for block, width in WIDTHS.items():
    gate = se_params[f'inception_{block}']['se']
    assert gate['fc1']['kernel'].shape == (width, width // 16), block
    assert gate['fc2']['kernel'].shape == (width // 16, width), block


def test_se_gate_scales_the_concatenated_module_output():
  # Module 3a on an 8×8 grid: with fc2's kernel zero the gate is sigmoid(fc2's bias) for every
  # channel, so the SE module's output is that fraction of the plain module's.
  x = jax.random.normal(FAST_KEY, (2, 8, 8, 192))
  widths = inception.BN_INCEPTION_BLOCKS['3a']
  plain_block = inception.BNInceptionBlock(widths)
  se_block = inception.BNInceptionBlock(widths, se_reduction=16)
  variables = fast_jit(se_block.init)(jax.random.key(0), x)
  se = variables['params']['se']
  assert se['fc1']['kernel'].shape == (256, 16)
  bias = jnp.linspace(-3.0, 3.0, 256)
  params = {
      **variables['params'],
      'se': {**se, 'fc2': {'kernel': jnp.zeros_like(se['fc2']['kernel']), 'bias': bias}},
  }
  without_se = {k: v for k, v in variables['params'].items() if k != 'se'}
  stats = variables['batch_stats']
  gated = fast_jit(se_block.apply)({'params': params, 'batch_stats': stats}, x)
  plain = fast_jit(plain_block.apply)({'params': without_se, 'batch_stats': stats}, x)
  np.testing.assert_allclose(gated, plain * jax.nn.sigmoid(bias), rtol=1e-5, atol=1e-6)


def test_se_bninception_trains_on_the_offline_digits():
  # Three SGD steps on the same 8 digits at 32 px (4e–5b at 1×1, BatchNorm over a batch of 8).
  # Measured losses: 2.04, 1.61, 1.39.
  history = train_losses('se_bninception', size=32, channels=3, lr=0.01)
  assert history[2] < history[1] < history[0]
