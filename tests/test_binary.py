"""Binary networks (models/binary.py) against a hand-written sign-weight LeNet-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit

import models
from models import binary

LAYERS = ('conv1', 'conv2', 'fc1', 'fc2', 'head')
IMAGE = (28, 28, 1)


def _lenet(activation='relu'):
  model = models.create_model('lenet5', num_classes=10, activation=activation)
  x = jax.random.normal(jax.random.key(1), (4, *IMAGE))
  return model, fast_jit(model.init, static_argnames='train')(jax.random.key(0), x, train=False), x


def _apply(net, variables, x):
  return fast_jit(lambda v, x: net.apply(v, x, train=False))(variables, x)


def _signs(a):
  return jnp.where(a >= 0, 1.0, -1.0)


def _used_kernel(kernel, scale):
  """sign(W) (sign(0) = +1), times the mean |W| of each output filter if `scale`."""
  k = np.asarray(kernel)
  signs = np.where(k >= 0, 1.0, -1.0).astype(k.dtype)
  return signs * np.abs(k).mean(axis=tuple(range(k.ndim - 1))) if scale else signs


def _reference(kernels, biases, x, *, act, binary_inputs=()):
  """lenet5 (max pooling) written out with the given kernels; `binary_inputs` layers see the
  signs of their inputs."""

  def layer_input(name, h):
    return _signs(h) if name in binary_inputs else h

  def conv(name, h, padding):
    h = jax.lax.conv_general_dilated(
        layer_input(name, h),
        kernels[name],
        (1, 1),
        padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    return h + biases[name]

  def pool(h):
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')

  def dense(name, h):
    return layer_input(name, h) @ kernels[name] + biases[name]

  h = pool(act(conv('conv1', x, [(2, 2), (2, 2)])))
  h = pool(act(conv('conv2', h, 'VALID')))
  h = h.reshape(h.shape[0], -1)
  h = act(dense('fc2', act(dense('fc1', h))))
  return dense('head', h)


_reference_jit = fast_jit(_reference, static_argnames=('act', 'binary_inputs'))


def _float_params(variables):
  p = variables['params']
  return {n: p[n]['kernel'] for n in LAYERS}, {n: p[n]['bias'] for n in LAYERS}


@pytest.mark.parametrize('scale', [False, True])
@pytest.mark.parametrize('keep_first_last', [False, True])
def test_forward_is_the_sign_weight_network(scale, keep_first_last):
  model, variables, x = _lenet()
  kernels, biases = _float_params(variables)
  binarized = LAYERS[1:-1] if keep_first_last else LAYERS
  used = {n: _used_kernel(k, scale) if n in binarized else k for n, k in kernels.items()}
  expected = _reference_jit(used, biases, x, act=jax.nn.relu)
  got = _apply(binary.binarize(model, scale=scale, keep_first_last=keep_first_last), variables, x)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
  # And it is not the float network.
  assert not np.allclose(got, _reference_jit(kernels, biases, x, act=jax.nn.relu), atol=1e-2)


@pytest.mark.parametrize('keep_first_last', [False, True])
def test_activations_mode_binarizes_the_inputs_of_all_but_the_first_layer(keep_first_last):
  # tanh keeps activations signed (after a ReLU every input would binarize to +1).
  model, variables, x = _lenet('tanh')
  kernels, biases = _float_params(variables)
  binarized = LAYERS[1:-1] if keep_first_last else LAYERS
  used = {n: _used_kernel(k, False) if n in binarized else k for n, k in kernels.items()}
  inputs = tuple(n for n in binarized if n != 'conv1')
  expected = _reference_jit(used, biases, x, act=jnp.tanh, binary_inputs=inputs)
  net = binary.binarize(model, activations=True, keep_first_last=keep_first_last)
  got = _apply(net, variables, x)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
  weights_only = _reference_jit(used, biases, x, act=jnp.tanh)
  assert not np.allclose(got, weights_only, atol=1e-2)


def _gradients(scale):
  """(d loss / d latent fc1 kernel, d loss / d the fc1 kernel the forward pass used, W)."""
  model, variables, x = _lenet()
  params = variables['params']
  # Scale fc1 so that about half of its weights lie outside [-1, 1].
  params = {**params, 'fc1': {**params['fc1'], 'kernel': params['fc1']['kernel'] * 30.0}}
  weights = jax.random.normal(jax.random.key(2), (x.shape[0], 10))
  net = binary.binarize(model, scale=scale, keep_first_last=False)
  latent = fast_jit(
      jax.grad(lambda p: jnp.sum(net.apply({'params': p}, x, train=False) * weights))
  )(params)
  kernels, biases = _float_params({'params': params})
  used = {n: _used_kernel(k, scale) for n, k in kernels.items()}

  def loss_of_fc1(kernel):
    return jnp.sum(_reference({**used, 'fc1': kernel}, biases, x, act=jax.nn.relu) * weights)

  return (
      latent['fc1']['kernel'],
      fast_jit(jax.grad(loss_of_fc1))(used['fc1']),
      params['fc1']['kernel'],
  )


def test_gradient_is_the_htanh_straight_through_estimator():
  latent, used, w = _gradients(scale=False)
  inside = np.abs(w) <= 1
  assert 0.2 < inside.mean() < 0.8
  np.testing.assert_array_equal(np.asarray(latent)[~inside], 0.0)
  atol = 1e-5 * np.abs(used).max()  # the two graphs sum in different orders
  np.testing.assert_allclose(latent, np.where(inside, used, 0.0), rtol=1e-5, atol=atol)
  assert np.abs(np.asarray(latent)[inside]).max() > 0


def test_gradient_with_scale_differentiates_alpha():
  # B = sign(W)·α, α = mean_i |W_i|: dL/dW_i = g_i·α·1{|W_i| ≤ 1} + sign(W_i)·Σ_j g_j sign(W_j)/n.
  latent, used, w = _gradients(scale=True)
  w, g = np.asarray(w), np.asarray(used)
  s, n = np.where(w >= 0, 1.0, -1.0), w.shape[0]
  alpha = np.abs(w).mean(axis=0)
  expected = g * alpha * (np.abs(w) <= 1) + s * (g * s).sum(axis=0) / n
  np.testing.assert_allclose(latent, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_binary_weights_are_exactly_plus_minus_alpha_per_output_channel():
  model, variables, _ = _lenet()
  net = binary.binarize(model, scale=True)
  used = binary.binary_weights(net, variables, IMAGE)
  assert sorted(used) == ['conv2', 'fc1', 'fc2']  # the first conv and the last dense stay float
  for name, kernel in used.items():
    w = np.asarray(variables['params'][name]['kernel'])
    axes = tuple(range(w.ndim - 1))
    magnitudes = np.abs(kernel).reshape(-1, kernel.shape[-1])
    assert (magnitudes == magnitudes[0]).all()  # one value per output channel
    np.testing.assert_allclose(magnitudes[0], np.abs(w).mean(axis=axes), rtol=1e-5)
    np.testing.assert_array_equal(np.sign(kernel), np.where(w >= 0, 1.0, -1.0))


def test_binary_weights_without_scale_are_signs_and_zero_is_plus_one():
  model, variables, _ = _lenet()
  params = variables['params']
  zeroed = params['fc2']['kernel'].at[:3].set(0.0)
  variables = {'params': {**params, 'fc2': {**params['fc2'], 'kernel': zeroed}}}
  used = binary.binary_weights(binary.binarize(model, keep_first_last=False), variables, IMAGE)
  assert sorted(used) == sorted(LAYERS)
  for name, kernel in used.items():
    w = np.asarray(variables['params'][name]['kernel'])
    np.testing.assert_array_equal(kernel, np.where(w >= 0, 1.0, -1.0))
  assert (used['fc2'][:3] == 1.0).all()


def test_variable_tree_is_the_float_models():
  model, variables, x = _lenet()
  net = binary.binarize(model, activations=True, scale=True)
  mine = fast_jit(net.init, static_argnames='train')(jax.random.key(0), x, train=False)
  assert jax.tree.structure(mine) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, mine, variables)


def test_a_few_sgd_steps_lower_the_loss():
  model, variables, _ = _lenet()
  net = binary.binarize(model, scale=True)
  x = jax.random.normal(jax.random.key(3), (16, *IMAGE))
  labels = jax.random.randint(jax.random.key(4), (16,), 0, 10)

  def loss(params):
    logits = net.apply({'params': params}, x, train=False)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  @fast_jit
  def step(params):
    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads), value

  params = variables['params']
  losses = []
  for _ in range(6):
    params, value = step(params)
    losses.append(float(value))
  assert float(loss(params)) < losses[0] - 0.1, losses
