"""Inception-v4 and Inception-ResNet-v1/v2 (Szegedy et al. 2017).

Full-size models are only traced (jax.eval_shape); compute runs on 1-1-1 block repeats at the
smallest input (75 px) and on a tiny residual block.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import abstract, count, fast_jit, train_and_eval_step

import models
from models import inception_v4
from train_lib.state import num_params

NAMES = ('inception_v4', 'inception_resnet_v2', 'inception_resnet_v1')


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0].shape[1:]


def _bn_channels(params) -> int:
  return sum(
      leaf.size
      for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if path[-1].key == 'scale'
  )


# Published counts (1000 classes, BN with γ as timm's port): timm's inception_v4 and
# inception_resnet_v2 (also asserted by pytorchcv's tests; keras-hub's Inception-v4 preset lists
# 42,679,816 too).
@pytest.mark.parametrize(
    'name,published', [('inception_v4', 42_679_816), ('inception_resnet_v2', 55_843_464)]
)
def test_parameter_counts_match_timm(name, published):
  assert count(name, 299) == published


def test_inception_resnet_v2_without_bn_scale_is_keras_and_tf_slim():
  # keras.applications.InceptionResNetV2(weights=None) has 55,813,192 trainable parameters:
  # TF-slim's BN has no γ, one fewer parameter per BN channel (30,272 of them).
  params = abstract('inception_resnet_v2', 299)['params']
  assert _bn_channels(params) == 30_272
  assert num_params(params) - _bn_channels(params) == 55_813_192
  conv = inception_v4.BasicConv(8, 3, bn_scale=False)
  variables = jax.eval_shape(conv.init, jax.random.key(0), jnp.zeros((1, 5, 5, 4)))
  assert set(variables['params']['bn']) == {'bias'}


def test_inception_resnet_v1_parameter_count_derived_from_the_paper():
  # No published ImageNet count: derived from Figs. 14, 10, 7, 11, 12, 13 and Table 1 (k, l, m,
  # n = 192, 192, 256, 384). A conv k×k c→d costs k²·c·d + 2d (BN β, γ); the up-projections
  # c→d cost c·d + d (bias, no BN).
  # Stem: 3·3·3·32 + 9·32·32 + 9·32·64 + 64·80 + 9·80·192 + 9·192·256 (+ BN) = 615,552.
  # Block A (256): 256·32 ×3 (1×1s) + 9·32·32 ×3 + up 96·256 (+ BN, bias) = 77,440; ×5.
  # Reduction-A (256 → 896): 9·256·384 + 256·192 + 9·192·192 + 9·192·256 (+ BN) = 1,710,080.
  # Block B (896): 896·128 ×2 + 7·128·128 ×2 + up 256·896 = 690,048; ×10.
  # Reduction-B (896 → 1792): 896·256 ×3 + 9·256·384 + 9·256·256 ×3 (+ BN) = 3,346,176.
  # Block C (1792): 1792·192 ×2 + 3·192·192 ×2 + up 384·1792 = 1,600,768; ×5.
  # fc 1792·1000 + 1000 = 1,793,000. Total 22,756,328.
  params = abstract('inception_resnet_v1', 299)['params']
  assert {
      name: num_params(params[name])
      for name in ('block35_0', 'mixed_6a', 'block17_0', 'mixed_7a', 'block8_0', 'fc')
  } == {
      'block35_0': 77_440,
      'mixed_6a': 1_710_080,
      'block17_0': 690_048,
      'mixed_7a': 3_346_176,
      'block8_0': 1_600_768,
      'fc': 1_793_000,
  }
  assert (
      num_params(params)
      == (615_552 + 5 * 77_440 + 1_710_080 + 10 * 690_048 + 3_346_176 + 5 * 1_600_768 + 1_793_000)
      == 22_756_328
  )


def test_inception_v4_grid_sizes_follow_figures_3_and_9():
  variables = abstract('inception_v4', 299)
  out, params = variables['intermediates'], variables['params']
  assert [
      _out(out, n)
      for n in ('conv2d_1a', 'conv2d_2a', 'conv2d_2b', 'mixed_3a', 'mixed_4a', 'mixed_5a')
  ] == [(149, 149, 32), (147, 147, 32), (147, 147, 64), (73, 73, 160), (71, 71, 192), (35, 35, 384)]
  blocks = {'a': (4, (35, 35, 384)), 'b': (7, (17, 17, 1024)), 'c': (3, (8, 8, 1536))}
  for kind, (repeats, shape) in blocks.items():
    assert [_out(out, f'inception_{kind}_{i}') for i in range(repeats)] == [shape] * repeats
    assert f'inception_{kind}_{repeats}' not in params
  assert _out(out, 'reduction_a') == (17, 17, 1024) and _out(out, 'reduction_b') == (8, 8, 1536)
  # Factorised 7×7 (1×7 then 7×1) in B; C's second tower runs 3×1 (448) then 1×3 (512).
  b, c = params['inception_b_0'], params['inception_c_0']
  assert b['branch1_1']['conv']['kernel'].shape == (1, 7, 192, 224)
  assert b['branch1_2']['conv']['kernel'].shape == (7, 1, 224, 256)
  assert c['branch2_1']['conv']['kernel'].shape == (3, 1, 384, 448)
  assert c['branch2_2']['conv']['kernel'].shape == (1, 3, 448, 512)
  assert 'bias' not in b['branch0']['conv'] and b['branch0']['bn']['scale'].shape == (384,)
  # Reduction-A with Table 1's k, l, m, n = 192, 224, 256, 384.
  assert params['reduction_a']['branch1_2']['conv']['kernel'].shape == (3, 3, 224, 256)
  assert params['reduction_a']['branch0']['conv']['kernel'].shape == (3, 3, 384, 384)


def test_inception_resnet_grid_sizes_and_block_counts():
  v2 = abstract('inception_resnet_v2', 299)
  out, params = v2['intermediates'], v2['params']
  assert _out(out, 'conv2d_4a') == (71, 71, 192) and _out(out, 'mixed_5b') == (35, 35, 320)
  for prefix, repeats, shape in [
      ('block35', 10, (35, 35, 320)),
      ('block17', 20, (17, 17, 1088)),
      ('block8', 9, (8, 8, 2080)),
  ]:
    assert [_out(out, f'{prefix}_{i}') for i in range(repeats)] == [shape] * repeats
    assert f'{prefix}_{repeats}' not in params
  assert _out(out, 'mixed_6a') == (17, 17, 1088) and _out(out, 'mixed_7a') == (8, 8, 2080)
  assert _out(out, 'block8') == (8, 8, 2080) and _out(out, 'conv2d_7b') == (8, 8, 1536)
  # The up-projection: a 1×1 conv with bias back to the block's width, no BN.
  assert set(params['block35_0']['conv2d']) == {'kernel', 'bias'}
  assert params['block35_0']['conv2d']['kernel'].shape == (1, 1, 128, 320)
  assert params['block8']['conv2d']['kernel'].shape == (1, 1, 448, 2080)
  v1 = abstract('inception_resnet_v1', 299)
  out, params = v1['intermediates'], v1['params']
  assert _out(out, 'conv2d_4b') == (35, 35, 256)  # Fig. 14's stem ends in a strided conv
  assert [_out(out, n) for n in ('block35_4', 'mixed_6a', 'block17_9', 'mixed_7a', 'block8_4')] == [
      (35, 35, 256),
      (17, 17, 896),
      (17, 17, 896),
      (8, 8, 1792),
      (8, 8, 1792),
  ]
  assert not {'block35_5', 'block17_10', 'block8_5', 'block8', 'conv2d_7b', 'mixed_5b'} & set(
      params
  )
  assert params['fc']['kernel'].shape == (1792, 1000)


def test_residual_block_adds_scaled_branch_and_scale_zero_is_identity():
  block = functools.partial(inception_v4.InceptionResNetBlock, towers=(((4, 1),), ((4, 1), (6, 3))))
  x = np.random.default_rng(0).standard_normal((2, 3, 3, 8)).astype(np.float32)
  shapes = jax.eval_shape(block().init, jax.random.key(0), x)
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map_with_path(
      lambda path, s: (
          (np.ones if path[-1].key == 'var' else np.zeros)(s.shape, np.float32)
          if path[0].key == 'batch_stats'
          else rng.standard_normal(s.shape).astype(np.float32)
      ),
      shapes,
  )

  @fast_jit
  def run(variables, x):
    apply = lambda **kw: block(**kw).apply(
        variables, x, capture_intermediates=True, mutable=['intermediates']
    )
    (scaled, inter), (zero, _), (linear, _) = (
        apply(scale=0.17),
        apply(scale=0.0),
        apply(scale=0.0, activate=False),
    )
    return scaled, inter['intermediates']['conv2d']['__call__'][0], zero, linear

  scaled, up, zero, linear = run(variables, x)
  assert up.shape == x.shape and np.abs(up).max() > 0.5  # the branch is not idle
  np.testing.assert_allclose(scaled, np.maximum(x + 0.17 * np.asarray(up), 0), atol=1e-5)
  np.testing.assert_allclose(zero, np.maximum(x, 0), atol=1e-6)  # identity, then the ReLU
  np.testing.assert_array_equal(linear, x)  # the final block (no ReLU) is the identity


def test_model_passes_its_residual_scales_and_keeps_float32_params_and_logits():
  # The only multiplications by constants in an eval forward pass are the residual scalings,
  # in order: A, B, C, then the final unscaled C block. Traced in bfloat16, without compute.
  model = models.create_model(
      'inception_resnet_v2',
      num_classes=10,
      repeats=(1, 1, 1),
      scales=(0.5, 0.25, 0.125),
      dtype=jnp.bfloat16,
  )
  x = jnp.zeros((1, 75, 75, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  jaxpr = jax.make_jaxpr(model.apply)(variables, x)
  factors = [
      float(v.val)
      for eqn in jaxpr.jaxpr.eqns
      if eqn.primitive.name == 'mul'
      for v in eqn.invars
      if isinstance(v, jax.extend.core.Literal)
  ]
  assert factors == [0.5, 0.25, 0.125, 1.0]
  assert jaxpr.out_avals[0].shape == (1, 10) and jaxpr.out_avals[0].dtype == jnp.float32


@pytest.mark.parametrize('name', NAMES)
def test_train_and_eval_step_with_one_block_per_grid_size(name):
  # 75 px is the smallest input: the valid-padded stem and reductions leave 1×1 at the end.
  train_and_eval_step(name, inception_v4.MIN_SIZE, repeats=(1, 1, 1))


def test_too_small_inputs_and_unknown_versions_are_refused():
  for name in NAMES:
    with pytest.raises(ValueError, match='at least 75×75'):
      abstract(name, 74)
  with pytest.raises(ValueError, match='Unknown Inception-ResNet version 3'):
    abstract('inception_resnet_v2', 75, version=3)
