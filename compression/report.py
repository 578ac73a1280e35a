"""The report of a compression run: each model's size, compute, accuracy and measured latency,
as compression.json, a readable table (compression.md) and accuracy against size (compression.png).
"""

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from common import files  # pylint: disable=wrong-import-position

JSON_FILE, TABLE_FILE, PICTURE_FILE = 'compression.json', 'compression.md', 'compression.png'


@dataclasses.dataclass
class Row:
  """One model of the report: the original, a stage, or the compressed result."""

  name: str
  params: int  # trainable parameters of the model as built
  nonzero: int  # of them, not zero (pruning)
  bytes: int  # on disk at the bit widths and encoding of `encoding`
  encoding: str  # e.g. 'float32', 'int8 per-channel', 'sparse + 5-bit shared + Huffman'
  macs: int | None  # multiply-accumulates per image, dense (a zero weight still counts)
  top1: float  # eval accuracy
  latency_ms: float | None = None  # one call on `latency_batch` images (measure_latencies_ms)
  compute: str = ''  # what the latency measures: 'float32 dense', 'int8 dot/conv', ...
  timed_call: Callable[[], Any] | None = dataclasses.field(default=None, repr=False)

  def times_smaller(self, original: 'Row') -> float:
    return original.bytes / max(self.bytes, 1)


def measure_latencies_ms(
    calls: Sequence[Callable[[], Any]], rounds: int = 5, repeats: int = 10
) -> list[float]:
  """Best time in ms of each of `calls` (jitted, ready to run), interleaved: `rounds` rounds of
  `repeats` timed calls each, host and device synchronised, after one warm-up call apiece. On a
  shared machine the load drifts; interleaving gives every model the same quiet moments."""
  for call in calls:
    jax.block_until_ready(call())
  best = [float('inf')] * len(calls)
  for _ in range(rounds):
    for i, call in enumerate(calls):
      for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(call())
        best[i] = min(best[i], time.perf_counter() - began)
  return [b * 1e3 for b in best]


def _fields(row: Row) -> dict[str, Any]:
  return {f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name != 'timed_call'}


def _table(rows: Sequence[Row], notes: Sequence[str], title: str) -> str:
  original = rows[0]
  lines = [
      f'# {title}',
      '',
      '| model | params | non-zero | size | × smaller | encoding | MACs | top-1 | Δ top-1 | '
      'latency (ms) | speed-up |',
      '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    speed = (
        f'{original.latency_ms / row.latency_ms:.2f}×'
        if row.latency_ms and original.latency_ms
        else ''
    )
    lines.append(
        f'| {row.name} | {row.params:,} | {row.nonzero:,} | {row.bytes / 1000:,.1f} kB | '
        f'{row.times_smaller(original):.1f}× | {row.encoding} | '
        f'{f"{row.macs:,}" if row.macs is not None else "?"} | {row.top1:.4f} | '
        f'{100 * (row.top1 - original.top1):+.2f} pt | '
        f'{f"{row.latency_ms:.2f}" if row.latency_ms else ""}'
        f'{f" ({row.compute})" if row.compute else ""} | {speed} |'
    )
  return '\n'.join(lines + [''] + [f'- {note}' for note in notes]) + '\n'


def _picture(rows: Sequence[Row], title: str, path: str) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  sizes = [row.bytes / 1000 for row in rows]
  ax.plot(sizes, [row.top1 for row in rows], 'o-', color='tab:blue')
  for row, size in zip(rows, sizes):
    ax.annotate(row.name, (size, row.top1), textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xscale('log')
  ax.set_xlabel('size on disk (kB = 1000 bytes, log scale)')
  ax.set_ylabel('eval top-1')
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3, which='both')
  fig.tight_layout()
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
  plt.close(fig)


def write(
    workdir: str,
    rows: Sequence[Row],
    *,
    title: str,
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> str:
  """Writes the report of `rows` (the original first) into `workdir`; returns the table."""
  original = rows[0]
  record = {
      'title': title,
      'rows': [{**_fields(row), 'ratio': row.times_smaller(original)} for row in rows],
      'notes': list(notes),
      **(extra or {}),
  }
  files.write_json_atomic(os.path.join(workdir, JSON_FILE), json.loads(json.dumps(record)))
  table = _table(rows, notes, title)
  files.write_text_atomic(os.path.join(workdir, TABLE_FILE), table)
  _picture(rows, title, os.path.join(workdir, PICTURE_FILE))
  return table
