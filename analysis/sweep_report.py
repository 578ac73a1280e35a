"""A sweep's report: each point's overrides, status and final metrics (sweep.csv, sweep.md), the
final eval accuracy and training loss against each swept field (sweep.png), and every point's
curves overlaid (sweep_curves.png). Unfinished and failed points are listed as such.

  python main.py --mode=sweep_report --workdir=<root>   (also written after a --sweep run)
"""

import csv
import io
import json
import os
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from matplotlib import ticker  # pylint: disable=wrong-import-position

from common import files  # pylint: disable=wrong-import-position
from common.errors import UserError  # pylint: disable=wrong-import-position
from train_lib import reporting, sweeps  # pylint: disable=wrong-import-position

METRICS = ('eval_top1', 'eval_loss', 'train_loss')


def _status(workdir: str) -> tuple[str, dict[str, Any]]:
  """('finished' | 'failed: …' | 'stopped at step k' | 'not started', final results)."""
  results = {}
  path = os.path.join(workdir, reporting.RESULTS_FILE)
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)
  failed = os.path.join(workdir, sweeps.FAILED_FILE)
  if os.path.exists(failed):
    with open(failed) as f:
      return f'failed: {json.load(f)["error"].splitlines()[0][:120]}', results
  if sweeps.is_finished(workdir):
    return 'finished', results
  rows = reporting.read_metrics(workdir)
  if rows:
    return f'stopped at step {rows[-1]["step"]}', {**results, **_last(rows)}
  return 'not started', results


def _last(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """The latest value of each metric logged so far."""
  return {k: v for row in rows for k, v in row.items() if k in METRICS}


def read(root: str) -> list[dict[str, Any]]:
  """One row per point: index, name, status, its overrides, and its final metrics."""
  path = os.path.join(root, sweeps.SWEEP_FILE)
  if not os.path.isfile(path):
    raise UserError(
        f'{root} holds no {sweeps.SWEEP_FILE}: run the sweep into it first '
        f'(python main.py --config=<config with get_sweep()> --workdir={root} --sweep).'
    )
  with open(path) as f:
    points = json.load(f)['points']
  rows = []
  for i, point in enumerate(points):
    status, results = _status(os.path.join(root, point['name']))
    rows.append(
        {
            'index': i,
            'name': point['name'],
            'status': status,
            **point['overrides'],
            'step': results.get('step'),
            **{m: results.get(m) for m in METRICS},
        }
    )
  return rows


def _text(value: Any) -> str:
  if value is None:
    return ''
  return f'{value:.4f}' if isinstance(value, float) else str(value)


FINAL_PLOTTED = ('eval_top1', 'train_loss')  # sweep.png's rows: generalisation and training


def _plot_final(rows, keys, path: str) -> None:
  height, width = len(FINAL_PLOTTED), len(keys)
  fig, axes = plt.subplots(height, width, figsize=(4.4 * width, 3.2 * height), squeeze=False)
  for (metric, key), ax in zip([(m, k) for m in FINAL_PLOTTED for k in keys], axes.flat):
    others = [k for k in keys if k != key]
    groups: dict[str, list] = {}
    for row in rows:  # a point that does not set `key` (points may set different fields) is
      if row[metric] is not None and key in row:  # left out of that panel
        label = ', '.join(f'{k.rpartition(".")[2]}={row[k]}' for k in others if k in row)
        groups.setdefault(label, []).append((row[key], row[metric]))
    for label, points in groups.items():
      numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
      xs = [x for x, _ in points] if numeric else [str(x) for x, _ in points]
      ax.plot(xs, [y for _, y in points], 'o-', label=label or None)
      if numeric and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 100:
        ax.set_xscale('log')
      elif numeric and all(isinstance(x, int) for x in xs):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if any(groups):
      ax.legend(fontsize=7)
  fig.tight_layout()
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
  plt.close(fig)


def _plot_curves(root: str, rows, path: str) -> None:
  panels = ('train_loss', 'eval_loss', 'eval_top1')
  fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6))
  for ax, key in zip(axes, panels):
    for row in rows:
      points = [
          (r['step'], r[key])
          for r in reporting.read_metrics(os.path.join(root, row['name']))
          if key in r
      ]
      if points:
        ax.plot(
            *zip(*points), label=row['name'], marker='o' if key.startswith('eval') else None, ms=3
        )
    ax.set_title(key.replace('_', ' '))
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
  plt.close(fig)


def write_report(root: str) -> str:
  """Writes sweep.csv, sweep.md, sweep.png and sweep_curves.png into `root`; returns the table."""
  rows = read(root)
  keys = list(
      dict.fromkeys(
          k for row in rows for k in row if k not in ('index', 'name', 'status', 'step', *METRICS)
      )
  )
  columns = ['index', *keys, 'status', 'step', *METRICS]
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  files.write_text_atomic(os.path.join(root, 'sweep.csv'), out.getvalue())
  table = '\n'.join(
      [
          '| ' + ' | '.join(columns) + ' |',
          '|' + '---|' * len(columns),
          *('| ' + ' | '.join(_text(row.get(c)) for c in columns) + ' |' for row in rows),
      ]
  )
  files.write_text_atomic(os.path.join(root, 'sweep.md'), table + '\n')
  if keys:
    _plot_final(rows, keys, os.path.join(root, 'sweep.png'))
  _plot_curves(root, rows, os.path.join(root, 'sweep_curves.png'))
  return table
