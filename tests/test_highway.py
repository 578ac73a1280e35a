"""Highway networks (models/highway.py): the gate, the gradient highway, the published counts,
and a few training steps on the offline digits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from digit_steps import train_losses
from model_testing import fast_jit

import models
from models import highway
from train_lib.state import num_params


def _init(module, x):
  return fast_jit(module.init)(jax.random.key(0), x)


@pytest.mark.parametrize('kernel_size, shape', [(None, (4, 16)), (3, (2, 5, 5, 8))])
def test_a_closed_gate_passes_the_input_unchanged(kernel_size, shape):
  x = jax.random.normal(jax.random.key(1), shape)
  layer = highway.Highway(kernel_size, gate_bias=-200.0)  # T = sigmoid(-200) = 0 in float32
  y = fast_jit(layer.apply)(_init(layer, x), x)
  np.testing.assert_array_equal(y, x)


def test_the_layer_computes_h_t_plus_x_times_one_minus_t():
  x = jax.random.normal(jax.random.key(1), (4, 16))
  layer = highway.Highway(None)
  variables = _init(layer, x)
  p = variables['params']
  np.testing.assert_array_equal(p['gate']['bias'], np.full(16, -2.0))  # the gate starts closed
  np.testing.assert_array_equal(p['transform']['bias'], np.zeros(16))
  h = jax.nn.relu(x @ p['transform']['kernel'] + p['transform']['bias'])
  t = jax.nn.sigmoid(x @ p['gate']['kernel'] + p['gate']['bias'])
  np.testing.assert_allclose(layer.apply(variables, x), h * t + x * (1 - t), rtol=1e-6)
  # Convolutional form: each position mixes by its own gate; 'SAME'-size output.
  conv = highway.Highway(3)
  images = jax.random.normal(jax.random.key(2), (1, 6, 6, 4))
  cp = _init(conv, images)['params']
  assert cp['transform']['kernel'].shape == cp['gate']['kernel'].shape == (3, 3, 4, 4)
  np.testing.assert_array_equal(cp['gate']['bias'], np.full(4, -2.0))


def test_gradients_cross_a_deep_highway_stack_and_vanish_in_a_plain_one():
  # 50 layers of 50 units at the authors' init (Caffe xavier, gate bias -2): the gradient
  # reaching the stack's input, per unit of gradient at its output. Measured: highway 3.1e-3,
  # plain ReLU 6.9e-9 (the carry 1 - T ≈ 0.88 per layer keeps a path open that ReLU layers at
  # variance-1/fan_in halve layer after layer).
  depth, width = 50, 50
  stacks = {
      'highway': nn.Sequential([highway.Highway(None) for _ in range(depth)]),
      'plain': nn.Sequential(
          [
              f
              for _ in range(depth)
              for f in (nn.Dense(width, kernel_init=highway.caffe_xavier), nn.relu)
          ]
      ),
  }
  x = jax.random.normal(jax.random.key(1), (16, width))
  cotangent = jax.random.normal(jax.random.key(2), (16, width))
  gain = {}
  for name, stack in stacks.items():
    variables = stack.init(jax.random.key(0), x)  # eager: compiling 50 layers costs more
    _, vjp = jax.vjp(lambda a, s=stack, v=variables: s.apply(v, a), x)
    gain[name] = float(jnp.linalg.norm(vjp(cotangent)[0]) / jnp.linalg.norm(cotangent))
  assert gain['highway'] > 1e-3
  assert gain['plain'] < 1e-6


def test_highway19_is_the_authors_cifar10_model_and_rounds_to_table3():
  params = 2_256_838
  native = models.create_model('highway19', num_classes=10)
  variables = jax.eval_shape(native.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert num_params(variables['params']) == params == models.entry('highway19').params
  assert round(params / 1e6, 1) == 2.3  # Table 3: Highway B, 19 layers, "~2.3M"
  p = variables['params']
  convs = sorted((k for k in p if k.startswith('conv')), key=lambda k: int(k[4:]))
  assert convs == [f'conv{i}' for i in range(1, 19)] and set(p) == {*convs, 'fc'}  # 18 + fc
  highways = [k for k in convs if 'gate' in p[k]]
  assert len(highways) == 4 + 5 + 5
  widths = [p[k]['gate']['kernel'].shape[-1] for k in highways]
  assert widths == [32] * 4 + [80] * 5 + [128] * 5
  # Each highway layer: H and T, 3×3 C → C convs with biases.
  assert all(num_params(p[k]) == 2 * (9 * c * c + c) for k, c in zip(highways, widths))
  assert p['conv18']['kernel'].shape == (1, 1, 128, 100) and p['fc']['kernel'].shape == (100, 10)


@pytest.mark.parametrize('name, depth', [('highway_fc10', 10), ('highway_fc100', 100)])
def test_mnist_highway_mlp_counts(name, depth):
  # 784 → 50 plain, depth - 2 highway layers of 2·(50² + 50) = 5,100 ("≈5000" per layer in
  # Fig. 1), 50 → 10 softmax.
  expected = (784 * 50 + 50) + (depth - 2) * 5_100 + (50 * 10 + 10)
  variables = jax.eval_shape(
      models.create_model(name, num_classes=10).init, jax.random.key(0), jnp.zeros((1, 28, 28, 1))
  )
  assert num_params(variables['params']) == expected == models.entry(name).params
  # The plain counterpart of Fig. 1: 71 units give about the same parameters per layer.
  plain = jax.eval_shape(
      highway.HighwayMLP(depth=depth, width=71, highway=False).init,
      jax.random.key(0),
      jnp.zeros((1, 28, 28, 1)),
  )['params']
  assert num_params(plain['plain1']) == 71 * 71 + 71 == 5_112


@pytest.mark.parametrize('name, size, lr', [('highway19', 28, 0.01), ('highway_fc10', 28, 0.05)])
def test_trains_on_the_offline_digits(name, size, lr):
  # Three SGD steps on the same 8 digits. Measured losses (highway19, lr 0.01): 2.33, 1.60,
  # 0.74; (highway_fc10, lr 0.05): 2.45, 1.59, 0.47.
  history = train_losses(name, size=size, lr=lr)
  assert history[2] < history[1] < history[0]
