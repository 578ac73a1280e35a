"""Embedding evaluation on constructed embeddings whose answers are known."""

import ml_collections
import numpy as np
import pytest

from common.errors import ConfigError
from configs import default
from train_lib import metric_eval


def _clusters(num_classes=5, per_class=20, spread=0.05, seed=0):
  """Tight clusters around orthogonal class centres: every metric should be perfect."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(num_classes), per_class)
  centres = np.eye(num_classes, 8)
  return centres[labels] + spread * rng.normal(size=(len(labels), 8)), labels


def _metric(**fields) -> ml_collections.ConfigDict:
  metric = default.get_config().metric
  metric.update(fields)
  return metric


def test_recall_at_k_by_hand():
  # On a line: 0, 1 (class 0); 3, 5.5 (class 1). Nearest others: 1, 0, 1 (a miss), 3.
  x, labels = np.array([[0.0], [1.0], [3.0], [5.5]]), np.array([0, 0, 1, 1])
  recall = metric_eval.recall_at_k(x, labels, (1, 2, 5), 'euclidean')
  # k=2: 3's two nearest are 1 and 5.5, a hit. k=5 is more than there are others: dropped.
  assert recall == {1: 0.75, 2: 1.0}


def test_separated_clusters_score_perfectly_and_noise_scores_chance():
  x, labels = _clusters()
  seen = (0, 1)  # classes 2, 3, 4 are 'held out'
  results = metric_eval.evaluate(x, labels, seen, _metric(episodes=200))
  for key in ('heldout_auc', 'heldout_verification_accuracy', 'heldout_recall_at_1'):
    assert results[f'eval_{key}'] == 1.0, key
  assert results['eval_heldout_3way_1shot_accuracy'] == 1.0
  assert results['eval_seen_recall_at_1'] == 1.0 and results['eval_count'] == 100

  noise = np.random.default_rng(1).normal(size=x.shape)
  results = metric_eval.evaluate(noise, labels, seen, _metric(episodes=2000))
  assert results['eval_heldout_auc'] == pytest.approx(0.5, abs=0.05)
  assert results['eval_heldout_3way_1shot_accuracy'] == pytest.approx(1 / 3, abs=0.03)


def test_verification_threshold_and_accuracy_on_one_dimension():
  # Classes 0 and 1 at 0 and 1, ten examples each, spread 0.1: same-class pairs lie within 0.2,
  # different-class pairs at least 0.8 apart, so a threshold between them is right every time.
  labels = np.repeat([0, 1], 10)
  x = (labels + np.tile(np.linspace(-0.1, 0.1, 10), 2))[:, None]
  scores = metric_eval.verification(x, labels, count=200, distance='euclidean')
  assert scores['auc'] == 1.0 and scores['verification_accuracy'] == 1.0
  assert 0.2 <= scores['threshold'] <= 0.8


def test_episodes_use_the_nearest_prototype():
  # One support example per class on a line, queries closer to their own class's support.
  labels = np.repeat([0, 1, 2], 2)
  x = np.array([[0.0], [0.4], [5.0], [5.4], [10.0], [10.4]])
  accuracy = metric_eval.few_shot_accuracy(
      x, labels, ways=3, shots=1, queries=1, episodes=50, distance='euclidean'
  )
  assert accuracy == 1.0


def test_episodes_the_eval_split_cannot_form_are_refused_before_training():
  labels = np.repeat(np.arange(10), 100)
  metric_eval.check_episodes(labels, range(7), _metric(ways=3))
  with pytest.raises(ConfigError, match='4-way episodes need 4 heldout eval classes'):
    metric_eval.check_episodes(labels, range(7), _metric(ways=4))
  with pytest.raises(ConfigError, match='shots \\+ metric.queries = 101'):
    metric_eval.check_episodes(labels, range(7), _metric(shots=1, queries=100))
