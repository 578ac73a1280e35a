"""Helpers for the model tests: shapes and counts without compute, and cheap compiles."""

import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
from train_lib import losses, schedules, steps
from train_lib.state import TrainState, num_params

# Compute tests compile small graphs that run once: LLVM -O0 without its expensive passes, the
# older fusion code generator and the rbg PRNG keep XLA's CPU compile time down (the new fusion
# emitters alone cost a third of the inception_v3 train step's compile).
fast_jit = functools.partial(
    jax.jit,
    compiler_options={
        'xla_backend_optimization_level': 0,
        'xla_llvm_disable_expensive_passes': True,
        'xla_cpu_use_fusion_emitters': False,
    },
)
FAST_KEY = jax.random.key(0, impl='rbg')


def equations(jaxpr) -> Iterator[Any]:
  """Every equation of `jaxpr`, nested jaxprs (jit, remat, custom gradients, control flow)
  included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
          yield from equations(sub)


def operand_dtypes(jaxpr) -> set:
  """The dtypes of every convolution's and matrix multiply's operands in `jaxpr`, nested
  jaxprs included."""
  contractions = ('conv_general_dilated', 'dot_general')
  return {
      v.aval.dtype for e in equations(jaxpr) if e.primitive.name in contractions for v in e.invars
  }


@functools.cache
def abstract(name: str, size: int, batch: int = 1, **kwargs):
  """Shapes of params and of every submodule's output ('intermediates'), without compute."""
  model = models.create_model(name, **{'num_classes': 1000, **kwargs})
  return jax.eval_shape(
      functools.partial(model.init, capture_intermediates=True),
      jax.random.key(0),
      jnp.zeros((batch, size, size, 3)),
  )


def count(name: str, size: int, **kwargs) -> int:
  """Trainable parameters of `name` at a `size`×`size` input."""
  return num_params(abstract(name, size, **kwargs)['params'])


def shapes(name: str, size: int, batch: int = 1, **kwargs):
  """(variables' shapes, {top-level submodule: output shape})."""
  variables = abstract(name, size, batch, **kwargs)
  outputs = {
      k: v['__call__'][0].shape for k, v in variables['intermediates'].items() if k != '__call__'
  }
  return variables, outputs


def macs(name: str, size: int, **kwargs) -> int:
  """Multiply-accumulates of every conv and dense layer (as docs/published_figures.md counts
  them), from each kernel's size times its layer's output positions (grouped kernels are already
  1/groups)."""
  variables = abstract(name, size, **kwargs)
  total = 0
  for path, kernel in jax.tree_util.tree_leaves_with_path(variables['params']):
    if path[-1].key == 'kernel':
      node = variables['intermediates']
      for key in path[:-1]:
        node = node[key.key]
      total += kernel.size * int(np.prod(node['__call__'][0].shape[1:-1]))
  return total


def host_state(model, image_shape, tx: optax.GradientTransformation | None = None):
  """A train state filled on the host from `jax.eval_shape` of init, so nothing compiles init.

  Kernels are He-normal over their fan-in, BN scales and running variances one, everything else
  zero: a sane start for testing the train step (each family tests its own init separately).
  """
  shapes = jax.eval_shape(
      functools.partial(model.init, train=True),
      {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
      jnp.zeros((1, *image_shape)),
  )
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0, np.sqrt(2 / fan_in), leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, np.float32)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  params = variables['params']
  tx = tx or optax.identity()
  return TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      rng=jax.random.key_data(FAST_KEY),
      plateau=schedules.plateau_init(),
      apply_fn=model.apply,
      tx=tx,
      rng_impl='rbg',
  )


def train_and_eval_step(name: str, size: int, num_classes: int = 5, batch: int = 2, **fields):
  """Runs the trainer's own train_step, then eval_step on the new state, on `name` at a `size`²
  input (one compiled program: compiling dominates on a CPU).

  Asserts what every model must do: a finite loss, a non-zero gradient that moves the
  parameters, BatchNorm statistics that move in training (where the model has them), and a
  finite eval over the whole batch. Returns (train, eval) metrics.
  """
  model = models.create_model(name, num_classes=num_classes, **fields)
  images = np.random.default_rng(1).standard_normal((batch, size, size, 3), np.float32)
  data = {'image': images, 'label': np.arange(batch) % num_classes, 'mask': np.ones(batch, bool)}
  state = host_state(model, images.shape[1:])
  loss_fn = losses.get_loss('softmax_xent')

  @fast_jit
  def train_then_eval(state):
    new_state, train_metrics = steps.train_step(
        state, data, loss_fn=loss_fn, learning_rate_fn=lambda _: 0.01
    )
    return new_state, train_metrics, steps.eval_step(new_state, data, loss_fn=loss_fn)

  new_state, train_metrics, eval_metrics = jax.device_get(train_then_eval(state))
  assert train_metrics['finite'] == 1 and train_metrics['loss'] > 0
  assert train_metrics['grad_norm'] > 0
  assert _differs(state.params, new_state.params), 'the train step left the parameters unchanged'
  if jax.tree.leaves(state.batch_stats):
    assert _differs(state.batch_stats, new_state.batch_stats), 'BatchNorm statistics did not move'
  assert eval_metrics['count'] == batch and np.isfinite(eval_metrics['loss_sum'])
  return train_metrics, eval_metrics


def _differs(before, after) -> bool:
  return any(
      not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
  )
