"""Orbax checkpoints of the train state, restored onto whatever mesh the run has now."""

import contextlib
import logging
import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import serialization

from common.errors import UserError
from train_lib.state import TrainState


class IncompatibleCheckpointError(UserError, RuntimeError):
  """The workdir's checkpoint does not fit the model/optimizer of this run."""


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  return {
      jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def _describe_mismatch(saved: dict, wanted: dict, limit: int = 6) -> str:
  """Differing entries, parameters first (they say most about the architecture)."""
  order = lambda k: (not k.startswith("['params']"), k)
  lines = [
      f'  only in checkpoint: {k} {saved[k][0]}'
      for k in sorted(set(saved) - set(wanted), key=order)
  ]
  lines += [
      f'  only in this run:   {k} {wanted[k][0]}'
      for k in sorted(set(wanted) - set(saved), key=order)
  ]
  lines += [
      f'  {k}: checkpoint {saved[k]} vs this run {wanted[k]}'
      for k in sorted(set(saved) & set(wanted), key=order)
      if saved[k] != wanted[k]
  ]
  more = f'\n  ... and {len(lines) - limit} more' if len(lines) > limit else ''
  return '\n'.join(lines[:limit]) + more


class Checkpointer:
  """Saves the train state under `directory`, keeping the newest `max_to_keep` checkpoints."""

  def __init__(self, directory: str, *, max_to_keep: int):
    self.directory = os.path.abspath(directory)
    # Naming the handler lets a fresh process read the saved tree's metadata before restoring.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False),
        item_handlers=ocp.StandardCheckpointHandler(),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step() if os.path.isdir(self.directory) else None

  def restore_latest(self, state: TrainState) -> TrainState:
    """`state` with the newest checkpoint's values (laid out like `state`), or `state` itself.

    Raises IncompatibleCheckpointError, touching nothing, when the saved tree differs.
    """
    step = self.latest_step()
    if step is None:
      return state
    target = serialization.to_state_dict(state)
    saved = _shapes(self._manager.item_metadata(step))
    wanted = _shapes(target)
    if saved != wanted:
      raise IncompatibleCheckpointError(
          f'The checkpoint at step {step} in {self.directory} was written by a different model '
          f'or optimizer than this run builds:\n{_describe_mismatch(saved, wanted)}\n'
          'Nothing was changed. Use a new --workdir for this configuration, or rerun the '
          'configuration that wrote it.'
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    logging.info('Restored checkpoint of step %d from %s.', step, self.directory)
    return serialization.from_state_dict(state, restored)

  def save(self, state: TrainState, step: int) -> bool:
    """Saves `state` as `step` (asynchronously) unless that step is saved; returns whether it
    saved."""
    if self._manager.latest_step() == step:
      return False
    os.makedirs(self.directory, exist_ok=True)
    self._manager.save(
        step, args=ocp.args.StandardSave(serialization.to_state_dict(state)), force=True
    )
    return True

  def close(self) -> None:
    """Waits for the last (asynchronous) save to be on disk."""
    self._manager.wait_until_finished()
    self._manager.close()


@contextlib.contextmanager
def _absl_errors_only():
  """Raises absl's logging threshold to ERROR for a block."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)


def has_checkpoint(directory: str) -> bool:
  """Whether `directory` holds a finished checkpoint (orbax names them by step; unfinished
  ones carry a temporary suffix)."""
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def read_newest(directory: str) -> tuple[int, dict[str, Any]] | None:
  """(step, state dict) of the newest checkpoint under `directory` as it was saved, or None.

  Reads without a train state to lay it out on (another run's weights, a teacher), and never
  writes: the manager is opened read-only.
  """
  if not os.path.isdir(directory):
    return None
  with warnings.catch_warnings(), _absl_errors_only():  # 'read only' notices, expected here
    warnings.simplefilter('ignore')
    manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers=ocp.StandardCheckpointHandler(),
    )
  try:
    step = manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, dict(manager.item_metadata(step)))
    return step, manager.restore(step, args=ocp.args.StandardRestore(abstract))
  finally:
    manager.close()
