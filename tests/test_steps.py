"""The pure train and eval steps."""

import functools

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

import models
from configs import default
from train_lib import losses, optim, steps
from train_lib import state as state_lib

LOSS = losses.get_loss('softmax_xent')


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.normal(size=(n, 28, 28, 1)).astype(np.float32),
      'label': rng.integers(0, 10, n).astype(np.int32),
      'mask': np.ones(n, bool),
  }


def _state(model=None, **optimizer_fields):
  config = default.get_config().optimizer
  config.update({'name': 'sgd', **optimizer_fields})
  model = model or models.create_model('lenet5', num_classes=10, batch_norm=True)
  init = functools.partial(
      state_lib.create_train_state, model, optim.create_optimizer(config), 0, (28, 28, 1)
  )
  return jax.jit(init)()  # one compile beats op-by-op eager initialisation


@functools.lru_cache
def _jitted_train_step(lr, aux_loss_weight):
  return jax.jit(
      functools.partial(
          steps.train_step,
          loss_fn=LOSS,
          aux_loss_weight=aux_loss_weight,
          learning_rate_fn=optax.constant_schedule(lr),
      )
  )


_eval_step = jax.jit(functools.partial(steps.eval_step, loss_fn=LOSS))  # compiled beats eager


def _train_step(state, batch, lr=0.1, aux_loss_weight=0.3):
  return _jitted_train_step(lr, aux_loss_weight)(state, batch)


def test_a_step_lowers_the_loss_and_counts():
  state, batch = _state(), _batch()
  state, first = _train_step(state, batch)  # each step reports the loss before its update
  state, second = _train_step(state, batch)
  assert int(state.step) == 2 and float(first['finite']) == 1.0
  assert float(first['lr']) == pytest.approx(0.1)
  assert float(second['loss']) < float(first['loss'])


def test_non_finite_step_leaves_the_state_untouched():
  state, batch = _state(), _batch()
  batch['image'][0, 0, 0, 0] = np.nan
  new_state, m = _train_step(state, batch)
  assert float(m['finite']) == 0.0 and int(new_state.step) == 0
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)


def test_zero_lr_multiplier_freezes_a_layer():
  state = _state(lr_multipliers='conv1/.*=0')
  new_state, _ = _train_step(state, _batch())
  np.testing.assert_array_equal(
      new_state.params['conv1']['kernel'], state.params['conv1']['kernel']
  )
  np.testing.assert_array_equal(new_state.params['conv1']['bias'], state.params['conv1']['bias'])
  assert not np.array_equal(new_state.params['conv2']['kernel'], state.params['conv2']['kernel'])


class _WithAuxHead(nn.Module):
  """A two-head toy model in the GoogLeNet style: the aux head is sown in training only."""

  @nn.compact
  def __call__(self, x, train=False):
    h = x.reshape(x.shape[0], -1)
    if train:
      self.sow('intermediates', 'aux_logits', nn.Dense(10, name='aux')(h))
    return nn.Dense(10, name='main')(h)


def test_auxiliary_losses_are_weighted_into_the_training_loss():
  model = _WithAuxHead()
  state, batch = _state(model), _batch()
  _, m = _train_step(state, batch, lr=0.0, aux_loss_weight=0.3)
  variables = {'params': state.params}
  main = LOSS(model.apply(variables, batch['image']), batch['label']).mean()
  aux = LOSS(
      nn.Dense(10).apply({'params': state.params['aux']}, batch['image'].reshape(8, -1)),
      batch['label'],
  ).mean()
  np.testing.assert_allclose(m['main_loss'], main, rtol=1e-5)
  np.testing.assert_allclose(m['loss'], main + 0.3 * aux, rtol=1e-5)
  # Eval reads the main head only.
  sums = _eval_step(state, batch)
  np.testing.assert_allclose(sums['loss_sum'] / 8, main, rtol=1e-5)


def test_eval_step_ignores_padding():
  state, batch = _state(), _batch(8)
  full = _eval_step(state, batch)
  padded = {k: np.concatenate([v, v[:3]]) for k, v in batch.items()}
  padded['mask'][8:] = False
  padded['label'][8:] = (padded['label'][8:] + 1) % 10  # wrong labels that must not count
  sums = _eval_step(state, padded)
  assert float(sums['count']) == 8
  for key in ('loss_sum', 'top1_sum', 'top5_sum'):
    np.testing.assert_allclose(sums[key], full[key], rtol=1e-5)


def test_mixup_loss_mixes_the_two_labels_losses():
  state, batch = _state(), _batch()
  partner = np.roll(batch['label'], 1)
  _, mixed = _train_step(
      state, {**batch, 'mix_label': partner, 'mix_weight': np.full(8, 0.3, np.float32)}, lr=0.0
  )
  logits, _ = state.apply_fn(
      state.variables(), batch['image'], train=True, mutable=['batch_stats']
  )  # as the step sees them: batch statistics
  expected = 0.7 * LOSS(logits, batch['label']).mean() + 0.3 * LOSS(logits, partner).mean()
  np.testing.assert_allclose(mixed['loss'], expected, rtol=1e-5)


def test_views_are_classified_by_their_average_softmax():
  state, batch = _state(), _batch(4)
  rng = np.random.default_rng(1)
  views = rng.normal(size=(4, 3, 28, 28, 1)).astype(np.float32)
  sums = _eval_step(state, {**batch, 'image': views})
  logits = state.apply_fn(state.variables(), views.reshape(12, 28, 28, 1), train=False)
  probs = np.asarray(jax.nn.softmax(logits)).reshape(4, 3, 10).mean(axis=1)
  expected_loss = -np.log(probs[np.arange(4), batch['label']]).sum()
  np.testing.assert_allclose(sums['loss_sum'], expected_loss, rtol=1e-5)
  assert float(sums['top1_sum']) == np.sum(probs.argmax(-1) == batch['label'])
  # One view repeated gives that view's single-view result.
  single = _eval_step(state, batch)
  repeated = _eval_step(state, {**batch, 'image': np.repeat(batch['image'][:, None], 3, 1)})
  for key in single:
    np.testing.assert_allclose(repeated[key], single[key], rtol=1e-5, atol=1e-6)
