"""Unstructured magnitude pruning during training, as an optax transform that keeps the masks.

Zhu & Gupta (2017), "To prune, or not to prune": every `frequency` steps between `begin_step`
and `end_step` the smallest-magnitude weights of each prunable tensor (or of all of them at one
global threshold) are masked, the sparsity rising on s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))^3
to s_f. The masks live in the optimizer state, so a checkpoint holds them and a resumed run is
bit-identical. Fine-tuning an already-compressed network: `keep_zeros` retrains with the
zeros fixed (Han et al. 2015), `keep_shared` moves each group of shared weights by the sum of
its members' directions so the weights stay shared (Han, Mao & Dally 2016, §3.3).

train_step applies the learning rate outside the optimizer, so masking the direction only keeps
masked weights where they are; `constrain` zeroes them after the step (steps._apply_gradients).
"""

import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from common.errors import ConfigError, did_you_mean
from train_lib import optim

SCOPES = ('layer', 'global')


class PruningState(NamedTuple):
  """The pruning transform's part of the optimizer state.

  count: updates made so far (the train step's number when pruning starts with the run).
  masks: bool, laid out like the params; a 0-d True for parameters that are never pruned.
  clusters: int32 shared-weight cluster ids per prunable tensor (keep_shared), 0-d elsewhere.
  """

  count: jax.Array
  masks: Any
  clusters: Any


@dataclasses.dataclass(frozen=True)
class _Settings:
  sparsity: float
  initial_sparsity: float
  begin_step: int
  end_step: int
  frequency: int
  power: float
  scope: str
  params: re.Pattern
  layer_rules: tuple[tuple[re.Pattern, float], ...]
  keep_zeros: bool
  keep_shared: bool

  @property
  def prunes(self) -> bool:
    """Whether a magnitude schedule runs (some tensor has a final sparsity above 0)."""
    return self.sparsity > 0 or any(s > 0 for _, s in self.layer_rules)


def polynomial_sparsity(
    step: jax.Array | int,
    *,
    initial: float,
    final: float,
    begin_step: int,
    end_step: int,
    frequency: int,
    power: float = 3.0,
) -> jax.Array:
  """The sparsity in effect during step `step` (Zhu & Gupta 2017, eq. 1).

  Masks change only on update steps (begin_step + i·frequency, and end_step itself so that the
  final sparsity is always reached there), so between them the value of the last update holds;
  0 before begin_step and `final` from end_step on (end_step == begin_step: one shot).
  """
  step = jnp.asarray(step)
  span = end_step - begin_step
  last = begin_step + (jnp.minimum(step, end_step) - begin_step) // frequency * frequency
  last = jnp.where(step >= end_step, end_step, last)
  progress = (last - begin_step) / span if span > 0 else jnp.ones([], jnp.float32)
  sparsity = final + (initial - final) * (1.0 - progress) ** power
  return jnp.where(step < begin_step, 0.0, sparsity).astype(jnp.float32)


def _is_update_step(step: jax.Array, s: _Settings) -> jax.Array:
  in_range = (step >= s.begin_step) & (step <= s.end_step)
  return in_range & (((step - s.begin_step) % s.frequency == 0) | (step == s.end_step))


def _fraction(name: str, value: float) -> float:
  if not 0.0 <= value < 1.0:
    raise ConfigError(
        f'{name}={value} is outside [0, 1): give the fraction of weights to prune, e.g. 0.9.'
    )
  return float(value)


