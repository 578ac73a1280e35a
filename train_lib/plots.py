"""PNGs of a run: its training curves (loss, accuracy, learning rate against steps), and for
metric learning its embedding projected to 2-D."""

import os
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from common import files  # pylint: disable=wrong-import-position
from train_lib import reporting  # pylint: disable=wrong-import-position

# Logged values drawn in the accuracy panel: classification's top-1, metric learning's scores.
_ACCURACY_SUFFIXES = ('top1', '_accuracy', '_auc', '_recall_at_1')


def plot_training_curves(workdir: str, path: str) -> None:
  """Plots `<workdir>/metrics.jsonl` into `path` (written atomically)."""
  rows = reporting.read_metrics(workdir)
  logged = sorted({k for row in rows for k in row})
  panels = [
      ('loss', ['train_loss', 'eval_loss']),
      ('accuracy', [k for k in logged if k.endswith(_ACCURACY_SUFFIXES)]),
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


def project_2d(embeddings: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
  """[N, D] → [N, 2] by t-SNE or PCA (scikit-learn)."""
  # pylint: disable=import-outside-toplevel  (scikit-learn is slow to import; only needed here)
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE

  if embeddings.shape[1] <= 2:
    return np.pad(embeddings, ((0, 0), (0, 2 - embeddings.shape[1])))
  if method == 'pca':
    return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
  perplexity = min(30.0, (len(embeddings) - 1) / 3)
  return TSNE(2, perplexity=perplexity, init='pca', random_state=seed).fit_transform(embeddings)


def plot_embedding(
    path: str,
    embeddings: np.ndarray,
    labels: np.ndarray,
    seen_classes: Sequence[int],
    *,
    method: str = 'tsne',
    title: str = '',
    max_points: int = 2000,
) -> None:
  """The embeddings projected to 2-D, coloured by class: seen classes as dots, held-out classes
  as crosses. At most `max_points` examples, drawn with a fixed seed."""
  if len(labels) > max_points:
    keep = np.sort(np.random.default_rng(0).choice(len(labels), max_points, replace=False))
    embeddings, labels = embeddings[keep], labels[keep]
  points = project_2d(embeddings, method)
  classes = np.unique(labels)
  colours = plt.get_cmap('tab10' if len(classes) <= 10 else 'turbo')
  fig, ax = plt.subplots(figsize=(6.4, 5.6))
  for i, c in enumerate(classes):
    at = labels == c
    held_out = c not in seen_classes
    ax.scatter(
        points[at, 0],
        points[at, 1],
        s=14 if held_out else 6,
        marker='x' if held_out else 'o',
        color=colours(i / max(len(classes) - 1, 1)) if len(classes) > 10 else colours(i),
        label=(f'{c} (held out)' if held_out else str(c)) if len(classes) <= 20 else None,
        alpha=0.9 if held_out else 0.6,
        linewidths=1.0 if held_out else 0.0,
    )
  if len(classes) <= 20:
    ax.legend(fontsize=7, markerscale=2, loc='best', ncol=2)
  projection = 'PCA' if method == 'pca' else 't-SNE'
  ax.set_title(f'{projection} of the eval embeddings' + (f'\n{title}' if title else ''))
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=100))
  plt.close(fig)
