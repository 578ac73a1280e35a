"""VGG: torchvision's parameter counts, layout, adaptive pooling, init, and a train step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_testing import shapes

import models
from configs import default
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
