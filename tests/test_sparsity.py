"""Magnitude pruning in the optimizer: schedule, masks, training steps, fine-tuning modes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common.errors import ConfigError
from configs import default
from train_lib import losses, optim, sharding, sparsity, steps
from train_lib import state as state_lib

LOSS = losses.get_loss('softmax_xent')
IMAGE = (4, 4, 1)


class Tiny(nn.Module):
  """Two Dense layers on 4×4 images: fc1 16×16, fc2 16×10."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = nn.relu(nn.Dense(16, name='fc1')(x.reshape(x.shape[0], -1)))
    return nn.Dense(10, name='fc2')(x)


def _pruning(**fields):
  config = default.get_config().pruning
  config.update(fields)
  return config


def _sgd():
  config = default.get_config().optimizer
  config.update(name='sgd', momentum=0.0)
  return config


def _batch(seed=0, n=8):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(n, *IMAGE)).astype(np.float32),
      'label': rng.integers(0, 10, n).astype(np.int32),
      'mask': np.ones(n, bool),
  }


def _state(pruning, total_steps=0, params=None):
  prune = sparsity.pruning_transform(pruning, total_steps)
  tx = optax.chain(optim.create_optimizer(_sgd()), *([prune] if prune else []))
  state = jax.jit(functools.partial(state_lib.create_train_state, Tiny(), tx, 0, IMAGE))()
  if params is not None:  # a run started from given (compressed) weights
    state = state.replace(params=params, opt_state=tx.init(params))
  return state


@functools.lru_cache
def _step(lr=0.1):
  return jax.jit(
      functools.partial(
          steps.train_step, loss_fn=LOSS, learning_rate_fn=optax.constant_schedule(lr)
      )
  )


def _pruning_state(opt_state) -> sparsity.PruningState:
  (found,) = sparsity._pruning_states(opt_state)
  return found


def _reference_sparsity(step, initial, final, begin, end, frequency, power=3.0):
  """Zhu & Gupta's formula at the last update step ≤ step (updates at begin + iΔt and end)."""
  if step < begin:
    return 0.0
  updates = sorted({*range(begin, end + 1, frequency), end})
  last = max(u for u in updates if u <= step)
  progress = (last - begin) / (end - begin) if end > begin else 1.0
  return final + (initial - final) * (1.0 - progress) ** power


def _numpy_keep(magnitude, k):
  keep = np.ones(magnitude.size, bool)
  keep[np.argsort(magnitude.ravel(), kind='stable')[:k]] = False
  return keep.reshape(magnitude.shape)


@pytest.mark.parametrize('end', [50, 45, 10])
def test_schedule_follows_the_polynomial_formula(end):
  kw = dict(initial=0.1, final=0.8, begin_step=10, end_step=end, frequency=10, power=3.0)
  for step in (0, 9, 10, 15, 20, 33, 44, 45, 50, 60):
    got = float(sparsity.polynomial_sparsity(step, **kw))
    want = _reference_sparsity(step, 0.1, 0.8, 10, end, 10)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-7), step


def _one_shot(params, **fields):
  """Masks and masked updates after one update at the (one-shot) pruning step 5."""
  tx = sparsity.pruning_transform(_pruning(begin_step=5, end_step=5, **fields), 0)
  state = tx.init(params)._replace(count=jnp.asarray(5, jnp.int32))
  ones = jax.tree.map(jnp.ones_like, params)
  updates, state = tx.update(ones, state, params)
  return jax.tree.map(np.asarray, state.masks), updates


def _random_params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      'a': {
          'kernel': rng.normal(size=(10, 12)).astype(np.float32),
          'bias': rng.normal(size=12).astype(np.float32),
      },
      'b': {'kernel': 3 * rng.normal(size=(3, 3, 4, 5)).astype(np.float32)},
      'c': {'kernel': 0.5 * rng.normal(size=(7, 9)).astype(np.float32)},
  }


def test_layer_masks_prune_exactly_round_s_n_of_each_tensor():
  params = _random_params()
  masks, updates = _one_shot(params, sparsity=0.6, layer_sparsity='b/kernel=0.3')
  for name, s in (('a', 0.6), ('b', 0.3), ('c', 0.6)):
    kernel = params[name]['kernel']
    want = _numpy_keep(np.abs(kernel), int(np.round(s * kernel.size)))
    np.testing.assert_array_equal(masks[name]['kernel'], want)
    np.testing.assert_array_equal(updates[name]['kernel'], want.astype(np.float32))
  assert masks['a']['bias'].shape == ()  # never pruned
  np.testing.assert_array_equal(updates['a']['bias'], np.ones(12))