def _settings(config: ml_collections.ConfigDict, total_steps: int) -> _Settings:
  """The validated pruning config; raises ConfigError on a value the transform cannot use."""
  sparsity = _fraction('pruning.sparsity', config.sparsity)
  initial = _fraction('pruning.initial_sparsity', config.initial_sparsity)
  try:
    rules = tuple(optim.parse_lr_multipliers(config.layer_sparsity))
  except ConfigError as e:
    raise ConfigError(
        f'Bad pruning.layer_sparsity {config.layer_sparsity!r}; write "regex=fraction,...", '
        'e.g. "conv1/kernel=0.5,fc1/.*=0.95".'
    ) from e
  for pattern, value in rules:
    _fraction(f'pruning.layer_sparsity {pattern.pattern!r}', value)
  try:
    params = re.compile(config.params)
  except re.error as e:
    raise ConfigError(
        f'pruning.params={config.params!r} is not a regex ({e}); e.g. ".*kernel".'
    ) from e
  if config.scope not in SCOPES:
    raise ConfigError(
        f'pruning.scope={config.scope!r} is not one of {", ".join(SCOPES)}.'
        + did_you_mean(config.scope, SCOPES)
    )
  if config.keep_shared and (sparsity > 0 or any(v > 0 for _, v in rules)):
    raise ConfigError(
        'pruning.keep_shared fine-tunes the shared weights of a compressed network and cannot '
        'prune further; set pruning.sparsity=0 and pruning.layer_sparsity="" (prune first).'
    )
  if config.frequency < 1:
    raise ConfigError(f'pruning.frequency={config.frequency} must be at least 1 step.')
  if config.power <= 0:
    raise ConfigError(f'pruning.power={config.power} must be positive (Zhu & Gupta use 3).')
  begin, end = int(config.begin_step), int(config.end_step)
  settings = _Settings(
      sparsity=sparsity,
      initial_sparsity=initial,
      begin_step=begin,
      end_step=end,
      frequency=int(config.frequency),
      power=float(config.power),
      scope=config.scope,
      params=params,
      layer_rules=rules,
      keep_zeros=bool(config.keep_zeros),
      keep_shared=bool(config.keep_shared),
  )
  if settings.prunes:
    if begin < 0:
      raise ConfigError(f'pruning.begin_step={begin} must be ≥ 0.')
    if end == 0:
      if total_steps <= 0:
        raise ConfigError(
            'pruning.end_step=0 means 3/4 of the run, whose length was not given; set '
            'pruning.end_step.'
        )
      end = 3 * total_steps // 4
    if end < begin:
      raise ConfigError(
          f'pruning.end_step={end} is before pruning.begin_step={begin}; the sparsity rises '
          'from begin_step to end_step (equal: prune once).'
      )
    if 0 < total_steps <= end:
      raise ConfigError(
          f"pruning.end_step={end} is not before the run's end (step {total_steps}), so the "
          'final sparsity would never be reached; lower it, or 0 for 3/4 of the run.'
      )
    settings = dataclasses.replace(settings, end_step=end)
  return settings


def pruning_transform(
    config_pruning: ml_collections.ConfigDict | None, total_steps: int
) -> optax.GradientTransformation | None:
  """The pruning transform of `config.pruning`, or None when it prunes and keeps nothing.

  Goes last in the optimizer chain: it masks the final update direction. `total_steps` sets the
  default end_step (3/4 of the run). Per-layer final sparsities from `layer_sparsity` override
  `sparsity` for the tensors they match; with scope 'global' the other prunable tensors share
  one magnitude threshold. A tensor's initial sparsity is min(initial_sparsity, its final).
  """
  if config_pruning is None:
    return None
  s = _settings(config_pruning, total_steps)
  if not (s.prunes or s.keep_zeros or s.keep_shared):
    return None

  def init_fn(params):
    targets = _targets(params, s)
    fixed = s.keep_zeros or s.keep_shared
    masks = _map_targets(
        lambda p, t: (p != 0 if fixed else jnp.ones(p.shape, bool)) if t is not None else None,
        params,
        targets,
    )
    clusters = _map_targets(
        lambda p, t: _cluster_ids(p) if t is not None and s.keep_shared else None,
        params,
        targets,
    )
    return PruningState(
        jnp.zeros([], jnp.int32),
        _fill(masks, jnp.ones([], bool)),
        _fill(clusters, jnp.zeros([], jnp.int32)),
    )

  def update_fn(updates, state, params=None):
    masks = state.masks
    if s.prunes:
      if params is None:
        raise ValueError('pruning_transform needs the params: call tx.update(grads, state, params)')
      targets = _targets(params, s)
      masks = jax.lax.cond(
          _is_update_step(state.count, s),
          lambda: _magnitude_masks(params, targets, state.masks, state.count, s),
          lambda: state.masks,
      )
    if s.keep_shared:
      updates = jax.tree.map(_sum_clusters, updates, state.clusters)
    updates = _apply_masks(updates, masks)
    return updates, PruningState(state.count + 1, masks, state.clusters)

  return optax.GradientTransformation(init_fn, update_fn)


