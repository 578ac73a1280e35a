"""How good an embedding is, on the eval split: verification, retrieval and N-way K-shot accuracy.

The eval examples fall into two groups: classes the run trained on ('seen': new examples of
known classes) and classes it never saw ('heldout': `dataset.holdout_classes`, and any class
absent from the training split, as in Omniglot's evaluation alphabets). Each group gets
- verification: balanced same/different-class pairs drawn with a fixed seed, scored by distance:
  ROC AUC (scikit-learn) and the accuracy at the best distance threshold;
- retrieval: recall@k, the fraction of examples with a same-class example among their k nearest
  neighbours (leave-one-out, within the group);
and the held-out group (or the seen one when nothing is held out) N-way K-shot accuracy: in each
episode N classes, K support examples each and `queries` queries each; a query takes the class of
the nearest support mean (prototype; with K = 1, the nearest neighbour). Draws use a fixed seed,
so every run and every evaluation is scored on the same pairs and episodes.
"""

from collections.abc import Sequence

import ml_collections
import numpy as np

from common.errors import ConfigError

GROUPS = ('heldout', 'seen')  # eval classes never trained on; new examples of trained ones
_EVAL_SEED = 0
_CHUNK = 1024  # rows of the distance matrix computed at once


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def distance_matrix(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
  """[n, D] × [m, D] → [n, m] Euclidean or cosine (1 − cos) distances, as the losses use them."""
  if distance == 'cosine':
    return 1.0 - _unit(a) @ _unit(b).T
  squared = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(squared, 0.0))


def groups(labels: np.ndarray, seen_classes: Sequence[int]) -> dict[str, np.ndarray]:
  """{'heldout': mask, 'seen': mask} of the eval examples, each present when not empty."""
  seen = np.isin(labels, np.asarray(seen_classes))
  return {name: mask for name, mask in zip(GROUPS, (~seen, seen)) if mask.any()}


def episode_group(labels: np.ndarray, seen_classes: Sequence[int]) -> str:
  return 'heldout' if 'heldout' in groups(labels, seen_classes) else 'seen'


def recall_at_k(
    embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int], distance: str
) -> dict[int, float]:
  """Fraction of examples with a same-class example among their k nearest others, per k."""
  ks = sorted(k for k in ks if k < len(labels))
  hits = {k: 0 for k in ks}
  for start in range(0, len(labels), _CHUNK):
    d = distance_matrix(embeddings[start : start + _CHUNK], embeddings, distance)
    rows = np.arange(d.shape[0])
    d[rows, start + rows] = np.inf  # not itself
    nearest = np.argsort(d, axis=1)[:, : max(ks)]
    same = labels[nearest] == labels[start : start + _CHUNK, None]
    for k in ks:
      hits[k] += int(np.sum(same[:, :k].any(axis=1)))
  return {k: hits[k] / len(labels) for k in ks}


