"""Errors a user can cause and fix, told apart from bugs.

`main.py` prints a `UserError` as one line (`error: ...`) and exits with status 1; any other
exception is a bug and keeps its traceback. A message says what was wrong and what to do.
"""

import difflib
from collections.abc import Iterable


class UserError(Exception):
  """A mistake in the command line, the config or the workdir, which the user can fix."""


class ConfigError(UserError, ValueError):
  """A config field, model field or op argument with a value the code cannot use."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
  """' Did you mean a, b?' naming the choices closest to a mistyped `name`, or ''."""
  close = difflib.get_close_matches(name, list(choices), n=3)
  return f' Did you mean {", ".join(close)}?' if close else ''
