"""The train state: everything a run needs to continue exactly where it stopped."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from train_lib import optim, schedules, sharding, sparsity


class TrainState(struct.PyTreeNode):
  """step, params, batch_stats, opt_state, rng (raw key data of `rng_impl`) and
  reduce-on-plateau state."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array
  plateau: schedules.PlateauState
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  rng_impl: str = struct.field(pytree_node=False, default='threefry2x32')

  def variables(self) -> dict[str, Any]:
    """The model variables for `apply_fn`."""
    return {'params': self.params, 'batch_stats': self.batch_stats}

  def step_rng(self) -> jax.Array:
    """This step's key: the run's key folded with the step number, so that a resumed run draws
    exactly the dropout masks of an uninterrupted one."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng, impl=self.rng_impl), self.step)


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, image_shape: tuple[int, ...]
) -> TrainState:
  """Initialises parameters from `seed` on a dummy batch of `image_shape` images.

  Initialises in training mode so that heads used only in training (auxiliary classifiers)
  get parameters too; flax leaves BatchNorm's running statistics at their initial values.
  """
  init_rng, run_rng = jax.random.split(jax.random.key(seed))
  variables = model.init(
      {'params': init_rng, 'dropout': init_rng},
      jnp.zeros((1, *image_shape), jnp.float32),
      train=True,
  )
  params = variables['params']
  return TrainState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      rng=jax.random.key_data(run_rng),
      plateau=schedules.plateau_init(),
      apply_fn=model.apply,
      tx=tx,
      rng_impl=str(jax.random.key_impl(run_rng)),
  )


def num_params(params: Any) -> int:
  """Trainable parameter count."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def init_state(
    config: ml_collections.ConfigDict,
    model: nn.Module,
    image_shape: tuple[int, ...],
    mesh: jax.sharding.Mesh,
    total_steps: int = 0,
) -> TrainState:
  """The initial train state, replicated over the mesh (compiled once, not run op by op).

  `total_steps` sets the default end of the pruning schedule (config.pruning, if any)."""
  tx = optim.create_optimizer(config.optimizer)
  prune = sparsity.pruning_transform(config.get('pruning'), total_steps)
  if prune:  # last: it masks the final direction
    tx = optax.chain(tx, prune)
  init = functools.partial(create_train_state, model, tx, config.seed, image_shape)
  return jax.jit(init, out_shardings=sharding.replicated(mesh))()
