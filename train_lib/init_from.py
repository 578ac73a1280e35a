"""Starting a run from another run's weights (`config.init_from`): fine-tuning, compression and a
distilled student's teacher all begin by reading a trained workdir, which is never written."""

import dataclasses
import json
import logging
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from common.errors import ConfigError
from train_lib import checkpoint, optim, sharding
from train_lib.state import TrainState

COLLECTIONS = ('params', 'batch_stats')


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A trained workdir: its recorded config and derived facts, and its newest variables."""

  workdir: str
  config: dict[str, Any]
  derived: dict[str, Any]
  step: int
  variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...} as numpy arrays


def check_workdir(workdir: str, field: str) -> None:
  """Refuses, before any work, a `field` (e.g. 'init_from') naming no trained workdir."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise ConfigError(
        f'{field}={workdir!r} is not a training workdir (no config.json there); give the '
        '--workdir of a finished or checkpointed run.'
    )
  if not checkpoint.has_checkpoint(os.path.join(workdir, 'checkpoints')):
    raise ConfigError(
        f'{field}={workdir!r} holds no checkpoint yet; train it (to its first checkpoint at '
        'least), or give a run that has one.'
    )


def read_record(workdir: str) -> dict[str, Any]:
  """What a `workdir`'s config.json records: {'config': ..., 'derived': ...}."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return json.load(f)


def read_run(workdir: str, field: str = 'init_from') -> TrainedRun:
  """The trained run in `workdir`, read only."""
  check_workdir(workdir, field)
  record = read_record(workdir)
  found = checkpoint.read_newest(os.path.join(workdir, 'checkpoints'))
  if found is None:
    raise ConfigError(f'{field}={workdir!r} holds no readable checkpoint (see the warnings).')
  step, state = found
  variables = {c: jax.tree.map(np.asarray, state.get(c) or {}) for c in COLLECTIONS}
  return TrainedRun(workdir, record['config'], record.get('derived', {}), step, variables)


def _flat(variables: dict[str, Any]) -> dict[tuple[str, str], Any]:
  """{(collection, 'layer/name'): array} of a variables dict."""
  return {
      (collection, optim.path_name(path)): leaf
      for collection in COLLECTIONS
      for path, leaf in jax.tree_util.tree_leaves_with_path(variables.get(collection) or {})
  }


def overlay(
    variables: dict[str, Any], source: TrainedRun, exclude: str = ''
) -> tuple[dict[str, Any], list[str]]:
  """`variables` with every entry the source has at the same path and shape replaced by the
  source's, except paths matching `exclude`; returns them and the paths left fresh.

  Refuses a source that shares no variable with this model (another architecture) and one whose
  variable at a taken path has another shape (say which, and how to leave it fresh).
  """
  try:
    skip = re.compile(exclude) if exclude else None
  except re.error as e:
    raise ConfigError(f'init_from_exclude={exclude!r} is not a regular expression: {e}.') from e
  theirs = _flat(source.variables)
  taken, fresh, mismatched = {}, [], []
  for key, leaf in _flat(variables).items():
    if key not in theirs or (skip and skip.fullmatch(key[1])):
      fresh.append('/'.join(key))
    elif np.shape(theirs[key]) != np.shape(leaf):
      mismatched.append(f'{"/".join(key)} {np.shape(theirs[key])} → {np.shape(leaf)}')
    else:
      taken[key] = np.asarray(theirs[key], dtype=np.asarray(leaf).dtype)
  if mismatched:
    raise ConfigError(
        f'{source.workdir} has other shapes at {len(mismatched)} path(s) '
        f'({"; ".join(mismatched[:3])}); leave them fresh with --config.init_from_exclude, '
        "e.g. 'head/.*' for a new classifier."
    )
  if not taken:
    raise ConfigError(
        f'{source.workdir} ({source.config["model"]["name"]}) shares no variable with this '
        'model; init_from needs a run of the same architecture.'
    )

  def pick(collection):
    return lambda path, leaf: taken.get((collection, optim.path_name(path)), leaf)

  merged = {
      c: jax.tree_util.tree_map_with_path(pick(c), variables[c]) if c in variables else None
      for c in COLLECTIONS
  }
  return {c: v for c, v in merged.items() if v is not None}, fresh


def start(
    state: TrainState,
    config: ml_collections.ConfigDict,
    variables: dict[str, Any] | None,
    mesh: jax.sharding.Mesh,
) -> TrainState:
  """`state` with the given `variables`, else config.init_from's (where paths and shapes agree),
  and an optimizer state initialised on them; `state` itself when there are neither."""
  if variables is None and not config.init_from:
    return state
  if variables is None:
    source = read_run(config.init_from)
    variables, fresh = overlay(jax.device_get(state.variables()), source, config.init_from_exclude)
    logging.info(
        'Starting from %s (step %d)%s.',
        config.init_from,
        source.step,
        f'; left fresh: {", ".join(fresh[:8])}{" ..." if len(fresh) > 8 else ""}' if fresh else '',
    )

  def restart(state: TrainState, variables: dict[str, Any]) -> TrainState:
    params = variables['params']
    return state.replace(
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=state.tx.init(params),
    )

  return jax.jit(restart, out_shardings=sharding.replicated(mesh))(state, variables)
