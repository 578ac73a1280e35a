"""Mixed precision, `config.precision`: bfloat16 compute, float32 state, logits and loss.

Every registered model's bfloat16 trace (convolutions and matrix multiplies in bfloat16;
parameters, BatchNorm statistics and logits in float32) is checked in tests/test_every_model.py,
on the one abstract trace it takes of each model anyway. Here: the switch itself, a whole train
step's gradients in bfloat16, and a short training run against the float32 one.
"""

import functools

import jax
import jax.numpy as jnp
import model_testing
import numpy as np
import optax
import pytest
from conftest import read_json

import models
from common.errors import ConfigError
from configs import default
from train_lib import checkpoint, config_checks, losses, steps, train
from train_lib.state import create_train_state

F32, BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)


def test_precision_sets_the_compute_dtype_and_model_dtype_still_works():
  assert models.from_config({'name': 'lenet5'}, 10).dtype == F32
  assert models.from_config({'name': 'lenet5'}, 10, precision='bfloat16').dtype == BF16
  # The older per-model switch wins while precision is left at float32, and may agree with it.
  assert models.from_config({'name': 'lenet5', 'dtype': 'bfloat16'}, 10).dtype == BF16
  lenet = {'name': 'lenet5', 'dtype': 'bfloat16'}
  assert models.from_config(lenet, 10, precision='bfloat16').dtype == BF16
  with pytest.raises(ConfigError, match='model.dtype=float32 conflicts with precision=bfloat16'):
    models.from_config({'name': 'lenet5', 'dtype': 'float32'}, 10, precision='bfloat16')


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('precision', 'float16', "precision='float16' is unknown: .* float32, bfloat16"),
        ('precision', 'bf16', "precision='bf16' is unknown"),
        ('dataset.threads', -1, 'dataset.threads=-1 is out of range'),
    ],
)
def test_config_checks_refuse_a_bad_precision_or_thread_count_in_one_line(field, value, message):
  config = default.get_config()
  config_checks.check_values(config)  # the defaults pass
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = value
  with pytest.raises(ConfigError, match=message) as raised:
    config_checks.check_values(config)
  assert '\n' not in str(raised.value)


def test_config_checks_refuse_a_model_dtype_that_conflicts_with_precision():
  config = default.get_config()
  config.model.dtype = 'float32'
  config.precision = 'bfloat16'
  with pytest.raises(ConfigError, match='drop model.dtype'):
    config_checks.check_values(config)


def test_train_step_computes_gradients_in_bfloat16_and_keeps_float32_state():
  # resnet20's whole train step, traced: forward and backward convolutions and the classifier's
  # matmuls take bfloat16 operands; the new parameters, momentum, BatchNorm statistics and the
  # loss come out float32.
  model = models.from_config({'name': 'resnet20'}, 10, precision='bfloat16')
  tx = optax.sgd(0.1, momentum=0.9)
  state = jax.eval_shape(lambda: create_train_state(model, tx, 0, (32, 32, 3)))
  batch = {
      'image': jax.ShapeDtypeStruct((8, 32, 32, 3), F32),
      'label': jax.ShapeDtypeStruct((8,), jnp.int32),
      'mask': jax.ShapeDtypeStruct((8,), jnp.bool_),
  }
  step = functools.partial(
      steps.train_step, loss_fn=losses.get_loss('softmax_xent'), learning_rate_fn=lambda _: 0.1
  )
  jaxpr, (new_state, metrics) = jax.make_jaxpr(step, return_shape=True)(state, batch)
  assert model_testing.operand_dtypes(jaxpr) == {BF16}
  convs = [e for e in jaxpr.eqns if e.primitive.name == 'conv_general_dilated']
  # Each conv's forward and two gradients, less the image's gradient. On the CPU the stem's
  # forward is a matrix product, and its custom gradient traces the image's too, which XLA
  # drops unused.
  assert len(convs) == 3 * 19 - 1
  for tree in (new_state.params, new_state.opt_state, new_state.batch_stats):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)} == {F32}
  assert metrics['loss'].dtype == F32 and metrics['grad_norm'].dtype == F32


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data_dir):
  """The small LeNet-5 run (12 steps on the offline digits) at each precision: results, workdir."""
  import conftest

  found = {}
  for precision in ('float32', 'bfloat16'):
    config = conftest.small_lenet5_config(data_dir)
    config.precision = precision
    workdir = tmp_path_factory.mktemp(precision)
    found[precision] = train.train_and_evaluate(config, str(workdir)), workdir
  return found


def test_bfloat16_training_keeps_float32_weights_and_optimizer_state(runs):
  _, workdir = runs['bfloat16']
  assert read_json(workdir / 'config.json')['config']['precision'] == 'bfloat16'
  step, saved = checkpoint.read_newest(str(workdir / 'checkpoints'))
  assert step == 12
  for part in ('params', 'batch_stats', 'opt_state'):
    floats = {
        np.asarray(leaf).dtype
        for leaf in jax.tree.leaves(saved[part])
        if np.issubdtype(np.asarray(leaf).dtype, np.floating)
    }
    assert floats == {F32}, part


def test_bfloat16_training_follows_the_float32_run(runs):
  (full, _), (half, _) = runs['float32'], runs['bfloat16']
  assert np.isfinite(half['eval_loss'])
  assert half['eval_loss'] != full['eval_loss']  # it did compute in bfloat16
  assert half['eval_loss'] == pytest.approx(full['eval_loss'], rel=0.02)
  assert (
      abs(half['eval_top1'] - full['eval_top1']) < 0.03
  )  # measured: 0.308 and 0.309, losses 1.915 and 1.924
