"""Writes that never leave a half-written file behind."""

import json
import os
import tempfile
from collections.abc import Callable
from typing import Any


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_atomic(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp_path)`, then renames tmp_path over `path` in one step."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
  def write(tmp: str) -> None:
    with open(tmp, 'w') as f:
      f.write(text)

  write_atomic(path, write)


def write_json_atomic(path: str, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')
