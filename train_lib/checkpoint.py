"""Orbax checkpoints of the train state, restored onto whatever mesh the run has now.

Each finished checkpoint is sealed with a SHA-256 digest of its files (`sha256.txt` in its step
folder), verified before it is restored. A checkpoint that fails to verify or to read is named in
one line and moved aside to `<workdir>/damaged_checkpoints/` (never deleted), and the next newest
is tried, so a run resumes from its newest good state. Failing to write one (a full disk) stops
the run with one line naming the folder and the newest complete step.
"""

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import serialization
from jax.experimental import multihost_utils

from common.errors import UserError
from train_lib.state import TrainState

DIGEST_FILE = 'sha256.txt'
DAMAGED_DIR = 'damaged_checkpoints'  # beside checkpoints/ in the workdir


class IncompatibleCheckpointError(UserError, RuntimeError):
  """The workdir's checkpoint does not fit the model/optimizer of this run."""


class CheckpointWriteError(UserError, OSError):
  """A checkpoint could not be written (no space left, no permission, an I/O error)."""


def content_digest(step_dir: str) -> str:
  """SHA-256 over the relative paths and contents of every file of a checkpoint but the digest."""
  digest = hashlib.sha256()
  for root, dirs, names in os.walk(step_dir):
    dirs.sort()
    for name in sorted(names):
      path = os.path.join(root, name)
      if path == os.path.join(step_dir, DIGEST_FILE):
        continue
      digest.update(os.path.relpath(path, step_dir).encode() + b'\0')
      with open(path, 'rb') as f:
        digest.update(hashlib.file_digest(f, 'sha256').digest())
  return digest.hexdigest()


def _digest_problem(step_dir: str) -> str | None:
  """Why the checkpoint in `step_dir` fails to verify, or None (None too if it has no digest:
  one written before digests existed, or killed between finishing and sealing)."""
  path = os.path.join(step_dir, DIGEST_FILE)
  if not os.path.exists(path):
    logging.info('%s carries no digest; restoring it unverified.', step_dir)
    return None
  with open(path) as f:
    expected = f.read().strip()
  if content_digest(step_dir) != expected:
    return 'its files changed after it was saved (the content digest does not match)'
  return None


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:200] if text else ""}'.rstrip(': ')


# How tensorstore (orbax's writer) reports a failed system call inside its own error text.
_TENSORSTORE_OS_ERROR = re.compile(r": ([^:\[\]]+) \[os_error_code='(\d+)'\]")


def _os_error(error: BaseException | None) -> OSError | None:
  """The OSError in `error`'s chain, or the one a tensorstore error describes; None if none."""
  while error is not None:
    if isinstance(error, OSError):
      return error
    match = _TENSORSTORE_OS_ERROR.search(str(error))
    if match:
      return OSError(int(match.group(2)), match.group(1).strip())
    error = error.__cause__ or error.__context__
  return None


