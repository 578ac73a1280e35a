"""The command line of main.py and the benchmarks: absl flags with a `--config` file whose
fields are overridden as `--config.optimizer.lr=0.05`, and mistakes reported in one line.

A mistake the user can fix (a flag value, a config file or argument, an unknown field, any
`UserError` the program raises) prints `error: <what was wrong and what to do>` and exits
with status 1, before any work starts where it can. Anything else is a bug: its traceback
stays.
"""

import errno
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags, logging

from common import cpu_scratch
from common.errors import UserError

FLAGS = flags.FLAGS
_HELP_FLAGS = {'--help': True, '-h': True, '-?': True, '--helpshort': True, '--helpfull': False}


def _fail(message: str) -> NoReturn:
  sys.exit(f'error: {message}')


def _config_path(argv: list[str]) -> str | None:
  """The file of `--config=path[:arg]`, as given."""
  for a in argv:
    if a.startswith('--config='):
      return a.split('=', 1)[1].partition(':')[0]
  return None


def _unknown_field_message(error: Exception, argv: list[str]) -> str | None:
  """One line for an override naming a field the config lacks (ml_collections' KeyError text
  carries the field and its close match); None if no override names that field (the KeyError
  is then a bug, e.g. in the config file)."""
  text = str(error.__context__ or error).replace('\\n', '\n').replace("\\'", "'")
  field = re.search(r"'(\w+)'", text)
  hint = re.search(r'Did you mean "(\w+)"', text)
  key = field.group(1) if field else None
  override = next(
      (a for a in argv if a.startswith('--config.') and key in a.split('=', 1)[0].split('.')),
      None,
  )
  if override is None:
    return None
  close = f' Did you mean {hint.group(1)!r}?' if hint else ''
  return (
      f'{override}: the config has no field {key!r}.{close} configs/default.py lists every '
      'field the trainer reads; a model takes only its own fields (--mode=list).'
  )


def _innermost_user_error(error: BaseException) -> UserError | None:
  """The UserError at the bottom of `error`'s chain (ml_collections re-raises an error of
  get_config as a copy of its type, with the traceback in the message)."""
  found = None
  while error is not None:
    if isinstance(error, UserError):
      found = error
    error = error.__context__
  return found


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with one-line errors; `--help` prints the usage and exits 0."""
  for arg in argv[1:]:
    if arg in _HELP_FLAGS:
      app.usage(shorthelp=_HELP_FLAGS[arg], writeto_stdout=True, exitcode=0)
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    _fail(
        f'config file {path!r} does not exist; experiment configs live in configs/ '
        '(python main.py --mode=list lists them with their arguments).'
    )
  try:
    return FLAGS(argv)
  except flags.Error as e:
    user_error = _innermost_user_error(e)
    if user_error is not None:  # raised by get_config, e.g. an unknown argument
      _fail(str(user_error))
    if 'Error whilst parsing config file' in str(e):
      raise  # a bug in the config file: keep its traceback
    _fail(f'{e} (--help lists the flags).')
  except (AttributeError, KeyError) as e:  # an override of a field the config lacks
    message = _unknown_field_message(e, argv)
    if message is None or not (isinstance(e, KeyError) or isinstance(e.__context__, KeyError)):
      raise
    _fail(message)


def quiet_library_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the progress log (warnings still show), and the
  tracebacks that its writer threads (and asyncio, for a failed save's unawaited writes) log:
  the same error reaches the trainer, which reports it once."""

  def keep(record: std_logging.LogRecord) -> bool:
    if record.name == 'asyncio' and record.exc_info:  # a failed save's unawaited writes, echoed
      return "os_error_code='" not in str(record.exc_info[1])  # when their futures are collected
    if '/orbax/' not in record.pathname:
      return True
    return record.levelno >= std_logging.WARNING and record.exc_info is None

  logging.get_absl_handler().addFilter(keep)


# A full disk or quota, a file over the size limit, a read-only filesystem: the machine's state,
# not a bug, reported in one line.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` with this module's flag parsing, and a `UserError` or a failed write from
  `main` printed as one line (`--show_traceback` prints its traceback too), after
  `--reuse_cpu_scratch` is applied (`cpu_scratch`)."""

  def main_reporting_user_errors(argv: list[str]) -> None:
    if FLAGS.reuse_cpu_scratch and not cpu_scratch.reuse_scratch():
      logging.warning(
          "--reuse_cpu_scratch: this process's malloc is not glibc's, so it keeps no freed "
          'scratch; only the dispatch changes (programs run on the calling thread).'
      )
    try:
      main(argv)
    except UserError as e:
      if FLAGS.show_traceback:
        raise
      _fail(str(e))
    except OSError as e:
      if FLAGS.show_traceback or e.errno not in _WRITE_ERRORS:
        raise
      _fail(
          f'could not write {e.filename or "a file"}: {e.strerror}. Free space (or fix the '
          'folder) and rerun the same command: training resumes from its newest checkpoint.'
      )

  app.run(main_reporting_user_errors, flags_parser=parse_flags)


flags.DEFINE_bool(
    'show_traceback',
    False,
    'Print the traceback of errors in the command, the '
    'config or the workdir too (they print one line otherwise).',
)
flags.DEFINE_bool(
    'reuse_cpu_scratch',
    False,
    "Run XLA's CPU programs on the calling thread with glibc keeping freed memory, so that "
    'each step reuses its scratch pages: ResNet-20 trains 1.24x faster on CPU, LeNet-5 slower '
    '(common/cpu_scratch.py).',
)
