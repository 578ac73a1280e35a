"""LeNet-5 of the 1998 paper (`lenet5_1998`) and the LeNet config's arguments."""

import ast
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from configs import default, lenet5_mnist
from models import lenet
from train_lib import losses, optim, steps
from train_lib import state as state_lib
from train_lib.state import num_params

# LeCun et al. 1998, Table I, as printed: rows are S2 maps 0-5, columns C3 maps 0-15.
PAPER_TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def _table_matrix():
  rows = PAPER_TABLE_I.split()
  return np.array([[c == 'X' for c in row] for row in rows])


def _params(output='rbf', image=(28, 28, 1)):
  model = models.create_model('lenet5_1998', num_classes=10, output=output)
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image)))['params']


def _c3_responses(c3_params):
  """C3 output maps (before squashing) for inputs with a single nonzero S2 map each: [6, 16]."""
  conv = lenet.TableConv(lenet.C3_TABLE)
  x = jnp.zeros((6, 14, 14, 6)).at[jnp.arange(6), :, :, jnp.arange(6)].set(1.0)
  zero_bias = {**c3_params, 'bias': jnp.zeros_like(c3_params['bias'])}
  y = jax.jit(conv.apply)({'params': zero_bias}, x)
  return np.asarray(jnp.abs(y).max(axis=(1, 2)))


def test_c3_connection_table_is_the_papers_table_one():
  mine = np.zeros((6, 16), bool)
  for j, inputs in enumerate(lenet.C3_TABLE):
    mine[list(inputs), j] = True
  np.testing.assert_array_equal(mine, _table_matrix())
  assert mine.sum() == 60


def test_layer_parameter_counts_are_the_papers():
  # §II-B's per-layer counts of trainable parameters; they sum to 60,000.
  params = _params()
  counts = {name: num_params(p) for name, p in params.items()}
  assert counts == {'c1': 156, 's2': 12, 'c3': 1_516, 's4': 32, 'c5': 48_120, 'f6': 10_164}
  assert num_params(params) == 60_000  # the RBF prototypes are constants, not parameters
  assert params['c3']['kernel'].shape == (5, 5, 60)  # one 5×5 kernel per connection only
  assert num_params(_params(output='dense', image=(32, 32, 1))) == 60_000 + 84 * 10 + 10


def test_c3_connections_stay_as_the_table_through_training_with_momentum_and_decay():
  model = models.create_model('lenet5_1998', num_classes=10)
  config = default.get_config().optimizer
  config.update({'name': 'momentum', 'lr': 0.001, 'weight_decay': 5e-4})
  state = jax.jit(
      functools.partial(
          state_lib.create_train_state, model, optim.create_optimizer(config), 0, (28, 28, 1)
      )
  )()
  rng = np.random.default_rng(0)
  batch = {
      'image': rng.normal(size=(16, 28, 28, 1)).astype(np.float32),
      'label': rng.integers(0, 10, 16).astype(np.int32),
      'mask': np.ones(16, bool),
  }
  train_step = jax.jit(
      functools.partial(
          steps.train_step,
          loss_fn=losses.get_loss('softmax_xent'),
          learning_rate_fn=optax.constant_schedule(0.001),
      )
  )
  before, losses_seen = state.params['c3'], []
  for _ in range(4):
    state, metrics = train_step(state, batch)
    losses_seen.append(float(metrics['loss']))
  assert losses_seen[-1] < losses_seen[0]
  assert not np.allclose(state.params['c3']['kernel'], before['kernel'])  # C3 did train
  reached = _c3_responses(state.params['c3']) > 0
  np.testing.assert_array_equal(reached, _table_matrix())  # and reaches only its table's maps


def test_subsampling_is_window_sum_times_coefficient_plus_bias():
  x = jnp.arange(2 * 4 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 4, 2)
  params = {'coefficient': jnp.array([0.5, -2.0]), 'bias': jnp.array([1.0, 3.0])}
  y = lenet.Subsampling().apply({'params': params}, x)
  window_sums = x.reshape(2, 2, 2, 2, 2, 2).sum(axis=(2, 4))
  np.testing.assert_allclose(y, window_sums * params['coefficient'] + params['bias'])
  assert lenet.scaled_tanh(jnp.float32(1.0)) == pytest.approx(1.0, abs=1e-4)  # f(1) = 1


