"""Low-rank factorisation (models/low_rank.py) and its SVD factors (compression/low_rank.py)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import fast_jit

import models
from common.errors import ConfigError
from compression import low_rank as svd
from models import low_rank

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _init(model, x):
  return fast_jit(model.init, static_argnames='train')(jax.random.key(0), x, train=False)


def _apply(model, variables, x):
  return fast_jit(lambda v, x: model.apply(v, x, train=False))(variables, x)


@functools.cache
def _lenet():
  model = models.create_model('lenet5', num_classes=10)
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  return model, _init(model, x), x


@functools.cache
def _resnet():
  model = models.create_model('resnet20', num_classes=10)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = _init(model, x)
  return model, variables, x, _apply(model, variables, x)


def _count(tree):
  return sum(int(np.size(a)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    'layer, conv', [('fc1', 'spatial'), ('conv2', 'spatial'), ('conv2', 'channel')]
)
def test_full_rank_factors_compute_the_original_lenet(layer, conv):
  model, variables, x = _lenet()
  full = low_rank.full_rank(variables['params'][layer]['kernel'].shape, conv)
  factorised = low_rank.factorize(model, {layer: full}, conv=conv)
  got = _apply(factorised, svd.low_rank_variables(variables, {layer: full}, conv), x)
  np.testing.assert_allclose(got, _apply(model, variables, x), atol=1e-4)


@pytest.mark.parametrize('conv', ['spatial', 'channel'])
def test_full_rank_factors_of_a_strided_padded_resnet_conv(conv):
  model, variables, x, logits = _resnet()
  layer = 'layer2_0/conv1'  # 3×3, stride 2, padding ((1, 1), (1, 1)), then BatchNorm
  kernel = variables['params']['layer2_0']['conv1']['kernel']
  ranks = {layer: low_rank.full_rank(kernel.shape, conv)}
  factorised = low_rank.factorize(model, ranks, conv=conv)
  got = _apply(factorised, svd.low_rank_variables(variables, ranks, conv), x)
  np.testing.assert_allclose(got, logits, atol=1e-4)


class _Convs(nn.Module):
  """One conv per padding form nn.Conv takes, on an odd-sized input."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    outputs = []
    forms = [
        ((3, 3), 2, 'SAME'),
        ((3, 5), (2, 1), 'SAME'),
        ((3, 3), 1, 'VALID'),
        ((5, 5), 2, 2),
        ((3, 3), (1, 2), (1, 0)),
        ((3, 5), (2, 2), ((1, 2), (0, 1))),
    ]
    for i, (kernel_size, strides, padding) in enumerate(forms):
      conv = nn.Conv(6, kernel_size, strides, padding=padding, name=f'conv{i}')
      outputs.append(conv(x).reshape(x.shape[0], -1))
    return jnp.concatenate(outputs, axis=1)


def _product_kernel(params, conv):
  """The k×k kernel two factors compute, Σ_r first ⊗ second."""
  if conv == 'spatial':
    return jnp.einsum('icr,jro->ijco', params['kernel_v'][:, 0], params['kernel_h'][0])
  return jnp.einsum('ijcr,ro->ijco', params['kernel_u'], params['kernel_v'][0, 0])


@pytest.mark.parametrize('conv', ['spatial', 'channel'])
def test_factorised_conv_is_the_conv_with_the_product_kernel_for_every_padding(conv):
  # At rank 2 with the factors as initialised: the output equals the full conv whose kernel
  # is the product of the factors, with the layer's strides and padding.
  model = _Convs()
  x = jax.random.normal(jax.random.key(1), (2, 9, 11, 4))
  names = [f'conv{i}' for i in range(6)]
  factorised = low_rank.factorize(model, dict.fromkeys(names, 2), conv=conv)
  variables = _init(factorised, x)
  dense = {
      name: {'kernel': _product_kernel(p, conv), 'bias': p['bias']}
      for name, p in variables['params'].items()
  }
  np.testing.assert_allclose(
      _apply(factorised, variables, x), _apply(model, {'params': dense}, x), rtol=1e-5, atol=1e-5
  )


