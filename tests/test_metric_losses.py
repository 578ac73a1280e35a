"""Metric-learning losses against hand-computed values, and the miners on constructed batches."""

import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common.errors import ConfigError
from train_lib import metric_losses as ml

# Six examples on a line (1-D embeddings), so every distance can be read off:
# class 0 at 0, 1, 3 and class 1 at 10, 11, 4.
POINTS = jnp.array([[0.0], [1.0], [3.0], [10.0], [11.0], [4.0]])
LABELS = jnp.array([0, 0, 0, 1, 1, 1])
VALID = jnp.ones(6, bool)


def test_contrastive_loss_follows_the_same_is_zero_convention():
  d = jnp.array([0.5, 0.5, 1.5, 2.0])
  different = jnp.array([0, 1, 1, 0])
  # same: ½d²; different: ½·max(0, 1 − d)²
  expected = [0.125, 0.125, 0.0, 2.0]
  np.testing.assert_allclose(ml.contrastive_loss(d, different, margin=1.0), expected)


def test_triplet_margin_loss_on_distances_equals_optax_on_embeddings():
  rng = np.random.default_rng(0)
  a, p, n = (jnp.asarray(rng.normal(size=(16, 8)), jnp.float32) for _ in range(3))
  ours = ml.triplet_margin_loss(ml.distances(a, p), ml.distances(a, n), margin=1.0)
  np.testing.assert_allclose(ours, optax.losses.triplet_margin_loss(a, p, n), atol=1e-4)
  assert float(ml.triplet_margin_loss(jnp.array(1.0), jnp.array(3.0), 0.5)) == 0.0
  assert float(ml.triplet_margin_loss(jnp.array(3.0), jnp.array(1.0), 0.5)) == 2.5


def test_distances_euclidean_and_cosine():
  x = jnp.array([[3.0, 4.0], [0.0, 1.0], [0.0, -2.0]])
  np.testing.assert_allclose(
      ml.distance_matrix(x),
      [[0, np.sqrt(18), np.sqrt(45)], [np.sqrt(18), 0, 3], [np.sqrt(45), 3, 0]],
      atol=1e-5,
  )
  # cos(x0, x1) = 4/5, cos(x1, x2) = -1
  np.testing.assert_allclose(ml.distance_matrix(x, 'cosine')[0, 1], 0.2, atol=1e-6)
  np.testing.assert_allclose(ml.distances(x[1], x[2], 'cosine'), 2.0, atol=1e-6)
  with pytest.raises(ConfigError, match='Unknown distance'):
    ml.distances(x, x, 'manhattan')


def test_batch_hard_picks_the_farthest_positive_and_the_closest_negative():
  d = ml.distance_matrix(POINTS)
  positive, negative, usable = ml.batch_hard_triplets(d, LABELS, VALID)
  # anchor at 0: positives at 1, 3 → 3 (index 2); negatives at 10, 11, 4 → 4 (index 5)
  assert (int(positive[0]), int(negative[0])) == (2, 5)
  # anchor at 4 (index 5): positives 10, 11 → 11 (index 4); negatives 0, 1, 3 → 3 (index 2)
  assert (int(positive[5]), int(negative[5])) == (4, 2)
  assert bool(usable.all())
  # A padded row is never picked: without index 5, anchor 0's closest negative is at 10.
  _, negative, _ = ml.batch_hard_triplets(d, LABELS, VALID.at[5].set(False))
  assert int(negative[0]) == 3


def test_semi_hard_picks_the_closest_farther_negative_else_the_farthest():
  d = ml.distance_matrix(POINTS)
  negative, usable = ml.semi_hard_negatives(d, LABELS, VALID)
  # (0, 1): d_ap = 1; negatives at 10, 11, 4 are all farther → the closest of them, 4 (index 5)
  assert int(negative[0, 1]) == 5
  # (5, 3): d_ap = 6; negatives at 4, 3, 1 from it, none farther → the farthest, 0 (index 0)
  assert int(negative[5, 3]) == 0
  # (2, 0): d_ap = 3; negatives at 7, 8, 1 → 7 (index 3)
  assert int(negative[2, 0]) == 3
  assert np.array_equal(usable, (LABELS[:, None] == LABELS[None, :]) & ~np.eye(6, dtype=bool))


def _hand_triplets(points, labels, margin):
  x, y = np.asarray(points)[:, 0], np.asarray(labels)
  losses = []
  for a, p, n in itertools.product(range(len(y)), repeat=3):
    if a != p and y[a] == y[p] and y[a] != y[n]:
      losses.append(max(0.0, abs(x[a] - x[p]) - abs(x[a] - x[n]) + margin))
  return np.array(losses)


