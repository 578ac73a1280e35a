"""Errors a user can cause and fix, told apart from bugs.

`main.py` prints a `UserError` as one line (`error: ...`) and exits with status 1; any other
exception is a bug and keeps its traceback. A message says what was wrong and what to do.
"""


class UserError(Exception):
  """A mistake in the command line, the config or the workdir, which the user can fix."""


class ConfigError(UserError, ValueError):
  """A config field, model field or op argument with a value the code cannot use."""