def test_dense_truncation_error_is_the_svd_tail():
  _, variables, _ = _lenet()
  w = np.asarray(variables['params']['fc1']['kernel'], np.float64)
  sigma = np.linalg.svd(w, compute_uv=False)
  for rank in (1, 10, 60):
    p = svd.low_rank_variables(variables, {'fc1': rank})['params']['fc1']
    error = np.sum((w - np.asarray(p['kernel_u'], np.float64) @ p['kernel_v']) ** 2)
    np.testing.assert_allclose(error, np.sum(sigma[rank:] ** 2), rtol=1e-4)  # Eckart–Young


def test_spatial_truncation_error_is_the_svd_tail_of_jaderbergs_matrix():
  _, variables, _ = _lenet()
  k = np.asarray(variables['params']['conv2']['kernel'], np.float64)  # [5, 5, 6, 16]
  # Jaderberg scheme 2: rows (i, c), columns (j, o).
  matrix = np.stack([np.stack([k[i, :, c, :].ravel() for c in range(6)]) for i in range(5)])
  sigma = np.linalg.svd(matrix.reshape(30, 80), compute_uv=False)
  for rank in (1, 4, 12):
    p = svd.low_rank_variables(variables, {'conv2': rank})['params']['conv2']
    error = np.sum((k - np.asarray(_product_kernel(p, 'spatial'), np.float64)) ** 2)
    np.testing.assert_allclose(error, np.sum(sigma[rank:] ** 2), rtol=1e-4)


def test_low_rank_variables_copy_the_rest():
  _, variables, _ = _lenet()
  new = svd.low_rank_variables(variables, {'fc1': 5, 'conv2': 3}, 'channel')
  assert sorted(new['params']['fc1']) == ['bias', 'kernel_u', 'kernel_v']
  assert sorted(new['params']['conv2']) == ['bias', 'kernel_u', 'kernel_v']
  assert new['params']['conv2']['kernel_u'].shape == (5, 5, 6, 3)
  assert new['params']['conv2']['kernel_v'].shape == (1, 1, 3, 16)
  for name in ('conv1', 'fc2', 'head'):
    jax.tree.map(np.testing.assert_array_equal, new['params'][name], variables['params'][name])
  np.testing.assert_array_equal(new['params']['fc1']['bias'], variables['params']['fc1']['bias'])
  assert 'kernel' in variables['params']['fc1']  # the input is not modified


@pytest.mark.parametrize('conv', ['spatial', 'channel'])
def test_parameter_counts(conv):
  model, variables, x = _lenet()
  ranks = {'fc1': 16, 'conv2': 4}
  factorised = low_rank.factorize(model, ranks, conv=conv)
  params = jax.eval_shape(factorised.init, jax.random.key(0), x)['params']
  conv2 = 4 * (5 * 6 + 5 * 16) if conv == 'spatial' else 4 * (5 * 5 * 6 + 16)
  saved = (400 * 120 - 16 * (400 + 120)) + (5 * 5 * 6 * 16 - conv2)
  assert _count(params) == _count(variables['params']) - saved
  assert _count(params) < 0.5 * _count(variables['params'])
  # The SVD variables have exactly the factorised model's shapes.
  from_svd = svd.low_rank_variables(variables, ranks, conv)['params']
  assert jax.tree.map(np.shape, from_svd) == jax.tree.map(np.shape, params)


def test_factorised_model_trains():
  model, variables, _ = _lenet()
  ranks = {'fc1': 8, 'conv2': 3}
  factorised = low_rank.factorize(model, ranks)
  params = svd.low_rank_variables(variables, ranks)['params']
  x = jax.random.normal(jax.random.key(3), (16, 28, 28, 1))
  labels = jax.random.randint(jax.random.key(4), (16,), 0, 10)

  def loss(params):
    logits = factorised.apply({'params': params}, x, train=False)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  @fast_jit
  def step(params):
    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value, grads

  new, before, grads = step(params)
  assert float(jnp.abs(grads['conv2']['kernel_h']).max()) > 0
  assert float(jnp.abs(grads['fc1']['kernel_u']).max()) > 0
  assert float(step(new)[1]) < float(before)