def test_batch_all_averages_the_non_zero_triplets():
  assert int(ml.batch_all_triplets(LABELS, VALID).sum()) == 6 * 2 * 3  # anchors × pos × neg
  hand = _hand_triplets(POINTS, LABELS, margin=2.0)
  loss, active = ml.mined_triplet_loss(
      ml.distance_matrix(POINTS), LABELS, VALID, mining='batch_all', margin=2.0
  )
  assert float(loss) == pytest.approx(hand[hand > 0].mean(), rel=1e-5)
  assert float(active) == pytest.approx(np.mean(hand > 0), rel=1e-5)


def test_batch_hard_and_semi_hard_losses_by_hand():
  d = ml.distance_matrix(POINTS)
  loss, _ = ml.mined_triplet_loss(d, LABELS, VALID, mining='batch_hard', margin=1.0)
  # per anchor: max(0, farthest positive − closest negative + 1)
  hand = [
      max(0, 3 - 4 + 1),
      max(0, 2 - 3 + 1),
      3 - 1 + 1,
      max(0, 6 - 7 + 1),
      max(0, 7 - 8 + 1),
      7 - 1 + 1,
  ]
  assert float(loss) == pytest.approx(np.mean(hand), rel=1e-5)
  loss, _ = ml.mined_triplet_loss(d, LABELS, VALID, mining='semi_hard', margin=1.0)
  negative, usable = ml.semi_hard_negatives(d, LABELS, VALID)
  x = np.asarray(POINTS)[:, 0]
  pairs = np.argwhere(np.asarray(usable))
  hand = [max(0, abs(x[a] - x[p]) - abs(x[a] - x[int(negative[a, p])]) + 1) for a, p in pairs]
  assert float(loss) == pytest.approx(np.mean(hand), rel=1e-5)


def test_mined_contrastive_averages_positives_and_negatives_apart():
  d = ml.distance_matrix(POINTS)
  loss, _ = ml.mined_contrastive_loss(d, LABELS, VALID, mining='batch_all', margin=5.0)
  x, y = np.asarray(POINTS)[:, 0], np.asarray(LABELS)
  pos = [0.5 * (x[i] - x[j]) ** 2 for i in range(6) for j in range(6) if i != j and y[i] == y[j]]
  neg = [
      0.5 * max(0, 5 - abs(x[i] - x[j])) ** 2 for i in range(6) for j in range(6) if y[i] != y[j]
  ]
  neg = [v for v in neg if v > 0]
  assert float(loss) == pytest.approx(np.mean(pos) + np.mean(neg), rel=1e-5)
  # batch_hard: per anchor ½·d(farthest positive)² + ½·max(0, 5 − d(closest negative))²
  loss, _ = ml.mined_contrastive_loss(d, LABELS, VALID, mining='batch_hard', margin=5.0)
  hardest = [(3, 4), (2, 3), (3, 1), (6, 7), (7, 8), (7, 1)]
  hand = [0.5 * p**2 + 0.5 * max(0, 5 - n) ** 2 for p, n in hardest]
  assert float(loss) == pytest.approx(np.mean(hand), rel=1e-5)


def test_objective_on_pairs_and_triplets():
  pairs = jnp.array([[[0.0], [1.0]], [[0.0], [0.5]]])  # [B=2, 2, D=1]
  labels = jnp.array([[3, 3], [3, 4]])  # same, then different
  fn = ml.objective('pairs', 'contrastive', '', 'euclidean', margin=1.0)
  loss, extra = fn(pairs, labels, jnp.array([True, True]), None)
  assert float(loss) == pytest.approx((0.5 * 1.0 + 0.5 * 0.25) / 2, rel=1e-5)
  assert float(extra['active']) == 1.0
  loss, _ = fn(pairs, labels, jnp.array([True, False]), None)  # the masked row counts for nothing
  assert float(loss) == pytest.approx(0.5, rel=1e-5)
  triplets = jnp.array([[[0.0], [1.0], [3.0]], [[0.0], [2.0], [1.0]]])
  fn = ml.objective('triplets', 'triplet', '', 'euclidean', margin=0.5)
  loss, _ = fn(triplets, jnp.zeros((2, 3), int), jnp.array([True, True]), None)
  assert float(loss) == pytest.approx((0.0 + 1.5) / 2, rel=1e-5)


@pytest.mark.parametrize(
    'sampling, loss, mining, message',
    [
        ('pairs', 'triplet', '', "set metric.loss='contrastive'"),
        ('triplets', 'triplet', 'batch_hard', "set metric.mining=''"),
        ('classes', 'contrastive', 'semi_hard', 'choose one of batch_all, batch_hard'),
        ('quads', 'triplet', '', 'Unknown metric.sampling'),
    ],
)
def test_impossible_combinations_are_refused(sampling, loss, mining, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(')):
    ml.check_objective(sampling, loss, mining, 'euclidean')
