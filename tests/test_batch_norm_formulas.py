"""BatchNorm written from its formulas equals flax's nn.BatchNorm, and both equal the formulas
computed in numpy: batch statistics over N, H, W in training, the moving averages
ra ← momentum·ra + (1 − momentum)·batch, the averages at inference, and the paper's unbiased
m/(m − 1) variance as an option."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.errors import ConfigError
from models import layers
from models.batch_norm import FormulaBatchNorm

SHAPE = (4, 5, 6, 3)  # m = 4·5·6 = 120 values per channel
M = 4 * 5 * 6
MOMENTUM, EPSILON = 0.9, 1e-5


def _batch(shift=0):
  """Channels with distinct means and spreads, so a wrong axis or a missing term shows; each
  shift draws its own fixed values."""
  spread = np.array([0.5, 2.0, 7.0], np.float32)
  return (
      np.random.default_rng(shift).standard_normal(SHAPE).astype(np.float32) * spread
      + [1.0, -3.0, 10.0]
      + shift
  ).astype(np.float32)


def _variables():
  """Non-trivial γ, β and running statistics, shaped as flax has them."""
  return {
      'params': {'scale': np.float32([0.5, 1.5, -2.0]), 'bias': np.float32([0.1, -0.2, 3.0])},
      'batch_stats': {'mean': np.float32([0.3, -1.0, 2.0]), 'var': np.float32([1.5, 0.7, 4.0])},
  }


def _numpy_batch_norm(x, variables, train, unbiased=False):
  """The formulas in float64: (output, new mean, new var)."""
  x = np.float64(x)
  gamma, beta = (np.float64(variables['params'][k]) for k in ('scale', 'bias'))
  ra_mean, ra_var = (np.float64(variables['batch_stats'][k]) for k in ('mean', 'var'))
  if not train:
    return gamma * (x - ra_mean) / np.sqrt(ra_var + EPSILON) + beta, ra_mean, ra_var
  mu = x.reshape(-1, x.shape[-1]).mean(0)
  var = ((x - mu) ** 2).reshape(-1, x.shape[-1]).mean(0)
  m = x.size // x.shape[-1]
  stored = var * m / (m - 1) if unbiased else var
  return (
      gamma * (x - mu) / np.sqrt(var + EPSILON) + beta,
      MOMENTUM * ra_mean + (1 - MOMENTUM) * mu,
      MOMENTUM * ra_var + (1 - MOMENTUM) * stored,
  )


def _run(module, x, variables, train):
  """(output, new batch_stats) of one call; the stats are unchanged at inference."""
  if not train:
    return module.apply(variables, x, use_running_average=True), variables['batch_stats']
  y, updates = module.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
  return y, updates['batch_stats']


def _close(got, want, tol=1e-5):
  np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_equals_flax_batch_norm(train):
  x, variables = _batch(), _variables()
  mine = _run(FormulaBatchNorm(momentum=MOMENTUM, epsilon=EPSILON), x, variables, train)
  flax = _run(nn.BatchNorm(momentum=MOMENTUM, epsilon=EPSILON), x, variables, train)
  _close(mine[0], flax[0])
  for key in ('mean', 'var'):
    _close(mine[1][key], flax[1][key])


def test_running_averages_equal_flax_over_several_steps():
  """Three training batches of drifting statistics, then inference with what they left."""
  mine, flax = _variables(), _variables()
  for step in range(3):
    x = _batch(shift=step)
    _, stats = _run(FormulaBatchNorm(momentum=MOMENTUM), x, mine, True)
    mine = {**mine, 'batch_stats': stats}
    _, stats = _run(nn.BatchNorm(momentum=MOMENTUM), x, flax, True)
    flax = {**flax, 'batch_stats': stats}
  x = _batch()
  _close(_run(FormulaBatchNorm(), x, mine, False)[0], _run(nn.BatchNorm(), x, flax, False)[0])


@pytest.mark.parametrize('unbiased', [False, True], ids=['biased', 'unbiased'])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_equals_the_formulas_in_numpy(train, unbiased):
  x, variables = _batch(), _variables()
  module = FormulaBatchNorm(momentum=MOMENTUM, epsilon=EPSILON, unbiased_variance=unbiased)
  y, stats = _run(module, x, variables, train)
  want_y, want_mean, want_var = _numpy_batch_norm(x, variables, train, unbiased)
  _close(y, want_y)
  _close(stats['mean'], want_mean)
  _close(stats['var'], want_var)


def test_unbiased_variance_is_flax_times_m_over_m_minus_1():
  """From a zero running variance one step stores (1 − momentum)·σ²_B; the unbiased option
  stores m/(m − 1) = 120/119 times as much (to float32 rounding), and normalises the batch
  exactly as flax does."""
  x = _batch()
  variables = _variables()
  variables['batch_stats']['var'] = np.zeros(3, np.float32)
  unbiased = _run(FormulaBatchNorm(momentum=MOMENTUM, unbiased_variance=True), x, variables, True)
  flax = _run(nn.BatchNorm(momentum=MOMENTUM), x, variables, True)
  ratio = np.asarray(unbiased[1]['var']) / np.asarray(flax[1]['var'])
  np.testing.assert_allclose(ratio, M / (M - 1), rtol=5e-6)  # float32 rounding: ~1.5e-6
  assert abs(ratio[0] - 1) > 8e-3  # 1/119 = 8.4e-3: the factor, far above the rounding
  _close(unbiased[0], flax[0])


def test_drops_in_for_flax_variables_and_dtypes():
  """Same variable tree as nn.BatchNorm; init leaves the averages at 0 and 1; bfloat16 compute
  returns bfloat16 with float32 statistics, within bfloat16's rounding of flax's."""
  x = _batch()
  mine = FormulaBatchNorm(use_running_average=False).init(jax.random.key(0), x)
  flax = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), mine) == jax.tree.map(
      lambda a: (a.shape, a.dtype), flax
  )
  np.testing.assert_array_equal(mine['batch_stats']['mean'], 0)
  np.testing.assert_array_equal(mine['batch_stats']['var'], 1)
  x16, variables = jnp.asarray(x, jnp.bfloat16), _variables()
  y, stats = _run(FormulaBatchNorm(dtype=jnp.bfloat16), x16, variables, True)
  want, _ = _run(nn.BatchNorm(dtype=jnp.bfloat16), x16, variables, True)
  assert y.dtype == jnp.bfloat16 and stats['var'].dtype == jnp.float32
  _close(jnp.float32(y), np.float32(want), tol=3e-2)


def test_layers_batch_norm_builds_it_from_formulas():
  x, variables = _batch(), _variables()
  module = layers.batch_norm(True, from_formulas=True, unbiased_variance=True)
  assert isinstance(module, FormulaBatchNorm)
  y, updates = module.apply(variables, x, mutable=['batch_stats'])
  want = _numpy_batch_norm(x, variables, train=True, unbiased=True)  # momentum 0.9, eps 1e-5
  _close(y, want[0])
  _close(updates['batch_stats']['var'], want[2])


def test_unbiased_variance_refuses_one_value_per_channel():
  with pytest.raises(ConfigError, match='at least 2 values per channel'):
    FormulaBatchNorm(False, unbiased_variance=True).init(jax.random.key(0), jnp.ones((1, 1, 1, 3)))