def _targets(params, s: _Settings):
  """Per leaf: its final sparsity if it is prunable, else None; raises on unmatched regexes."""
  paths = [optim.path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  prunable = [p for p in paths if s.params.fullmatch(p)]
  if not prunable:
    raise ConfigError(
        f'pruning.params={s.params.pattern!r} matches no parameter; parameters: '
        f'{_listing(paths)}.'
    )
  for pattern, _ in s.layer_rules:
    if not any(pattern.fullmatch(p) for p in prunable):
      raise ConfigError(
          f'pruning.layer_sparsity regex {pattern.pattern!r} matches no prunable parameter; '
          f'prunable (pruning.params={s.params.pattern!r}): {_listing(prunable)}.'
      )

  def target(path, _):
    name = optim.path_name(path)
    if not s.params.fullmatch(name):
      return None
    return next((v for pattern, v in s.layer_rules if pattern.fullmatch(name)), s.sparsity)

  return jax.tree_util.tree_map_with_path(target, params)


def _listing(paths: list[str], limit: int = 12) -> str:
  more = f', ... ({len(paths) - limit} more)' if len(paths) > limit else ''
  return ', '.join(paths[:limit]) + more


def _map_targets(fn, params, targets):
  """fn(param, target) per leaf; `targets` has None leaves, so it is flattened up to params."""
  leaves, treedef = jax.tree.flatten(params)
  flat_targets = treedef.flatten_up_to(targets)
  return [fn(p, t) for p, t in zip(leaves, flat_targets)], treedef


def _fill(mapped, placeholder):
  leaves, treedef = mapped
  return treedef.unflatten([placeholder if x is None else x for x in leaves])


def _keep_largest(magnitude: jax.Array, k: jax.Array) -> jax.Array:
  """False for the k smallest entries (ties by position, so exactly k), True for the others."""
  flat = magnitude.ravel()
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return (ranks >= k).reshape(magnitude.shape)


def _count(sparsity: jax.Array, size: int) -> jax.Array:
  return jnp.round(sparsity * size).astype(jnp.int32)


def _magnitude_masks(params, targets, old_masks, step, s: _Settings):
  """New masks at step `step`: each tensor (or the global pool) pruned to its s_t by magnitude."""
  leaves, treedef = jax.tree.flatten(params)
  flat_targets = treedef.flatten_up_to(targets)
  olds = treedef.flatten_up_to(old_masks)
  names = [optim.path_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  overridden = {i for i, n in enumerate(names) if any(p.fullmatch(n) for p, _ in s.layer_rules)}

  def at(final):
    return polynomial_sparsity(
        step,
        initial=min(s.initial_sparsity, final),
        final=final,
        begin_step=s.begin_step,
        end_step=s.end_step,
        frequency=s.frequency,
        power=s.power,
    )

  masks = list(olds)
  pool = [
      i for i, t in enumerate(flat_targets) if t and s.scope == 'global' and i not in overridden
  ]
  for i, (p, t) in enumerate(zip(leaves, flat_targets)):
    if t and i not in pool:
      masks[i] = _keep_largest(jnp.abs(p), _count(at(t), p.size))
  if pool:
    magnitudes = jnp.concatenate([jnp.abs(leaves[i]).ravel() for i in pool])
    keep = _keep_largest(magnitudes, _count(at(s.sparsity), magnitudes.size))
    offsets = np.cumsum([0] + [leaves[i].size for i in pool])
    for j, i in enumerate(pool):
      masks[i] = keep[offsets[j] : offsets[j + 1]].reshape(leaves[i].shape)
  if s.keep_zeros:  # the initial zeros stay pruned even where s_t would leave some
    masks = [m & o for m, o in zip(masks, olds)]
  return treedef.unflatten(masks)


def _cluster_ids(param: jax.Array) -> jax.Array:
  """Ids 0.. of the distinct values of `param` (np.unique's inverse, traceable under jit)."""
  flat = param.ravel()
  order = jnp.argsort(flat, stable=True)
  values = flat[order]
  starts = jnp.concatenate([jnp.ones(1, bool), values[1:] != values[:-1]])
  ids = jnp.cumsum(starts, dtype=jnp.int32) - 1
  return jnp.zeros(flat.shape, jnp.int32).at[order].set(ids).reshape(param.shape)


def _sum_clusters(update: jax.Array, ids: jax.Array) -> jax.Array:
  """Each weight's update replaced by the sum over its cluster (Han et al. 2016, fig. 3)."""
  if ids.ndim == 0:
    return update
  flat = ids.ravel()
  sums = jax.ops.segment_sum(update.ravel(), flat, num_segments=flat.size)
  return sums[flat].reshape(update.shape).astype(update.dtype)


def _apply_masks(tree, masks):
  return jax.tree.map(
      lambda x, m: x if m.ndim == 0 else jnp.where(m, x, jnp.zeros_like(x)), tree, masks
  )


def _pruning_states(opt_state) -> list[PruningState]:
  nodes = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, PruningState))
  return [x for x in nodes if isinstance(x, PruningState)]


def constrain(params: Any, opt_state: optax.OptState) -> Any:
  """`params` with the weights that the pruning state in `opt_state` masks set to zero.

  Finds the PruningState at any depth of the (chained) optimizer state; identity without one.
  """
  for state in _pruning_states(opt_state):
    params = _apply_masks(params, state.masks)
  return params


def layer_sparsity(params: Any, pattern: str = '.*kernel') -> dict[str, tuple[int, int]]:
  """'layer/param' → (zeros, size) for every parameter whose path fully matches `pattern`."""
  regex = re.compile(pattern)
  report = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = optim.path_name(path)
    if regex.fullmatch(name):
      array = np.asarray(jax.device_get(leaf))
      report[name] = (int(array.size - np.count_nonzero(array)), int(array.size))
  return report
