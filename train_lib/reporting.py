"""What a run shows and leaves: a progress line, metrics.jsonl, TensorBoard scalars and
results.json."""

import json
import logging
import os
import time
from typing import Any

from common import files

METRICS_FILE = 'metrics.jsonl'
RESULTS_FILE = 'results.json'


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of `<workdir>/metrics.jsonl` (empty if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard.

  On resume from `start_step`, rows of later steps (written after the last checkpoint by the
  interrupted run) are dropped, so every step appears once.
  """

  def __init__(self, workdir: str, start_step: int, enabled: bool = True):
    self._enabled = enabled
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    kept = [row for row in read_metrics(workdir) if row['step'] <= start_step]
    files.write_text_atomic(self._path, ''.join(json.dumps(row) + '\n' for row in kept))
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=start_step + 1)
    except ImportError:
      logging.warning('tensorboardX is not installed: no TensorBoard events will be written.')

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._enabled:
      return
    with open(self._path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, value, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


class Progress:
  """Prints 'step s/S (epoch e) | loss | top1 or active | lr | images/s | ETA' lines
  (`active`: the fraction of a metric-learning batch's pairs or triplets with a non-zero loss)."""

  def __init__(
      self, total_steps: int, steps_per_epoch: int, global_batch_size: int, start_step: int
  ):
    self._total, self._per_epoch, self._batch = total_steps, steps_per_epoch, global_batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()
    self.images_per_s: float | None = None

  def pause(self, seconds: float) -> None:
    """Excludes `seconds` (eval, checkpointing) from the throughput measurement."""
    self._last_time += seconds

  def line(self, step: int, scalars: dict[str, float]) -> str:
    now = time.perf_counter()
    steps = step - self._last_step
    if steps > 0:
      self.images_per_s = steps * self._batch / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = ((self._total - step) * self._batch / self.images_per_s) if self.images_per_s else 0.0
    scores = ''.join(
        f'{k.removeprefix("train_")} {scalars[k]:.4f} | '
        for k in ('train_loss', 'train_top1', 'train_active')
        if k in scalars
    )
    return (
        f'step {step}/{self._total} (epoch {step / self._per_epoch:.2f}) | {scores}'
        f'lr {scalars["lr"]:.4g} | {self.images_per_s or 0:,.0f} img/s | ETA {_duration(eta)}'
    )


def read_results(workdir: str) -> dict[str, Any]:
  """`<workdir>/results.json` (OSError if there is none)."""
  with open(os.path.join(workdir, RESULTS_FILE)) as f:
    return json.load(f)


def write_results(workdir: str, results: dict[str, Any]) -> None:
  files.write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)