def _quiet_abandoned_writes() -> None:
  """When a save fails (a full disk), tensorstore's other writes of that save finish into the
  closed event loops of orbax's writer threads, and each prints 'Event loop is closed' as an
  unraisable exception: dozens of tracebacks before the failure itself surfaces. They are that
  failure's echo, which `Checkpointer` reports once; so they are dropped, and every other
  unraisable exception still prints."""
  previous = sys.unraisablehook
  if getattr(previous, 'quiets_abandoned_writes', False):
    return

  def hook(unraisable) -> None:
    value = unraisable.exc_value
    if not (isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'):
      previous(unraisable)

  hook.quiets_abandoned_writes = True
  sys.unraisablehook = hook


def _newest_good(
    manager: ocp.CheckpointManager,
    directory: str,
    restore: Callable[[int], Any],
    set_aside: bool,
) -> tuple[int, Any] | None:
  """(step, restore(step)) of the newest checkpoint that verifies and reads, or None.

  Each damaged one is named in a warning and, with `set_aside`, moved to DAMAGED_DIR (by the
  chief; every process reaches the same verdict from the same files). IncompatibleCheckpointError
  from `restore` is not damage: it propagates.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    step_dir = os.path.join(directory, str(step))
    try:
      problem = _digest_problem(step_dir)
      if problem is None:
        return step, restore(step)
    except IncompatibleCheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any reader error means unreadable)
      problem = f'it cannot be read ({_first_line(e)})'
    where = ''
    if set_aside:
      damaged = os.path.join(os.path.dirname(directory), DAMAGED_DIR)
      target = os.path.join(damaged, str(step))
      suffix = 1
      while os.path.exists(target):
        suffix += 1
        target = os.path.join(damaged, f'{step}-{suffix}')
      if jax.process_index() == 0:
        os.makedirs(damaged, exist_ok=True)
        shutil.move(step_dir, target)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
      manager.reload()
      where = f'; moved it to {target}'
    logging.warning(
        'The checkpoint of step %d in %s is damaged: %s%s. Trying the next newest.',
        step,
        directory,
        problem,
        where,
    )
  return None


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
    self._unsealed: list[int] = []  # saved, perhaps still being written, not yet digested
    _quiet_abandoned_writes()
    self._write_failed = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step() if os.path.isdir(self.directory) else None

  def restore_latest(self, state: TrainState) -> TrainState:
    """`state` with the newest good checkpoint's values (laid out like `state`), or `state`
    itself if there is none. Damaged checkpoints are set aside (see `_newest_good`).

    Raises IncompatibleCheckpointError, touching nothing, when the saved tree differs.
    """
    if self.latest_step() is None:
      return state
    target = serialization.to_state_dict(state)

    def restore(step: int) -> Any:
      saved = _shapes(self._manager.item_metadata(step))
      wanted = _shapes(target)
      if saved != wanted:
        raise IncompatibleCheckpointError(
            f'The checkpoint at step {step} in {self.directory} was written by a different '
            f'model or optimizer than this run builds:\n{_describe_mismatch(saved, wanted)}\n'
            'Nothing was changed. Use a new --workdir for this configuration, or rerun the '
            'configuration that wrote it.'
        )
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    found = _newest_good(self._manager, self.directory, restore, set_aside=True)
    if found is None:
      logging.warning('No good checkpoint is left in %s: starting from step 0.', self.directory)
      return state
    step, restored = found
    logging.info('Restored checkpoint of step %d from %s.', step, self.directory)
    return serialization.from_state_dict(state, restored)

  def save(self, state: TrainState, step: int) -> bool:
    """Saves `state` as `step` (asynchronously) unless that step is saved; returns whether it
    saved. The previous save is finished and sealed first."""
    if self._manager.latest_step() == step:
      return False
    self.wait()
    with self._write_errors(step):
      os.makedirs(self.directory, exist_ok=True)
      self._manager.save(
          step, args=ocp.args.StandardSave(serialization.to_state_dict(state)), force=True
      )
    self._unsealed.append(step)
    return True

  def wait(self) -> None:
    """Waits for the saves in flight to be on disk, then seals them with their digests."""
    with self._write_errors(self._unsealed[-1] if self._unsealed else None):
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
      for step in self._unsealed:
        step_dir = os.path.join(self.directory, str(step))
        if jax.process_index() == 0 and os.path.isdir(step_dir):
          digest = content_digest(step_dir)
          with open(os.path.join(step_dir, DIGEST_FILE), 'w') as f:
            f.write(digest + '\n')
    self._unsealed = []

  @contextlib.contextmanager
  def _write_errors(self, step: int | None):
    """Turns a failed write (a full disk, lost permissions) into one CheckpointWriteError."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      cause = _os_error(e)
      if cause is None:
        raise
      self._unsealed, self._write_failed = [], True
      complete = [s for s in self._manager.all_steps() if s != step]
      newest = f'step {max(complete)}' if complete else 'none'
      raise CheckpointWriteError(
          f'could not write the checkpoint of step {step} into {self.directory}: '
          f'{cause.strerror or cause}. The newest complete checkpoint: {newest}. Free space '
          '(or fix the folder) and rerun the same command to resume from it.'
      ) from None

  def close(self) -> None:
    """Waits for the last (asynchronous) save to be on disk and seals it."""
    if self._write_failed:  # reported already; the manager would raise the same error again
      with contextlib.suppress(Exception):
        self._manager.close()
      return
    try:
      self.wait()
    finally:
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


def saved_steps(directory: str) -> list[int]:
  """The steps of the finished checkpoints in `directory` (orbax names them by step; unfinished
  ones carry a temporary suffix)."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def has_checkpoint(directory: str) -> bool:
  """Whether `directory` holds a finished checkpoint."""
  return bool(saved_steps(directory))


def read_newest(directory: str) -> tuple[int, dict[str, Any]] | None:
  """(step, state dict) of the newest good checkpoint under `directory` as it was saved, or None.

  Reads without a train state to lay it out on (another run's weights, a teacher), and never
  writes: the manager is opened read-only, and a damaged checkpoint is skipped, not moved.
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

  def restore(step: int) -> dict[str, Any]:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, dict(manager.item_metadata(step)))
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))

  try:
    return _newest_good(manager, os.path.abspath(directory), restore, set_aside=False)
  finally:
    manager.close()