def verification_pairs(
    labels: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """([2·count, 2] example indices, [2·count] same-class flags): `count` same-class pairs of
  distinct examples and `count` pairs of two classes, classes drawn uniformly."""
  classes = np.unique(labels)
  by_class = [np.flatnonzero(labels == c) for c in classes]
  multi = [i for i, g in enumerate(by_class) if len(g) >= 2]
  pairs = []
  for _ in range(count):
    group = by_class[multi[rng.integers(len(multi))]]
    pairs.append(rng.choice(group, 2, replace=False))
  for _ in range(count):
    a, b = rng.choice(len(classes), 2, replace=False)
    pairs.append([rng.choice(by_class[a]), rng.choice(by_class[b])])
  return np.asarray(pairs), np.repeat([True, False], count)


def verification(
    embeddings: np.ndarray, labels: np.ndarray, count: int, distance: str
) -> dict[str, float]:
  """ROC AUC of −distance for same-class pairs, and the best accuracy over distance thresholds."""
  # pylint: disable=import-outside-toplevel  (scikit-learn takes seconds to import; only needed here)
  from sklearn import metrics as sk_metrics

  pairs, same = verification_pairs(labels, count, np.random.default_rng(_EVAL_SEED))
  a, b = embeddings[pairs[:, 0]], embeddings[pairs[:, 1]]
  d = _rowwise(a, b, distance)
  fpr, tpr, thresholds = sk_metrics.roc_curve(same, -d)
  accuracy = (tpr * same.sum() + (1 - fpr) * (~same).sum()) / len(same)
  best = int(np.argmax(accuracy))
  return {
      'auc': float(sk_metrics.roc_auc_score(same, -d)),
      'verification_accuracy': float(accuracy[best]),
      'threshold': float(-thresholds[best]),
  }


def _rowwise(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
  if distance == 'cosine':
    return 1.0 - np.sum(_unit(a) * _unit(b), axis=1)
  return np.linalg.norm(a - b, axis=1)


def episode_classes(labels: np.ndarray, per_class: int) -> np.ndarray:
  """The classes of `labels` with at least `per_class` examples."""
  classes, counts = np.unique(labels, return_counts=True)
  return classes[counts >= per_class]


def check_episodes(
    eval_labels: np.ndarray, seen_classes: Sequence[int], metric: ml_collections.ConfigDict
) -> None:
  """Refuses, before training, N-way K-shot episodes that the eval split cannot form."""
  if metric.ways < 2 or metric.shots < 1 or metric.queries < 1 or metric.episodes < 1:
    raise ConfigError(
        'metric.ways must be ≥ 2, and metric.shots, metric.queries and metric.episodes ≥ 1.'
    )
  name = episode_group(eval_labels, seen_classes)
  labels = eval_labels[groups(eval_labels, seen_classes)[name]]
  usable = episode_classes(labels, metric.shots + metric.queries)
  if len(usable) < metric.ways:
    raise ConfigError(
        f'{metric.ways}-way episodes need {metric.ways} {name} eval classes with metric.shots + '
        f'metric.queries = {metric.shots + metric.queries} examples each; the eval split has '
        f'{len(usable)}: lower metric.ways, shots or queries, or hold out more classes.'
    )


def few_shot_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    distance: str,
) -> float:
  """Mean accuracy of nearest-prototype classification over `episodes` N-way K-shot episodes."""
  rng = np.random.default_rng(_EVAL_SEED)
  classes = episode_classes(labels, shots + queries)
  by_class = {c: np.flatnonzero(labels == c) for c in classes}
  correct = 0
  for _ in range(episodes):
    chosen = rng.choice(classes, ways, replace=False)
    drawn = np.stack([rng.choice(by_class[c], shots + queries, replace=False) for c in chosen])
    prototypes = embeddings[drawn[:, :shots]].mean(axis=1)  # [ways, D]
    query = embeddings[drawn[:, shots:].reshape(-1)]  # [ways · queries, D], class-major
    predicted = np.argmin(distance_matrix(query, prototypes, distance), axis=1)
    correct += int(np.sum(predicted == np.repeat(np.arange(ways), queries)))
  return correct / (episodes * ways * queries)


def few_shot_key(group: str, ways: int, shots: int) -> str:
  """The result name of N-way K-shot accuracy on `group`, e.g. eval_heldout_3way_1shot_accuracy."""
  return f'eval_{group}_{ways}way_{shots}shot_accuracy'


def score_names(metric: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every key `evaluate` can return for `metric` (a group's keys only where it has examples)."""
  names = [f'recall_at_{k}' for k in metric.recall_at]
  names += ['auc', 'verification_accuracy', 'threshold']
  return (
      *(f'eval_{g}_{name}' for g in GROUPS for name in names),
      *(few_shot_key(g, metric.ways, metric.shots) for g in GROUPS),
  )


def evaluate(
    embeddings: np.ndarray,
    labels: np.ndarray,
    seen_classes: Sequence[int],
    metric: ml_collections.ConfigDict,
) -> dict[str, float]:
  """Every metric of the module docstring, named eval_<group>_<metric>."""
  results = {}
  masks = groups(labels, seen_classes)
  for name, mask in masks.items():
    emb, lab = embeddings[mask], labels[mask]
    for k, value in recall_at_k(emb, lab, metric.recall_at, metric.distance).items():
      results[f'eval_{name}_recall_at_{k}'] = value
    if len(np.unique(lab)) >= 2:
      for key, value in verification(emb, lab, metric.verification_pairs, metric.distance).items():
        results[f'eval_{name}_{key}'] = value
  name = episode_group(labels, seen_classes)
  mask = masks[name]
  accuracy = few_shot_accuracy(
      embeddings[mask],
      labels[mask],
      ways=metric.ways,
      shots=metric.shots,
      queries=metric.queries,
      episodes=metric.episodes,
      distance=metric.distance,
  )
  results[few_shot_key(name, metric.ways, metric.shots)] = accuracy
  results['eval_count'] = len(labels)
  return results
