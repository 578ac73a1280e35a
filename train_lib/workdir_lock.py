"""One training process per workdir: a lock file naming its holder (pid, host, start time).

A second process training into a busy workdir is refused at once with the holder named; a lock
left by a process that is gone (killed, or its machine rebooted) is taken over with a note. On
several hosts only the chief (process 0) holds it: one lock per workdir, not per process.
`check_free` refuses, before any work and writing nothing, a workdir that is busy, a file, or
on a read-only filesystem; `hold` then takes the lock, just before the run's first write.
"""

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import jax

from common.errors import UserError

LOCK_FILE = 'training.lock'


class WorkdirBusyError(UserError, RuntimeError):
  """Another process is training into this workdir."""


def _start_time(pid: int) -> str | None:
  """The kernel's start time of process `pid` (Linux /proc), which tells a reused pid apart."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rpartition(')')[2].split()[19]
  except (OSError, IndexError):
    return None


def _me() -> dict[str, Any]:
  pid = os.getpid()
  return {
      'pid': pid,
      'host': socket.gethostname(),
      'pid_start': _start_time(pid),
      'since': time.strftime('%Y-%m-%d %H:%M:%S'),
  }


def _is_running(holder: dict[str, Any]) -> bool:
  """Whether the holder may still run (a process on another host is assumed to)."""
  if holder.get('host') != socket.gethostname():
    return True
  pid = holder.get('pid')
  if not isinstance(pid, int) or pid == os.getpid():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # someone else's process, alive
  recorded = holder.get('pid_start')
  return recorded is None or recorded == _start_time(pid)


def _read(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _not_a_folder(workdir: str) -> UserError:
  return UserError(
      f'--workdir={workdir} is a file (or lies under one); give a folder (it is created if '
      'missing).'
  )


def _not_writable(workdir: str, reason: str) -> UserError:
  return UserError(
      f'cannot write into --workdir={workdir}: {reason}; choose a folder you can write.'
  )


def _busy(workdir: str, holder: dict[str, Any]) -> WorkdirBusyError:
  return WorkdirBusyError(
      f'{workdir} is in use: pid {holder.get("pid")} on {holder.get("host")} has been training '
      f'into it since {holder.get("since")}. Wait for it, or use another --workdir; if that '
      f'process is gone, delete {os.path.join(workdir, LOCK_FILE)}.'
  )


def check_free(workdir: str) -> None:
  """Refuses, writing nothing, a workdir that cannot be created or written, or one another live
  process is training into (`hold` takes it later, atomically)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise _not_a_folder(workdir)
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise _not_a_folder(workdir)
  if os.statvfs(existing).f_flag & os.ST_RDONLY:
    raise _not_writable(workdir, 'the filesystem is read-only')
  if not os.access(existing, os.W_OK):
    raise _not_writable(workdir, f'{existing} is not writable')
  holder = _read(os.path.join(workdir, LOCK_FILE))
  if jax.process_index() == 0 and holder is not None and _is_running(holder):
    raise _busy(workdir, holder)


def _make_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError) as e:
    raise _not_a_folder(workdir) from e
  except OSError as e:
    raise _not_writable(workdir, e.strerror) from e


def _create(path: str, record: dict[str, Any]) -> bool:
  """Creates the lock file holding `record`; False if it exists already."""
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  except OSError as e:
    reason = 'the filesystem is read-only' if e.errno == errno.EROFS else e.strerror
    raise _not_writable(os.path.dirname(path), reason) from e
  with os.fdopen(fd, 'w') as f:
    json.dump(record, f)
  return True


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds `workdir`'s lock for the block (creating the workdir); raises WorkdirBusyError if a
  live process has it."""
  _make_workdir(workdir)
  if jax.process_index() != 0:
    yield
    return
  path, me = os.path.join(workdir, LOCK_FILE), _me()
  while not _create(path, me):
    holder = _read(path)
    if holder is not None and _is_running(holder):
      raise _busy(workdir, holder)
    logging.warning(
        'Taking over the lock of %s from %s, which is no longer running.',
        workdir,
        f'pid {holder.get("pid")} on {holder.get("host")}' if holder else 'an unreadable lock',
    )
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
  try:
    yield
  finally:
    if _read(path) == me:
      os.remove(path)
