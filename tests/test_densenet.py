"""DenseNet: published parameter counts, block and transition structure, dense connections, BN."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import densenet
from train_lib.state import num_params


def _key(seed):
  """'rbg' keys: XLA compiles their random bits in a fraction of threefry's time on CPU."""
  return jax.random.key(seed, impl='rbg')


def _normal(*shape):
  return np.random.default_rng(1).normal(size=shape).astype(np.float32)


# A small DenseNet-BC that compiles in seconds: 2 blocks of 2 bottleneck layers, k = 4.
TINY = dict(block_config=(2, 2), growth_rate=4, num_init_features=8, stem='cifar')


def _captures(module, *, image_size, capture=(densenet.DenseBlock, densenet.Transition), **kw):
  """Abstract variables and captured outputs (shapes only, no compute) of one init."""
  x = jnp.zeros((1, image_size, image_size, 3))
  return jax.eval_shape(
      functools.partial(
          module.init, mutable=True, capture_intermediates=lambda m, _: isinstance(m, capture), **kw
      ),
      _key(0),
      x,
  )


@functools.cache
def _abstract(name, num_classes, image_size):
  return _captures(models.create_model(name, num_classes=num_classes), image_size=image_size)


def _outputs(variables):
  """{'denseblock1': shape, 'transition1': shape, ...} from captured intermediates."""
  inter = variables['intermediates']
  return {k: v['__call__'][0].shape for k, v in inter.items() if k != '__call__'}


def _formula(
    block_config, k, init, num_classes, bn_size=4, bottleneck=True, compression=0.5, stem='imagenet'
):
  """Trainable parameters from the paper's description (BN: scale + offset; convs: no bias)."""
  c = init
  total = 49 * 3 * c + 2 * c if stem == 'imagenet' else 9 * 3 * c  # 7×7 conv + BN, or 3×3 conv
  for b, n in enumerate(block_config):
    for _ in range(n):
      if bottleneck:
        total += 2 * c + c * bn_size * k + 2 * bn_size * k + 9 * bn_size * k * k
      else:
        total += 2 * c + 9 * c * k
      c += k
    if b < len(block_config) - 1:
      out = math.floor(compression * c)
      total += 2 * c + c * out
      c = out
  return total + 2 * c + c * num_classes + num_classes


# torchvision's model cards (1000 classes); 121 also in docs/published_figures.md.
TORCHVISION = {
    'densenet121': (7_978_856, dict(block_config=(6, 12, 24, 16), k=32, init=64), 1024),
    'densenet169': (14_149_480, dict(block_config=(6, 12, 32, 32), k=32, init=64), 1664),
    'densenet201': (20_013_928, dict(block_config=(6, 12, 48, 32), k=32, init=64), 1920),
    'densenet161': (28_681_000, dict(block_config=(6, 12, 36, 24), k=48, init=96), 2208),
}


@pytest.mark.parametrize('name', sorted(TORCHVISION))
def test_imagenet_parameter_counts_match_torchvision(name):
  count, arch, final_features = TORCHVISION[name]
  params = _abstract(name, 1000, 224)['params']
  assert num_params(params) == count == _formula(num_classes=1000, **arch)
  assert params['classifier']['kernel'].shape == (final_features, 1000)


# Huang et al. 2017, Table 2 (C10 params): 0.8M, 15.3M, 25.6M, 1.0M; the exact counts are derived
# here (= _formula). osmr/imgclsmob's CIFAR tables list 769,162 (C10) and 800,032 (C100) for
# DenseNet-BC-100 k=12. Its "DenseNet-40 (k=12)", 599,050, has 2k = 24 stem maps and θ = 0.5; the
# paper's plain net has 16 stem maps and θ = 1 (16 maps also give Table 2's 7.0M and 27.2M for
# L=100, k=12/24, where 2k would give 7.1M and 28.1M).
CIFAR = {
    'densenet_bc_100_k12': (769_162, 0.8, dict(block_config=(16,) * 3, k=12, init=24)),
    'densenet_bc_250_k24': (15_324_406, 15.3, dict(block_config=(41,) * 3, k=24, init=48)),
    'densenet_bc_190_k40': (25_624_430, 25.6, dict(block_config=(31,) * 3, k=40, init=80)),
    'densenet40_k12': (
        1_019_722,
        1.0,
        dict(block_config=(12,) * 3, k=12, init=16, bottleneck=False, compression=1.0),
    ),
}