def test_global_masks_use_one_threshold_and_overrides_their_own():
  params = _random_params()
  masks, _ = _one_shot(params, sparsity=0.5, scope='global', layer_sparsity='c/kernel=0.2')
  pooled = np.concatenate([np.abs(params[n]['kernel']).ravel() for n in ('a', 'b')])
  threshold = np.sort(pooled)[int(np.round(0.5 * pooled.size)) - 1]
  for name in ('a', 'b'):
    np.testing.assert_array_equal(masks[name]['kernel'], np.abs(params[name]['kernel']) > threshold)
  # b's weights are 3× larger, so one threshold prunes it far less than a
  assert 1 - masks['b']['kernel'].mean() < 0.5 < 1 - masks['a']['kernel'].mean()
  c = params['c']['kernel']
  np.testing.assert_array_equal(masks['c']['kernel'], _numpy_keep(np.abs(c), round(0.2 * c.size)))


def test_training_steps_zero_pruned_weights_and_reach_the_target_at_end_step():
  state = _state(_pruning(sparsity=0.75, end_step=6, frequency=2), total_steps=10)
  batch, zeros_before = _batch(), {}
  losses_seen = []
  for t in range(9):
    state, metrics = _step()(state, batch)
    losses_seen.append(float(metrics['loss']))
    want = _reference_sparsity(t, 0.0, 0.75, 0, 6, 2)
    mask = _pruning_state(state.opt_state).masks
    for name in ('fc1', 'fc2'):
      kernel = np.asarray(state.params[name]['kernel'])
      zeros = kernel == 0
      assert zeros.sum() == int(np.round(np.float32(want) * kernel.size)), (t, name)
      np.testing.assert_array_equal(zeros, ~np.asarray(mask[name]['kernel']))
      assert (zeros >= zeros_before.get(name, False)).all()  # once pruned, stays zero
      zeros_before[name] = zeros
      assert np.count_nonzero(state.params[name]['bias']) == state.params[name]['bias'].size
  assert zeros_before['fc1'].mean() == pytest.approx(0.75, abs=1 / 256)
  assert losses_seen[-1] < losses_seen[0]
  assert sparsity.layer_sparsity(state.params) == {
      'fc1/kernel': (192, 256),
      'fc2/kernel': (120, 160),
  }


def test_a_non_finite_step_keeps_the_masks_and_the_count():
  state = _state(_pruning(sparsity=0.75, end_step=6, frequency=2), total_steps=10)
  batch = _batch()
  batch['image'][0, 0, 0, 0] = np.nan
  new_state, metrics = _step()(state, batch)
  assert float(metrics['finite']) == 0.0
  for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)


