"""Schedules, optimizers, weight-decay masks, lr multipliers and losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from train_lib import losses, optim, schedules


def _schedule(**fields):
  config = default.get_config().schedule
  config.update(fields)
  return config


def _optimizer(**fields):
  config = default.get_config().optimizer
  config.update(fields)
  return config


def test_step_schedule_divides_by_ten_at_the_given_epochs():
  lr = schedules.create_learning_rate_fn(
      _schedule(name='step', decay_epochs=(2, 3)), 0.1, steps_per_epoch=10, total_steps=40
  )
  np.testing.assert_allclose(
      [lr(0), lr(19), lr(20), lr(29), lr(30), lr(39)],
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
      rtol=1e-6,
  )


def test_warmup_then_cosine():
  lr = schedules.create_learning_rate_fn(
      _schedule(name='cosine', warmup_epochs=1.0, final_lr_fraction=0.1),
      1.0,
      steps_per_epoch=10,
      total_steps=110,
  )
  np.testing.assert_allclose(
      [lr(0), lr(5), lr(10), lr(60), lr(110)], [0.0, 0.5, 1.0, 0.55, 0.1], atol=1e-6
  )


def test_warmup_shifts_nothing_in_step_schedule_boundaries():
  lr = schedules.create_learning_rate_fn(
      _schedule(name='step', warmup_epochs=1.0, decay_epochs=(3,)), 1.0, 10, 50
  )
  np.testing.assert_allclose([lr(5), lr(29), lr(30)], [0.5, 1.0, 0.1], atol=1e-6)


def test_exponential_schedule_multiplies_every_few_epochs():
  # Inception v3: lr x 0.94 every 2 epochs, as a staircase.
  lr = schedules.create_learning_rate_fn(
      _schedule(name='exponential', decay_factor=0.94, decay_every_epochs=2.0), 0.045, 10, 100
  )
  np.testing.assert_allclose(
      [lr(0), lr(19), lr(20), lr(39), lr(40), lr(99)],
      [0.045, 0.045, 0.045 * 0.94, 0.045 * 0.94, 0.045 * 0.94**2, 0.045 * 0.94**4],
      rtol=1e-6,
  )
  with pytest.raises(ValueError, match='decay_every_epochs'):
    schedules.create_learning_rate_fn(_schedule(name='exponential'), 0.1, 10, 10)


@pytest.mark.parametrize('power', [1.0, 0.5])
def test_poly_schedule_is_caffes(power):
  # Caffe's "poly": base_lr (1 - t/T)^power; power 1 is SqueezeNet's and ShuffleNet's linear decay.
  lr = schedules.create_learning_rate_fn(_schedule(name='poly', power=power), 0.04, 10, 100)
  steps = np.array([0, 25, 50, 99, 100])
  np.testing.assert_allclose([lr(t) for t in steps], 0.04 * (1 - steps / 100) ** power, atol=1e-7)


def test_unknown_schedule_and_optimizer_are_explained():
  with pytest.raises(ValueError, match='Unknown schedule.*cosine'):
    schedules.create_learning_rate_fn(_schedule(name='cosin'), 0.1, 10, 10)
  with pytest.raises(ValueError, match='Unknown optimizer.*nesterov'):
    optim.create_optimizer(_optimizer(name='adagrad'))


def test_plateau_reduces_after_patience_and_at_most_max_times():
  state = schedules.plateau_init()
  kwargs = dict(higher_is_better=True, patience=2, factor=0.1, max_reductions=2, min_delta=0.0)
  scales = []
  for accuracy in [0.5, 0.6, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]:
    state = schedules.plateau_update(state, accuracy, **kwargs)
    scales.append(round(float(state.lr_scale), 6))
  assert scales == [1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01]
  assert int(state.num_reductions) == 2 and float(state.best) == pytest.approx(0.7)


def test_plateau_on_a_loss_wants_it_lower():
  state = schedules.plateau_init()
  for loss in [1.0, 0.9, 0.95]:
    state = schedules.plateau_update(
        state, loss, higher_is_better=False, patience=1, factor=0.5, max_reductions=3, min_delta=0.0
    )
  assert float(state.lr_scale) == 0.5


PARAMS = {
    'conv1': {'kernel': jnp.ones((3, 3, 1, 2)), 'bias': jnp.ones(2)},
    'bn1': {'scale': jnp.ones(2), 'bias': jnp.ones(2)},
    'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)},
}


def test_weight_decay_can_skip_biases_and_norm_parameters():
  skip = optim.decay_mask(PARAMS, include_norm_and_bias=False)
  assert skip == {
      'conv1': {'kernel': True, 'bias': False},
      'bn1': {'scale': False, 'bias': False},
      'head': {'kernel': True, 'bias': False},
  }
  assert all(jax.tree.leaves(optim.decay_mask(PARAMS, include_norm_and_bias=True)))


def _direction(params, grads, **fields):
  tx = optim.create_optimizer(_optimizer(**fields))
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_coupled_weight_decay_adds_wd_times_weight_to_the_gradient():
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  d = _direction(PARAMS, zeros, name='sgd', weight_decay=0.01)
  np.testing.assert_allclose(d['conv1']['kernel'], 0.01)
  np.testing.assert_allclose(d['conv1']['bias'], 0.0)
  np.testing.assert_allclose(d['bn1']['scale'], 0.0)


def test_lr_multipliers_scale_and_freeze_by_pattern():
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  d = _direction(PARAMS, grads, name='sgd', lr_multipliers='conv1/.*=0, .*bias=2')
  np.testing.assert_array_equal(d['conv1']['kernel'], 0.0)  # first matching rule wins
  np.testing.assert_array_equal(d['conv1']['bias'], 0.0)
  np.testing.assert_array_equal(d['head']['bias'], 2.0)
  np.testing.assert_array_equal(d['head']['kernel'], 1.0)
  with pytest.raises(ValueError, match='regex=number'):
    optim.parse_lr_multipliers('conv1')


def test_gradient_clipping_bounds_the_global_norm():
  grads = jax.tree.map(lambda p: 100.0 * jnp.ones_like(p), PARAMS)
  d = _direction(PARAMS, grads, name='sgd', grad_clip_norm=1.0)
  assert float(optax.global_norm(d)) == pytest.approx(1.0, rel=1e-5)


def test_adamw_decay_is_decoupled_from_the_adaptive_scaling():
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  adamw = _direction(PARAMS, zeros, name='adamw', weight_decay=0.01)
  adam = _direction(PARAMS, zeros, name='adam', weight_decay=0.01)
  np.testing.assert_allclose(adamw['head']['kernel'], 0.01, rtol=1e-6)  # added after scaling
  assert float(adam['head']['kernel'][0, 0]) > 0.5  # Adam normalises the L2 gradient to ~1


@pytest.mark.parametrize('name', optim.OPTIMIZERS)
def test_every_optimizer_descends_a_quadratic(name):
  tx = optim.create_optimizer(_optimizer(name=name))
  params = {'w': jnp.array([3.0, -2.0])}
  state = tx.init(params)
  for _ in range(50):
    grads = {'w': 2 * params['w']}
    direction, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, d: p - 0.05 * d, params, direction)
  assert float(jnp.sum(params['w'] ** 2)) < 0.5 * 13.0


def test_label_smoothing_and_l2_losses():
  logits = jnp.array([[0.0, 0.0, 0.0, 0.0]])
  labels = jnp.array([2])
  np.testing.assert_allclose(losses.get_loss('softmax_xent')(logits, labels), np.log(4), rtol=1e-6)
  confident = jnp.array([[0.0, 0.0, 20.0, 0.0]])
  plain = losses.get_loss('softmax_xent')(confident, labels)
  smoothed = losses.get_loss('softmax_xent', label_smoothing=0.1)(confident, labels)
  assert float(smoothed[0]) > float(plain[0]) + 0.4  # smoothing penalises over-confidence
  np.testing.assert_allclose(losses.l2(jnp.array([[1.0, 0.0, 1.0]]), jnp.array([0])), 0.5)
  np.testing.assert_allclose(losses.l2(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 1.0]])), 2.5)
