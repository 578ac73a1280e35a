"""Which examples form a metric-learning batch: pairs, triplets or P×K, by (seed, step) alone.

Every function draws from the generator it is given, and `step_rng` makes that generator a pure
function of the run's seed and the global step, so a resumed run draws exactly the batches of an
uninterrupted one, and every process draws the same global batch (each then keeps its rows).
`groups[c]` holds the example indices of the c-th trainable class.
"""

from collections.abc import Sequence

import numpy as np

from common.errors import ConfigError

ROW_SIZE = {'pairs': 2, 'triplets': 3, 'classes': 1}  # images per batch row
_SALT = 0x5A3D  # keeps these draws apart from the classification pipeline's epoch seeds


def step_rng(seed: int, step: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([seed, _SALT, step]))


def group_by_class(labels: np.ndarray, classes: Sequence[int]) -> list[np.ndarray]:
  """The example indices of each of `classes`, in that order."""
  return [np.flatnonzero(labels == c) for c in classes]


def _two_distinct(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """[size, 2] pairs of distinct integers below n."""
  first = rng.integers(0, n, size)
  second = (first + rng.integers(1, n, size)) % n
  return np.stack([first, second], axis=1)


def _pick(rng: np.random.Generator, groups: Sequence[np.ndarray], classes: np.ndarray):
  """One random example of each class in `classes`."""
  return np.array([groups[c][rng.integers(len(groups[c]))] for c in classes], np.int64)


def _positive_pairs(rng: np.random.Generator, groups: Sequence[np.ndarray], size: int):
  """[size, 2] distinct examples of one class each, and the [size] classes."""
  eligible = np.flatnonzero([len(g) >= 2 for g in groups])
  classes = eligible[rng.integers(0, len(eligible), size)]
  pairs = np.array(
      [groups[c][_two_distinct(rng, len(groups[c]), 1)[0]] for c in classes], np.int64
  ).reshape(size, 2)
  return pairs, classes


def _other_classes(rng: np.random.Generator, classes: np.ndarray, num_classes: int) -> np.ndarray:
  """For each of `classes`, a uniformly drawn different class."""
  return (classes + rng.integers(1, num_classes, len(classes))) % num_classes


def balanced_pairs(rng: np.random.Generator, groups: Sequence[np.ndarray], size: int) -> np.ndarray:
  """[size, 2] example indices: even rows a same-class pair, odd rows a pair of two classes.

  Classes are drawn uniformly (not by their number of examples), and the two examples of a
  same-class pair are distinct.
  """
  same, classes = _positive_pairs(rng, groups, size)
  others = _other_classes(rng, classes, len(groups))
  different = np.stack([same[:, 0], _pick(rng, groups, others)], axis=1)
  return np.where((np.arange(size) % 2 == 0)[:, None], same, different)


def triplets(rng: np.random.Generator, groups: Sequence[np.ndarray], size: int) -> np.ndarray:
  """[size, 3] (anchor, positive, negative): two distinct examples of a class, one of another."""
  same, classes = _positive_pairs(rng, groups, size)
  negatives = _pick(rng, groups, _other_classes(rng, classes, len(groups)))
  return np.concatenate([same, negatives[:, None]], axis=1)


def classes_by_examples(
    rng: np.random.Generator, groups: Sequence[np.ndarray], p: int, k: int
) -> np.ndarray:
  """[p·k] example indices: p distinct classes, k distinct examples of each, class by class."""
  classes = rng.choice(len(groups), size=p, replace=False)
  return np.concatenate([rng.choice(groups[c], size=k, replace=False) for c in classes])


def check_groups(
    groups: Sequence[np.ndarray], classes: Sequence[int], sampling: str, p: int = 0, k: int = 0
) -> None:
  """Refuses a sampling that the training classes cannot feed, naming what to change."""
  if len(groups) < 2:
    raise ConfigError(
        f'Metric learning needs at least two training classes; {len(groups)} remain after '
        'dataset.holdout_classes.'
    )
  if sampling != 'classes':
    if not any(len(g) >= 2 for g in groups):
      raise ConfigError('No training class has two examples, so no same-class pair exists.')
    return
  if p > len(groups):
    raise ConfigError(
        f'A P×K batch needs P = batch_size / metric.examples_per_class = {p} classes, but '
        f'training has {len(groups)}: lower batch_size or raise metric.examples_per_class.'
    )
  smallest = int(np.argmin([len(g) for g in groups]))
  if k > len(groups[smallest]):
    raise ConfigError(
        f'metric.examples_per_class={k}, but class {classes[smallest]} has only '
        f'{len(groups[smallest])} training examples: lower it to at most that.'
    )


def global_batch(
    seed: int, step: int, groups: Sequence[np.ndarray], sampling: str, rows: int, k: int = 0
) -> np.ndarray:
  """The example indices of global step `step`: [rows, ROW_SIZE[sampling]]."""
  rng = step_rng(seed, step)
  if sampling == 'pairs':
    return balanced_pairs(rng, groups, rows)
  if sampling == 'triplets':
    return triplets(rng, groups, rows)
  return classes_by_examples(rng, groups, rows // k, k)[:, None]