@pytest.mark.parametrize('name', sorted(CIFAR))
def test_cifar_parameter_counts_match_the_paper(name):
  count, paper_millions, arch = CIFAR[name]
  params = _abstract(name, 10, 32)['params']
  assert num_params(params) == count == _formula(num_classes=10, stem='cifar', **arch)
  assert round(count / 1e6, 1) == paper_millions
  # CIFAR-100: only the classifier grows, by 90 × (features + 1).
  features = params['classifier']['kernel'].shape[0]
  assert _formula(num_classes=100, stem='cifar', **arch) == count + 90 * (features + 1)
  if name == 'densenet_bc_100_k12':
    assert count + 90 * (features + 1) == 800_032  # imgclsmob, CIFAR-100


def test_cifar_depth_gives_layers_per_block():
  assert densenet.cifar_block_config(100, bottleneck=True) == (16, 16, 16)
  assert densenet.cifar_block_config(250, bottleneck=True) == (41, 41, 41)
  assert densenet.cifar_block_config(190, bottleneck=True) == (31, 31, 31)
  assert densenet.cifar_block_config(40, bottleneck=False) == (12, 12, 12)
  with pytest.raises(ValueError, match='not 4 \\+ 6·n'):
    densenet.cifar_block_config(101, bottleneck=True)


def test_densenet121_block_and_transition_shapes():
  variables = _abstract('densenet121', 1000, 224)
  assert _outputs(variables) == {
      'denseblock1': (1, 56, 56, 256),
      'transition1': (1, 28, 28, 128),
      'denseblock2': (1, 28, 28, 512),
      'transition2': (1, 14, 14, 256),
      'denseblock3': (1, 14, 14, 1024),
      'transition3': (1, 7, 7, 512),
      'denseblock4': (1, 7, 7, 1024),
  }
  params = variables['params']
  assert params['conv0']['kernel'].shape == (7, 7, 3, 64)
  layer = params['denseblock3']['denselayer24']  # input 256 + 23 · 32 channels
  assert layer['norm1']['scale'].shape == (992,)
  assert layer['conv1']['kernel'].shape == (1, 1, 992, 4 * 32)  # bottleneck width 4k
  assert layer['conv2']['kernel'].shape == (3, 3, 128, 32)
  assert params['transition3']['conv']['kernel'].shape == (1, 1, 1024, 512)
  assert params['norm5']['scale'].shape == (1024,)


def test_densenet161_uses_k48_and_96_stem_maps():
  params = _abstract('densenet161', 1000, 224)['params']
  assert params['conv0']['kernel'].shape == (7, 7, 3, 96)
  assert params['denseblock1']['denselayer1']['conv1']['kernel'].shape == (1, 1, 96, 192)
  assert params['transition1']['conv']['kernel'].shape == (1, 1, 96 + 6 * 48, 192)


def test_cifar_structures():
  bc = _abstract('densenet_bc_100_k12', 10, 32)
  assert _outputs(bc) == {
      'denseblock1': (1, 32, 32, 216),
      'transition1': (1, 16, 16, 108),
      'denseblock2': (1, 16, 16, 300),
      'transition2': (1, 8, 8, 150),
      'denseblock3': (1, 8, 8, 342),
  }
  assert bc['params']['conv0']['kernel'].shape == (3, 3, 3, 24)
  assert 'norm0' not in bc['params']  # the CIFAR stem is a bare conv
  plain = _abstract('densenet40_k12', 10, 32)
  assert _outputs(plain) == {
      'denseblock1': (1, 32, 32, 160),
      'transition1': (1, 16, 16, 160),
      'denseblock2': (1, 16, 16, 304),
      'transition2': (1, 8, 8, 304),
      'denseblock3': (1, 8, 8, 448),
  }
  layer = plain['params']['denseblock2']['denselayer1']
  assert set(layer) == {'norm2', 'conv2'}  # no bottleneck
  assert layer['conv2']['kernel'].shape == (3, 3, 160, 12)