def test_rbf_logits_are_minus_squared_distances_to_fixed_prototypes():
  prototypes = lenet.rbf_prototypes(10)
  assert set(np.unique(prototypes)) == {-1.0, 1.0} and prototypes.shape == (10, 84)
  np.testing.assert_array_equal(prototypes @ prototypes.T, 84 * np.eye(10))  # equidistant
  np.testing.assert_array_equal(prototypes, lenet.rbf_prototypes(10))  # deterministic
  model = models.create_model('lenet5_1998', num_classes=10)
  x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits, inter = jax.jit(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates'])
  )(variables, x)
  f6 = lenet.scaled_tanh(inter['intermediates']['f6']['__call__'][0])
  expected = -((f6[:, None, :] - prototypes[None]) ** 2).sum(-1)
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  assert inter['intermediates']['c1']['__call__'][0].shape == (3, 28, 28, 6)  # 32×32 input
  cooled = models.create_model('lenet5_1998', num_classes=10, rbf_temperature=16.0)
  np.testing.assert_allclose(jax.jit(cooled.apply)(variables, x), expected / 16, rtol=1e-5)


def test_28_pixel_digits_are_padded_with_the_background_to_32():
  model = models.create_model('lenet5_1998', num_classes=10, output='dense')
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  padded = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-0.1)
  apply = jax.jit(model.apply)
  np.testing.assert_allclose(apply(variables, x), apply(variables, padded), rtol=1e-5, atol=1e-6)
  assert not np.allclose(apply(variables, x), apply(variables, x[:, ::-1]))


def test_config_argument_picks_variant_and_dataset():
  assert lenet5_mnist.get_config().model.name == 'lenet5'  # the README's quick start
  assert lenet5_mnist.get_config().dataset.name == 'offline_digits'
  assert lenet5_mnist.get_config('mnist').model.name == 'lenet5'
  paper = lenet5_mnist.get_config('fashion_mnist,lenet5_1998')
  assert (paper.model.name, paper.dataset.name) == ('lenet5_1998', 'fashion_mnist')
  # The paper's input scaling: background (0) → -0.1 = the model's pad value, ink (1) → 1.175.
  (mean,), (std,) = ast.literal_eval(paper.dataset.eval_preprocess[len('normalize') :])
  assert (0 - mean) / std == pytest.approx(paper.model.pad_value)
  assert (1 - mean) / std == pytest.approx(1.175)
  with pytest.raises(ValueError, match='Unknown config argument'):
    lenet5_mnist.get_config('lenet6')


@pytest.mark.parametrize('paper_init', [False, True])
def test_c3_initialisation_uses_each_maps_own_fan_in(paper_init):
  conv = lenet.TableConv(lenet.C3_TABLE, paper_init=paper_init)
  kernel = conv.init(jax.random.key(0), jnp.zeros((1, 14, 14, 6)))['params']['kernel']
  fan_in = np.array([25 * len(row) for row in lenet.C3_TABLE for _ in row])  # 75, 100 or 150
  bound = 2.4 / fan_in if paper_init else np.sqrt(3 / fan_in)
  magnitude = np.abs(np.asarray(kernel)).max(axis=(0, 1)) / bound
  assert np.all(magnitude <= 1.0)
  for f in (75, 100, 150):  # each group's largest weight nearly reaches its own bound
    assert magnitude[fan_in == f].max() > 0.9


def test_lenet5_overlapping_pools_and_dropout_rule_fields():
  model = models.create_model('lenet5', num_classes=10, pool_window=3, pool_stride=2)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 28, 28, 1)), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert params['fc1']['kernel'].shape == (4 * 4 * 16, 120)  # 28 → 13 → 9 → 4
  assert num_params(params) == 44_426
  # The rule reaches both dropout layers: multiplying fc1's and fc2's outputs by p = 0.5 at
  # test time is the inverted-dropout net with fc2's and the head's kernels halved.
  inverted = models.create_model('lenet5', num_classes=10, dropout_rate=0.5)
  variables = inverted.init(jax.random.key(0), x)
  p = variables['params']
  halved = {**p, 'fc2': {**p['fc2'], 'kernel': p['fc2']['kernel'] / 2}}
  halved['head'] = {**p['head'], 'kernel': p['head']['kernel'] / 2}
  np.testing.assert_allclose(
      inverted.clone(dropout_scaling='test').apply(variables, x),
      inverted.apply({'params': halved}, x),
      rtol=1e-5,
      atol=1e-6,
  )
