"""PNG of a workdir's training curves (loss, accuracy, learning rate against steps)."""

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from common import files  # pylint: disable=wrong-import-position
from train_lib import reporting  # pylint: disable=wrong-import-position


def plot_training_curves(workdir: str, path: str) -> None:
  """Plots `<workdir>/metrics.jsonl` into `path` (written atomically)."""
  rows = reporting.read_metrics(workdir)
  panels = [
      ('loss', ['train_loss', 'eval_loss']),
      ('top-1 accuracy', ['train_top1', 'eval_top1']),
      ('learning rate', ['lr']),
  ]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
  for ax, (title, keys) in zip(axes, panels):
    for key in keys:
      points = [(r['step'], r[key]) for r in rows if key in r]
      if points:
        steps, values = zip(*points)
        ax.plot(
            steps,
            values,
            marker='o' if key.startswith('eval') else None,
            ms=3,
            label=key.replace('_', ' '),
        )
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(os.path.basename(os.path.abspath(workdir)))
  fig.tight_layout()
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
  plt.close(fig)
