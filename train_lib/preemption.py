"""Turns SIGTERM / SIGINT into a polite request to save and stop."""

import logging
import signal
import threading


class StopRequested(Exception):
  """Raised by the loop after it saved a checkpoint in answer to a signal."""

  def __init__(self, signum: int, step: int):
    self.signum, self.step = signum, step
    super().__init__(
        f'Stopped by {signal.Signals(signum).name} at step {step}; a checkpoint '
        'was saved. Run the same command again to resume.'
    )


class StopOnSignal:
  """Context manager: the first SIGTERM/SIGINT sets `signum`; a second SIGINT stops at once."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    logging.warning(
        'Got %s: saving a checkpoint and stopping after this step '
        '(press Ctrl-C again to stop without saving).',
        signal.Signals(signum).name,
    )

  def __enter__(self) -> 'StopOnSignal':
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