def _kernels_replaced(params, fn):
  """`params` (numpy) with every kernel replaced by fn(kernel)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: fn(np.asarray(p))
      if optim.path_name(path).endswith('kernel')
      else np.asarray(p),
      params,
  )


def _with_zeros(params, fraction=0.5, seed=1):
  rng = np.random.default_rng(seed)
  return _kernels_replaced(params, lambda k: k * (rng.random(k.shape) > fraction))


def test_keep_zeros_retrains_only_the_surviving_weights():
  params = _with_zeros(_state(None).params)
  state = _state(_pruning(keep_zeros=True), params=params)
  for _ in range(3):
    state, _ = _step()(state, _batch())
  for name in ('fc1', 'fc2'):
    before, after = params[name]['kernel'], np.asarray(state.params[name]['kernel'])
    np.testing.assert_array_equal(after == 0, before == 0)
    assert (after[before != 0] != before[before != 0]).mean() > 0.5  # the others trained


def _shared(params, seed=2):
  """Kernels quantized to a 4-value codebook with a third of the weights at zero."""
  rng = np.random.default_rng(seed)
  codebook = np.asarray([-0.3, -0.1, 0.2, 0.4], np.float32)

  def quantize(kernel):
    values = codebook[rng.integers(0, 4, kernel.shape)]
    return np.where(rng.random(kernel.shape) < 1 / 3, 0, values).astype(np.float32)

  return _kernels_replaced(params, quantize)


def test_keep_shared_moves_each_cluster_by_its_summed_gradient():
  params = _shared(_state(None).params)
  state, batch, lr = _state(_pruning(keep_shared=True), params=params), _batch(), 0.1

  def loss(p):
    logits = Tiny().apply({'params': p}, batch['image'])
    return jnp.mean(LOSS(logits, batch['label']))

  grads = jax.tree.map(np.asarray, jax.grad(loss)(params))
  state, _ = _step(lr)(state, batch)
  for name in ('fc1', 'fc2'):
    w, g = params[name]['kernel'], grads[name]['kernel']
    want = w.copy()
    for value in np.unique(w[w != 0]):
      cluster = w == value
      want[cluster] = value - lr * g[cluster].sum(dtype=np.float64)
    np.testing.assert_allclose(state.params[name]['kernel'], want, rtol=1e-5, atol=1e-6)
    want_bias = params[name]['bias'] - lr * grads[name]['bias']
    np.testing.assert_allclose(state.params[name]['bias'], want_bias, rtol=1e-5, atol=1e-6)
  for _ in range(3):
    state, _ = _step(lr)(state, batch)
  for name in ('fc1', 'fc2'):
    w, after = params[name]['kernel'], np.asarray(state.params[name]['kernel'])
    assert len(np.unique(after)) <= len(np.unique(w))
    np.testing.assert_array_equal(after == 0, w == 0)
    for value in np.unique(w[w != 0]):  # members of a cluster stay exactly equal
      assert len(np.unique(after[w == value])) == 1


@pytest.mark.parametrize(
    'fields, total_steps, message',
    [
        (dict(sparsity=1.2), 10, r'pruning.sparsity=1.2 is outside \[0, 1\)'),
        (dict(initial_sparsity=-0.1, sparsity=0.5), 10, 'initial_sparsity=-0.1 is outside'),
        (dict(sparsity=0.5, layer_sparsity='fc1/.*=1.0'), 10, "'fc1/.\\*'=1.0 is outside"),
        (dict(sparsity=0.5, layer_sparsity='fc1'), 10, 'Bad pruning.layer_sparsity'),
        (dict(sparsity=0.5, scope='globl'), 10, "scope='globl'.*Did you mean global"),
        (dict(sparsity=0.5, keep_shared=True), 10, 'keep_shared'),
        (dict(sparsity=0.5), 0, 'end_step=0 means 3/4 of the run'),
        (dict(sparsity=0.5, begin_step=8, end_step=4), 10, 'before pruning.begin_step'),
        (dict(sparsity=0.5, end_step=10), 10, r'end_step=10 is not before the run.s end'),
        (dict(sparsity=0.5, frequency=0), 10, 'frequency=0'),
        (dict(sparsity=0.5, params='(kernel'), 10, 'is not a regex'),
    ],
)
def test_bad_configs_raise_config_errors(fields, total_steps, message):
  with pytest.raises(ConfigError, match=message):
    sparsity.pruning_transform(_pruning(**fields), total_steps)


@pytest.mark.parametrize(
    'fields, message',
    [
        (
            dict(params='.*weight'),
            r"'\.\*weight' matches no parameter; parameters: l0/bias, l0/kernel, l1/bias, .*"
            r'l13/kernel, \.\.\. \(16 more\)\.$',
        ),
        (dict(layer_sparsity='conv1/kernel=0.5'), "'conv1/kernel' matches no prunable"),
    ],
)
def test_regexes_that_match_nothing_raise_at_init(fields, message):
  tx = sparsity.pruning_transform(_pruning(sparsity=0.5, **fields), 10)
  params = {f'l{i}': {'bias': np.zeros(3), 'kernel': np.ones((2, 3))} for i in range(14)}
  with pytest.raises(ConfigError, match=message):
    tx.init(params)


def test_off_adds_nothing_and_configs_without_pruning_still_work():
  assert sparsity.pruning_transform(_pruning(), 100) is None
  assert sparsity.pruning_transform(None, 100) is None
  config = default.get_config()
  config.optimizer = _sgd()
  mesh = sharding.make_mesh()
  on = config.copy_and_resolve_references()
  on.pruning.sparsity = 0.5
  state = state_lib.init_state(on, Tiny(), IMAGE, mesh, total_steps=8)
  assert _pruning_state(state.opt_state).masks['fc1']['kernel'].shape == (16, 16)
  del config['pruning']
  state = state_lib.init_state(config, Tiny(), IMAGE, mesh)
  assert sparsity._pruning_states(state.opt_state) == []
  params = jax.tree.map(np.asarray, state.params)
  constrained = sparsity.constrain(state.params, state.opt_state)
  for a, b in zip(jax.tree.leaves(constrained), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