class _Special(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.Conv(8, (3, 3), feature_group_count=2, name='grouped')(x)
    x = nn.Conv(8, (3, 3), kernel_dilation=2, name='dilated')(x)
    x = nn.BatchNorm(use_running_average=True, name='bn')(x)
    return nn.Dense(3, name='fc')(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    'ranks, message',
    [
        ({'grouped': 2}, 'grouped or depthwise'),
        ({'dilated': 2}, 'dilated'),
        ({'fc9': 2}, 'not a conv or dense'),
        ({'bn': 2}, 'not a conv or dense'),
        ({'fc': 4}, 'exceeds its full rank 3'),
    ],
)
def test_refused_layers(ranks, message):
  factorised = low_rank.factorize(_Special(), ranks)
  with pytest.raises(ConfigError, match=message):
    jax.eval_shape(factorised.init, jax.random.key(0), jnp.zeros((1, 8, 8, 4)))


@pytest.mark.parametrize('rank', [0, -1, 2.5, True])
def test_refused_ranks(rank):
  with pytest.raises(ConfigError, match='integer ≥ 1'):
    low_rank.factorize(_Special(), {'fc': rank})


def test_refused_conv_mode():
  with pytest.raises(ConfigError, match='spatial'):
    low_rank.factorize(_Special(), {'fc': 1}, conv='depthwise')


def _with_singular_values(values, rows=7, columns=5):
  q1, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(rows, rows)))
  q2, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(columns, columns)))
  w = q1[:, : len(values)] @ np.diag(values) @ q2[:, : len(values)].T
  return {'params': {'a': {'fc': {'kernel': w.astype(np.float32)}}}}


@pytest.mark.parametrize('energy', [0.5, 0.8, 0.9, 0.99, 1.0])
def test_ranks_for_energy(energy):
  values = np.array([4.0, 3.0, 2.0, 1.0, 0.5])
  expected = next(  # the fewest leading σ whose squares reach `energy` of the total
      r for r in range(1, 6) if np.sum(values[:r] ** 2) >= energy * np.sum(values**2) - 1e-9
  )
  assert svd.ranks_for_energy(_with_singular_values(values), energy) == {'a/fc': expected}


def test_ranks_for_energy_selects_layers_by_regex():
  _, variables, _ = _lenet()
  ranks = svd.ranks_for_energy(variables, 0.5, 'fc.*', conv='channel')
  assert sorted(ranks) == ['fc1', 'fc2']
  sigma = np.linalg.svd(np.asarray(variables['params']['fc2']['kernel']), compute_uv=False)
  r = ranks['fc2']
  assert np.sum(sigma[:r] ** 2) >= 0.5 * np.sum(sigma**2) > np.sum(sigma[: r - 1] ** 2)


def test_ranks_for_fraction():
  _, variables, _ = _lenet()
  # fc1: 0.25·min(400, 120) = 30; conv2: 0.25·min(5·6, 5·16) = 7.5, rounded half up.
  assert svd.ranks_for_fraction(variables, 0.25, 'fc1|conv2') == {'fc1': 30, 'conv2': 8}
  assert svd.ranks_for_fraction(variables, 0.25, 'conv2', conv='channel') == {'conv2': 4}  # of 16
  assert svd.ranks_for_fraction(variables, 0.01, 'head') == {'head': 1}  # max(1, 0.1)


@pytest.mark.parametrize(
    'call',
    [
        lambda v: svd.ranks_for_energy(v, 0.0),
        lambda v: svd.ranks_for_energy(v, 1.5),
        lambda v: svd.ranks_for_fraction(v, 0.0),
        lambda v: svd.ranks_for_fraction(v, 0.5, 'nothing'),
        lambda v: svd.low_rank_variables(v, {'fc9': 3}),
        lambda v: svd.low_rank_variables(v, {'fc1': 121}),
        lambda v: svd.low_rank_variables(v, {'fc1': 3}, conv='bogus'),
    ],
)
def test_svd_refusals(call):
  _, variables, _ = _lenet()
  with pytest.raises(ConfigError):
    call(variables)
