"""Learning-rate schedules by name, and reduce-on-plateau as AlexNet used it."""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from common.errors import ConfigError
from train_lib import metrics

SCHEDULES = ('constant', 'step', 'exponential', 'cosine', 'poly', 'plateau')
PLATEAU_METRICS = tuple(f'eval_{name}' for name in metrics.SUMMARY_NAMES)


def create_learning_rate_fn(
    config: ml_collections.ConfigDict,
    base_lr: float,
    steps_per_epoch: int,
    total_steps: int,
    scores: Sequence[str] = PLATEAU_METRICS,
) -> optax.Schedule:
  """lr(step) for `config.name`, after `config.warmup_epochs` of linear warmup from 0.

  step: multiply by `decay_factor` at each of `decay_epochs` (0.1 → "divide by 10").
  exponential: multiply by `decay_factor` every `decay_every_epochs` (Inception: 0.94 every 2).
  cosine: decay to `final_lr_fraction * base_lr` at `total_steps`.
  poly: Caffe's (1 − t/T)^`power` to `final_lr_fraction * base_lr` at `total_steps` (1: linear).
  constant and plateau: flat (plateau's reductions act on top, see `plateau_update`); plateau
  watches `config.metric`, one of the eval `scores` of the run's task.
  """
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.name == 'plateau' and config.metric not in scores:
    raise ConfigError(
        f'schedule.metric={config.metric!r} is not an eval result; choose one of '
        f'{", ".join(scores)}.'
    )
  if config.name in ('constant', 'plateau'):
    main = optax.constant_schedule(base_lr)
  elif config.name == 'step':
    boundaries = {
        int(round(e * steps_per_epoch)) - warmup: config.decay_factor for e in config.decay_epochs
    }
    main = optax.piecewise_constant_schedule(base_lr, boundaries)
  elif config.name == 'exponential':
    if config.decay_every_epochs <= 0:
      raise ConfigError('schedule.name=exponential needs schedule.decay_every_epochs > 0.')
    main = optax.exponential_decay(
        base_lr,
        max(int(round(config.decay_every_epochs * steps_per_epoch)), 1),
        config.decay_factor,
        staircase=True,
    )
  elif config.name == 'poly':
    main = optax.polynomial_schedule(
        base_lr, config.final_lr_fraction * base_lr, config.power, max(total_steps - warmup, 1)
    )
  elif config.name == 'cosine':
    main = optax.cosine_decay_schedule(
        base_lr, max(total_steps - warmup, 1), alpha=config.final_lr_fraction
    )
  else:
    raise ConfigError(f'Unknown schedule {config.name!r}; choose one of {", ".join(SCHEDULES)}.')
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), main], [warmup])


@struct.dataclass
class PlateauState:
  """Reduce-on-plateau bookkeeping; lives in the train state so it survives restarts."""

  lr_scale: jax.Array
  best: jax.Array
  num_bad_evals: jax.Array
  num_reductions: jax.Array


def plateau_init() -> PlateauState:
  return PlateauState(
      lr_scale=jnp.ones([], jnp.float32),
      best=jnp.array(-math.inf, jnp.float32),
      num_bad_evals=jnp.zeros([], jnp.int32),
      num_reductions=jnp.zeros([], jnp.int32),
  )


def plateau_update(
    state: PlateauState,
    metric: float,
    *,
    higher_is_better: bool,
    patience: int,
    factor: float,
    max_reductions: int,
    min_delta: float,
) -> PlateauState:
  """Multiplies the lr by `factor` after `patience` evals without `min_delta` improvement.

  AlexNet divided the lr by 10 when the validation error stopped improving, three times.
  """
  score = float(np.float32(metric if higher_is_better else -metric))  # compare as stored
  improved = score > float(state.best) + min_delta
  bad = 0 if improved else int(state.num_bad_evals) + 1
  best = max(score, float(state.best))
  scale, reductions = float(state.lr_scale), int(state.num_reductions)
  if bad >= patience and reductions < max_reductions:
    scale, reductions, bad = scale * factor, reductions + 1, 0
  return PlateauState(
      lr_scale=jnp.asarray(scale, jnp.float32),
      best=jnp.asarray(best, jnp.float32),
      num_bad_evals=jnp.asarray(bad, jnp.int32),
      num_reductions=jnp.asarray(reductions, jnp.int32),
  )


def plateau_update_from_config(
    state: PlateauState, eval_results: dict[str, float], config: ml_collections.ConfigDict
) -> PlateauState:
  """`plateau_update` with the fields of config.schedule, watching `config.metric`."""
  return plateau_update(
      state,
      eval_results[config.metric],
      higher_is_better='loss' not in config.metric,
      patience=config.patience,
      factor=config.decay_factor,
      max_reductions=config.max_reductions,
      min_delta=config.min_delta,
  )
