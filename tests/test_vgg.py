"""VGG: torchvision's parameter counts, layout, adaptive pooling, init, and a train step; the
paper's A-LRN and C configurations."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_testing import FAST_KEY, count, fast_jit, host_state, shapes

import models
from common.errors import ConfigError
from configs import default
from input_pipeline import offline_digits
from train_lib import losses, optim, steps
from train_lib import state as state_lib
from train_lib.state import num_params

# A configuration-A (vgg11) conv stack at small widths: compiles and runs in seconds on a CPU.
SMALL = dict(num_classes=10, widths=(8, 16, 32, 32, 32), hidden_width=32)


# torchvision's model cards, 1000 classes (vgg16 / vgg16_bn also in docs/published_figures.md).
@pytest.mark.parametrize(
    'name, count',
    [
        ('vgg11', 132_863_336),
        ('vgg11_bn', 132_868_840),
        ('vgg13', 133_047_848),
        ('vgg13_bn', 133_053_736),
        ('vgg16', 138_357_544),
        ('vgg16_bn', 138_365_992),
        ('vgg19', 143_667_240),
        ('vgg19_bn', 143_678_248),
    ],
)
def test_parameter_counts_match_torchvision(name, count):
  variables, _ = shapes(name, 224)
  assert num_params(variables['params']) == count


def test_vgg16_layout_at_224():
  variables, outputs = shapes('vgg16', 224)
  # Configuration D: 2-2-3-3-3 convs, each stage halving the map after its last conv.
  convs = sorted(k for k in outputs if k.startswith('conv'))
  assert convs == [
      'conv1_1',
      'conv1_2',
      'conv2_1',
      'conv2_2',
      'conv3_1',
      'conv3_2',
      'conv3_3',
      'conv4_1',
      'conv4_2',
      'conv4_3',
      'conv5_1',
      'conv5_2',
      'conv5_3',
  ]
  assert [outputs[f'conv{s}_1'] for s in range(1, 6)] == [
      (1, 224, 224, 64),
      (1, 112, 112, 128),
      (1, 56, 56, 256),
      (1, 28, 28, 512),
      (1, 14, 14, 512),
  ]
  assert variables['params']['conv1_1']['kernel'].shape == (3, 3, 3, 64)
  assert variables['params']['fc6']['kernel'].shape == (7 * 7 * 512, 4096)  # pool5 is 7×7
  assert outputs['head'] == (1, 1000)
  assert 'batch_stats' not in variables


def test_bn_variant_adds_bn_after_every_conv_and_keeps_conv_biases():
  plain, _ = shapes('vgg11', 224)
  bn, _ = shapes('vgg11_bn', 224)
  convs = [k for k in plain['params'] if k.startswith('conv')]
  assert len(convs) == 8  # configuration A
  for conv in convs:
    assert 'bias' in bn['params'][conv]
    bn_name = conv.replace('conv', 'bn')
    assert bn['batch_stats'][bn_name]['mean'].shape == plain['params'][conv]['bias'].shape
  # Scale and offset per conv channel: 2 × (64 + 128 + 2·256 + 4·512).
  assert num_params(bn['params']) - num_params(plain['params']) == 2 * 2752


@pytest.fixture(scope='module')
def small_state():
  """vgg11_bn (small widths) at 32×32, with momentum SGD; rbg keys compile faster than threefry."""
  model = models.create_model('vgg11_bn', **SMALL)
  config = default.get_config().optimizer
  config.name = 'momentum'
  init = functools.partial(
      state_lib.create_train_state, model, optim.create_optimizer(config), 0, (32, 32, 3)
  )
  with jax.default_prng_impl('rbg'):
    return model, jax.jit(init)()


def _batch(n=4):
  rng = np.random.default_rng(0)
  return {
      'image': (1.0 + rng.normal(size=(n, 32, 32, 3))).astype(np.float32),
      'label': rng.integers(0, 10, n).astype(np.int32),
      'mask': np.ones(n, bool),
  }


def test_init_is_torchvisions(small_state):
  _, state = small_state
  params = state.params
  # kaiming_normal fan_out: std = sqrt(2 / (3·3·out)); conv3_1 is 16 → 32 (fan_in would give
  # sqrt(2 / (3·3·16)) = 0.118).
  assert float(jnp.std(params['conv3_1']['kernel'])) == pytest.approx(
      (2 / (9 * 32)) ** 0.5, rel=0.05
  )
  assert float(jnp.std(params['fc6']['kernel'])) == pytest.approx(0.01, rel=0.05)
  for layer in ('conv3_1', 'fc6', 'head'):
    assert not np.any(params[layer]['bias'])


def test_train_step_and_eval_differ_as_bn_and_dropout_should(small_state):
  model, state = small_state
  batch = _batch()
  step = jax.jit(
      functools.partial(
          steps.train_step,
          loss_fn=losses.get_loss('softmax_xent'),
          learning_rate_fn=optax.constant_schedule(0.01),
      )
  )
  new, m1 = step(state, batch)
  _, m2 = step(
      state.replace(rng=jax.random.key_data(jax.random.key(2, impl=state.rng_impl))), batch
  )
  assert float(m1['finite']) == 1.0 and int(new.step) == 1
  assert float(m1['loss']) != float(m2['loss'])  # dropout masks differ in training
  # BN running averages move in training; the input has mean 1, so the first BN's mean does.
  moved = new.batch_stats['bn1_1']['mean'] - state.batch_stats['bn1_1']['mean']
  assert float(jnp.abs(moved).max()) > 0.01
  assert not np.array_equal(new.params['conv1_1']['kernel'], state.params['conv1_1']['kernel'])

  apply = jax.jit(model.apply)
  logits = apply(state.variables(), batch['image'])
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(apply(state.variables(), batch['image']), logits)  # no dropout
  # Eval uses the running statistics (and no dropout), so its loss is not the training loss.
  eval_loss = float(jnp.mean(losses.get_loss('softmax_xent')(logits, batch['label'])))
  assert abs(eval_loss - float(m1['main_loss'])) > 1e-4


@pytest.mark.parametrize('stage_sizes, kernel', [((2, 2), 5), ((3, 3), 7)])
def test_a_stage_of_n_3x3_convs_becomes_one_conv_of_the_same_receptive_field(stage_sizes, kernel):
  # Constant width C past the first conv, as in VGG §2.3: n·9C² weights against (2n+1)²C².
  small = dict(num_classes=10, widths=(16, 16), stage_sizes=stage_sizes, hidden_width=8)
  stacked, stacked_out = shapes('vgg11', 32, **small)
  single, single_out = shapes('vgg11', 32, stacked_3x3=False, **small)
  n, c = stage_sizes[0], 16
  assert sorted(k for k in single['params'] if k.startswith('conv')) == ['conv1_1', 'conv2_1']
  assert single['params']['conv2_1']['kernel'].shape == (kernel, kernel, c, c)
  assert stacked_out['conv2_1'] == single_out['conv2_1'] == (1, 16, 16, c)  # same map sizes
  stage2 = [p['kernel'].size for k, p in stacked['params'].items() if k.startswith('conv2')]
  assert sum(stage2) == n * 9 * c * c and single['params']['conv2_1']['kernel'].size == (
      kernel * kernel * c * c
  )


# Simonyan & Zisserman 2015, Table 2: parameters in millions, for configurations A, A-LRN, B, C,
# D and E at 224 px, 1000 classes.
@pytest.mark.parametrize(
    'name, millions',
    [('vgg11', 133), ('vgg11_lrn', 133), ('vgg13', 133), ('vgg16_c', 134), ('vgg16', 138)]
    + [('vgg19', 144)],
)
def test_counts_round_to_the_papers_table2(name, millions):
  assert round(count(name, 224) / 1e6) == millions


def test_c_is_b_plus_three_1x1_convs():
  c, _ = shapes('vgg16_c', 224)
  kernels = {k: p['kernel'].shape[:2] for k, p in c['params'].items() if k.startswith('conv')}
  assert [k for k, size in kernels.items() if size == (1, 1)] == ['conv3_3', 'conv4_3', 'conv5_3']
  assert all(size in ((1, 1), (3, 3)) for size in kernels.values()) and len(kernels) == 13
  # conv1-256 after 256 channels, conv1-512 after 512 twice: weights + biases.
  one_by_one = (256 * 256 + 256) + 2 * (512 * 512 + 512)
  assert one_by_one == 591_104
  assert count('vgg16_c', 224) - count('vgg13', 224) == one_by_one
  assert count('vgg16_c', 224) == 133_638_952  # the pinned count: 134 M in Table 2
  # D has 3×3s where C has its 1×1s: 8 · (256² + 2 · 512²) more weights.
  assert count('vgg16', 224) - count('vgg16_c', 224) == 8 * (256**2 + 2 * 512**2)


def test_a_lrn_normalises_conv1_1_with_krizhevskys_constants_before_pool1():
  model = models.create_model('vgg11_lrn', **SMALL)
  x = 30.0 * jax.random.normal(jax.random.key(0), (1, 32, 32, 3))  # big enough for α to matter
  variables = fast_jit(model.init)(FAST_KEY, x)
  apply = functools.partial(model.apply, capture_intermediates=True, mutable=['intermediates'])
  _, state = fast_jit(apply)(variables, x)
  seen = {k: v['__call__'][0] for k, v in state['intermediates'].items() if k.startswith('conv')}
  # b_c = a_c / (2 + 1e-4 · Σ a² over the 5 nearest channels)^0.75 (AlexNet §3.3), on the ReLU.
  a = np.maximum(np.asarray(seen['conv1_1']), 0.0)
  padded = np.pad(a**2, ((0, 0), (0, 0), (0, 0), (2, 2)))
  window = sum(padded[..., i : i + a.shape[-1]] for i in range(5))
  lrn = a / (2.0 + 1e-4 * window) ** 0.75
  assert float(np.max(1e-4 * window)) > 0.1  # the α term is not negligible against k
  pool1 = lrn.reshape(1, 16, 2, 16, 2, 8).max(axis=(2, 4))
  conv2_1 = nn.Conv(16, (3, 3), padding=1).apply({'params': variables['params']['conv2_1']}, pool1)
  np.testing.assert_allclose(seen['conv2_1'], conv2_1, rtol=1e-4, atol=1e-4)
  # A (no LRN) shares every variable and sees pool1 unnormalised: conv2_1 differs.
  plain = models.create_model('vgg11', **SMALL)
  plain_apply = functools.partial(plain.apply, capture_intermediates=True, mutable=True)
  _, plain_state = fast_jit(plain_apply)(variables, x)
  assert not np.allclose(plain_state['intermediates']['conv2_1']['__call__'][0], conv2_1)


@pytest.mark.parametrize(
    'fields, message',
    [
        (dict(conv1x1_stages=(3, 6)), 'names a stage that is not one of 1..5'),
        (dict(conv1x1_stages=(3,), stacked_3x3=False), 'needs stacked_3x3=True'),
    ],
)
def test_bad_1x1_stages_are_config_errors(fields, message):
  model = models.create_model('vgg16', num_classes=10, **fields)
  with pytest.raises(ConfigError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@functools.cache
def _digits(n: int = 4) -> dict[str, np.ndarray]:
  """The first `n` offline digits in [0, 1], padded to 32 px (five 2×2 pools leave 1×1)."""
  images, labels = offline_digits.load_arrays()
  image = np.pad(images[:n] / np.float32(255), ((0, 0), (2, 2), (2, 2), (0, 0)))
  return {'image': image, 'label': labels[:n].astype(np.int32), 'mask': np.ones(n, bool)}


@pytest.mark.parametrize('name, layer', [('vgg11_lrn', 'conv1_1'), ('vgg16_c', 'conv3_3')])
def test_a_lrn_and_c_train_on_the_offline_digits(name, layer):
  """Two train steps on four digits; the gradient reaches conv1_1 through the LRN, and C's 1×1s."""
  model = models.create_model(name, pool_size=1, **SMALL)
  batch = _digits()
  state = host_state(model, batch['image'].shape[1:])
  step = functools.partial(
      steps.train_step,
      loss_fn=losses.get_loss('softmax_xent'),
      learning_rate_fn=optax.constant_schedule(0.01),
  )
  new, metrics = jax.device_get(fast_jit(lambda s: step(step(s, batch)[0], batch))(state))
  assert int(new.step) == 2 and metrics['finite'] == 1 and np.isfinite(metrics['loss'])
  assert metrics['grad_norm'] > 0
  assert not np.array_equal(new.params[layer]['kernel'], state.params[layer]['kernel'])
  if name == 'vgg16_c':  # 1×1 in stages 3-5 at SMALL widths 32, 32, 32
    assert [new.params[f'conv{s}_3']['kernel'].shape for s in (3, 4, 5)] == [(1, 1, 32, 32)] * 3