def test_transition_floors_compressed_channels_and_spatial_size():
  model = densenet.DenseNet(num_classes=3, **{**TINY, 'num_init_features': 7})
  variables = _captures(model, image_size=7)
  # 7 + 2 · 4 = 15 channels → ⌊0.5 · 15⌋ = 7; 7×7 → 3×3 (PyTorch's floor).
  assert _outputs(variables) == {
      'denseblock1': (1, 7, 7, 15),
      'transition1': (1, 3, 3, 7),
      'denseblock2': (1, 3, 3, 15),
  }


def test_dropout_follows_every_conv_but_the_stem():
  def dropouts(**kw):
    model = densenet.DenseNet(num_classes=3, **{**TINY, **kw})
    return len(jax.tree.leaves(_captures(model, image_size=8, capture=nn.Dropout)['intermediates']))

  assert dropouts() == 2 * 2 * 2 + 1  # 2 per bottleneck layer, 1 per transition
  assert dropouts(bottleneck=False) == 2 * 2 + 1


def _bn(y, train):
  """BatchNorm at its initial parameters: batch statistics in training, running (0, 1) in eval."""
  mean, var = (y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))) if train else (0.0, 1.0)
  return (y - mean) / jnp.sqrt(var + 1e-5)


def _conv(y, w):
  return jax.lax.conv_general_dilated(
      y, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def test_dense_layer_and_transition_compute_what_the_paper_says():
  x = 1.0 + _normal(2, 6, 6, 5)
  layer = densenet.DenseLayer(growth_rate=3, bn_size=2)
  transition = densenet.Transition(features=4)
  inputs = (x[..., :2], x[..., 2:])  # earlier maps arrive as a list and are concatenated

  @jax.jit
  def run(inputs, x):
    lv, tv = layer.init(_key(0), inputs), transition.init(_key(2), x)
    outs = (
        layer.apply(lv, inputs),
        layer.apply(lv, inputs, train=True, mutable=True)[0],
        transition.apply(tv, x),
    )
    return lv['params'], tv['params'], outs

  lp, tp, (eval_new, train_new, trans_out) = run(inputs, x)
  assert lp['conv1']['kernel'].shape == (1, 1, 5, 2 * 3)  # bottleneck width bn_size · k
  assert eval_new.shape == (2, 6, 6, 3)
  for new, train in ((eval_new, False), (train_new, True)):
    # BN-ReLU-1×1 conv to bn_size·k, BN-ReLU-3×3 conv to k, over concat(inputs).
    hidden = _conv(jax.nn.relu(_bn(x, train)), lp['conv1']['kernel'])
    expected = _conv(jax.nn.relu(_bn(hidden, train)), lp['conv2']['kernel'])
    np.testing.assert_allclose(new, expected, rtol=1e-4, atol=1e-4)
  assert not np.allclose(eval_new, train_new, atol=1e-2)  # BN: batch vs running statistics
  # Transition: BN-ReLU-1×1 conv, then 2×2 average pooling with stride 2.
  y = _conv(jax.nn.relu(_bn(x, False)), tp['conv']['kernel'])
  np.testing.assert_allclose(
      trans_out, y.reshape(2, 3, 2, 3, 2, 4).mean(axis=(2, 4)), rtol=1e-4, atol=1e-4
  )


@pytest.fixture(scope='module')
def tiny():
  """One dense block of two bottleneck layers (k = 4) with dropout 0.5, jitted init and applies."""
  model = densenet.DenseNet(num_classes=10, drop_rate=0.5, **{**TINY, 'block_config': (2,)})
  x = 2.0 + _normal(4, 8, 8, 3)
  variables = jax.jit(model.init)(_key(0), x)
  capture = lambda m, _: (
      m.name == 'conv0' or isinstance(m, (densenet.DenseLayer, densenet.DenseBlock))
  )
  evaluate = jax.jit(
      lambda v: model.apply(v, x, mutable=('intermediates',), capture_intermediates=capture)
  )
  train = jax.jit(
      lambda v, rng: model.apply(v, x, train=True, rngs={'dropout': rng}, mutable=('batch_stats',))
  )
  return model, x, variables, evaluate, train


def test_block_output_is_input_then_each_layers_new_maps(tiny):
  _, _, variables, evaluate, _ = tiny
  inter = evaluate(variables)[1]['intermediates']
  block = inter['denseblock1']
  stem = inter['conv0']['__call__'][0]
  new = [block[f'denselayer{i}']['__call__'][0] for i in (1, 2)]
  out = block['__call__'][0]
  assert stem.shape[-1] == 8 and [n.shape[-1] for n in new] == [4, 4] and out.shape[-1] == 16
  np.testing.assert_array_equal(out, jnp.concatenate([stem, *new], axis=-1))
  assert float(jnp.abs(new[1]).max()) > 0


def test_batch_norm_and_dropout_act_in_training_only(tiny):
  _, _, variables, evaluate, train = tiny
  a, updates = train(variables, _key(1))
  b, _ = train(variables, _key(2))
  assert not np.allclose(a, b)  # different dropout masks
  eval_out = evaluate(variables)[0]
  np.testing.assert_array_equal(eval_out, evaluate(variables)[0])  # eval is deterministic
  assert eval_out.shape == (4, 10) and eval_out.dtype == jnp.float32
  moved = jax.tree.map(
      lambda u, v: float(jnp.abs(u - v).max()), updates['batch_stats'], variables['batch_stats']
  )
  assert min(jax.tree.leaves(moved)) > 0  # every BN's running averages were updated


def test_classifier_has_pytorch_default_init_and_zero_bias(tiny):
  head = tiny[2]['params']['classifier']
  bound = 1 / math.sqrt(16)  # fan_in: 8 + 2 · 4 features
  assert head['kernel'].shape == (16, 10)
  assert bound >= float(jnp.abs(head['kernel']).max()) > 0.9 * bound  # uniform over ±bound
  np.testing.assert_array_equal(head['bias'], 0)


def test_half_precision_keeps_float32_params_and_logits(tiny):
  model, x, variables, _, _ = tiny
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  half = jax.eval_shape(model.clone(dtype=jnp.bfloat16).apply, variables, x)
  assert half.dtype == jnp.float32


def test_initialisation_follows_torchvision_or_the_paper_code():
  x = (jnp.zeros((1, 1, 1, 128)),)
  for mode, fan in (('fan_in', 9 * 128), ('fan_out', 9 * 32)):
    layer = densenet.DenseLayer(growth_rate=32, bottleneck=False, init_mode=mode)
    kernel = jax.jit(layer.init)(_key(0), x)['params']['conv2']['kernel']
    std = math.sqrt(2 / fan)
    assert abs(float(kernel.std()) / std - 1) < 0.05
    assert float(jnp.abs(kernel).max()) > 3 * std  # untruncated normal, as PyTorch's
  with pytest.raises(ValueError, match='Unknown init mode'):
    densenet.DenseLayer(growth_rate=4, init_mode='fan_avg').init(_key(0), x)


def test_bad_fields_stop_with_a_message():
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match='Unknown DenseNet stem'):
    densenet.DenseNet(num_classes=3, **{**TINY, 'stem': 'svhn'}).init(_key(0), x)
  with pytest.raises(ValueError, match='compression must be in'):
    densenet.DenseNet(num_classes=3, **{**TINY, 'compression': 0.0}).init(_key(0), x)
