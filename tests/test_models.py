"""Model registry and LeNet-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from train_lib.state import num_params


def _init(model, x):
  return jax.jit(model.init)(jax.random.key(0), x)  # one compile beats op-by-op eager init


def _apply(model, variables, x, **kwargs):
  return jax.jit(model.apply, static_argnames=('train', 'mutable'))(variables, x, **kwargs)


def _param_count(name, image_shape, **kwargs):
  model = models.create_model(name, **kwargs)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
  return num_params(variables['params'])


def test_lenet5_parameter_count_matches_d2l():
  assert _param_count('lenet5', (28, 28, 1), num_classes=10) == 61_706  # docs/published_figures.md


def test_lenet5_head_scales_with_classes():
  # Only the head changes: 84 × (classes + ...) + bias.
  assert _param_count('lenet5', (28, 28, 1), num_classes=3) == 61_706 - 7 * 85


def test_lenet5_paper_form_is_sigmoid_and_average_pooling():
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  relu = models.create_model('lenet5', num_classes=10)
  paper = models.create_model('lenet5', num_classes=10, activation='sigmoid', pooling='avg')
  variables = _init(relu, x)
  # Same parameters, different functions.
  assert not np.allclose(_apply(relu, variables, x), _apply(paper, variables, x))
  with pytest.raises(ValueError, match='Unknown activation'):
    models.create_model('lenet5', num_classes=10, activation='swishy').init(jax.random.key(0), x)


def test_batch_norm_uses_batch_statistics_in_training_only():
  model = models.create_model('lenet5', num_classes=10, batch_norm=True)
  x = 3.0 + jax.random.normal(jax.random.key(1), (8, 28, 28, 1))
  variables = _init(model, x)
  train_out, updates = _apply(model, variables, x, train=True, mutable=('batch_stats',))
  eval_out = _apply(model, variables, x, train=False)
  assert not np.allclose(train_out, eval_out, atol=1e-3)
  moved = jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()), updates['batch_stats'], variables['batch_stats']
  )
  assert max(jax.tree.leaves(moved)) > 0.01  # running averages were updated


def test_dropout_is_active_in_training_only():
  model = models.create_model('lenet5', num_classes=10, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  variables = _init(model, x)
  a = _apply(model, variables, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = _apply(model, variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(_apply(model, variables, x), _apply(model, variables, x))


def test_registry_errors_name_the_known_choices():
  assert 'lenet5' in models.list_models()
  with pytest.raises(models.UnknownModelError, match='Did you mean lenet5.*Known models: .*lenet5'):
    models.create_model('lenet', num_classes=10)
  with pytest.raises(models.UnknownModelError, match='no field.*widht.*fields are: .*pooling'):
    models.create_model('lenet5', num_classes=10, widht=2)


def test_half_precision_computes_in_bfloat16_and_returns_float32_logits():
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  full = models.create_model('lenet5', num_classes=10)
  half = models.create_model('lenet5', num_classes=10, dtype=jnp.bfloat16)
  variables = _init(full, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))  # master weights
  out_full, out_half = _apply(full, variables, x), _apply(half, variables, x)
  assert out_half.dtype == jnp.float32
  assert not np.array_equal(out_full, out_half)  # rounded to bf16 inside
  np.testing.assert_allclose(out_half, out_full, atol=0.05, rtol=0.05)
