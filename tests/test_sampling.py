"""Metric-learning batches: what pairs, triplets and P×K batches hold, held-out classes, seeds."""

import numpy as np
import pytest

from common.errors import ConfigError
from configs import metric_learning
from input_pipeline import MetricPipeline, sampling

LABELS = np.repeat(np.arange(6), [5, 6, 7, 8, 9, 10])  # class c has 5 + c examples
GROUPS = sampling.group_by_class(LABELS, range(6))


def test_p_by_k_batches_hold_exactly_p_classes_of_k_distinct_examples():
  for step in range(20):
    batch = sampling.global_batch(
        seed=3, step=step, groups=GROUPS, sampling='classes', rows=12, k=3
    )
    assert batch.shape == (12, 1)
    by_class = LABELS[batch[:, 0]].reshape(4, 3)  # P = 12 / 3
    assert (by_class == by_class[:, :1]).all()  # each run of K is one class
    assert len(set(by_class[:, 0])) == 4  # P distinct classes
    assert len(set(batch[:, 0])) == 12  # no example twice


def test_pairs_alternate_same_and_different_and_triplets_are_well_formed():
  pairs = sampling.global_batch(0, 7, GROUPS, 'pairs', rows=400)
  same = LABELS[pairs[:, 0]] == LABELS[pairs[:, 1]]
  assert same[0::2].all() and not same[1::2].any()
  assert (pairs[:, 0] != pairs[:, 1]).all()  # a same-class pair is two different examples
  # classes are drawn uniformly, not by size: each of the 6 takes about 1/6 of the anchors
  counts = np.bincount(LABELS[pairs[0::2, 0]], minlength=6)
  assert counts.min() > 15 and counts.max() < 55
  triplets = sampling.global_batch(0, 7, GROUPS, 'triplets', rows=100)
  a, p, n = LABELS[triplets].T
  assert (a == p).all() and (a != n).all() and (triplets[:, 0] != triplets[:, 1]).all()


def test_a_batch_is_a_function_of_seed_and_step_alone():
  draw = lambda seed, step: sampling.global_batch(seed, step, GROUPS, 'classes', rows=8, k=2)
  assert np.array_equal(draw(1, 5), draw(1, 5))
  assert not np.array_equal(draw(1, 5), draw(1, 6))
  assert not np.array_equal(draw(1, 5), draw(2, 5))


@pytest.mark.parametrize(
    'p, k, message',
    [
        (7, 2, 'needs P = batch_size / metric.examples_per_class = 7 classes'),
        (2, 6, 'class 0 has only 5'),
    ],
)
def test_batches_the_classes_cannot_feed_are_refused(p, k, message):
  with pytest.raises(ConfigError, match=message):
    sampling.check_groups(GROUPS, range(6), 'classes', p, k)


def _digits_config(data_dir, variant='triplet', **dataset):
  config = metric_learning.get_config(variant)
  config.dataset.data_dir = data_dir
  config.dataset.update(dataset)
  return config


def _pipeline(config, start=0, **kwargs):
  args = dict(
      sampling_name=config.metric.sampling,
      examples_per_class=config.metric.examples_per_class,
      global_batch_size=config.batch_size,
      eval_batch_size=500,
      seed=config.seed,
  )
  return MetricPipeline(config.dataset, **{**args, **kwargs})


def test_held_out_classes_never_train_and_a_resumed_run_sees_the_same_batches(data_dir):
  config = _digits_config(data_dir)
  data = _pipeline(config)
  assert data.seen_classes == (0, 1, 2, 3, 4, 5, 6) and data.num_train_examples == 2800
  assert data.steps_per_epoch == 2800 // 56
  batches = data.train_batches(0)
  first = [next(batches) for _ in range(6)]
  for batch in first:
    assert batch['image'].shape == (56, 28, 28, 1)
    assert not np.isin(batch['label'], [7, 8, 9]).any()
    assert len(set(batch['label'])) == 7  # P = 56 / 8
  resumed = next(data.train_batches(5))
  for key in ('image', 'label'):
    assert np.array_equal(resumed[key], first[5][key])
  assert sorted(set(data.eval_labels)) == list(range(10))  # eval keeps the held-out classes


def test_pairs_batches_stack_the_two_images_of_a_pair(data_dir):
  config = _digits_config(data_dir, 'siamese')
  rows = config.batch_size
  batch = next(_pipeline(config).train_batches(3))
  assert batch['image'].shape == (rows, 2, 28, 28, 1) and batch['label'].shape == (rows, 2)
  same = batch['label'][:, 0] == batch['label'][:, 1]
  assert same[0::2].all() and not same[1::2].any()
  # the two images of a same-class pair are different digits
  assert all(not np.array_equal(*batch['image'][i]) for i in range(0, rows, 2))


@pytest.mark.parametrize(
    'dataset, kwargs, message',
    [
        ({'holdout_classes': (3, 12)}, {}, r'holdout_classes names \[12\].*classes 0 to 9'),
        ({}, {'examples_per_class': 500}, 'examples_per_class=500, but class 0 has only 400'),
        ({}, {'examples_per_class': 3}, 'divides batch_size'),
    ],
)
def test_bad_metric_input_is_refused_with_what_to_change(data_dir, dataset, kwargs, message):
  config = _digits_config(data_dir, **dataset)
  if kwargs.get('examples_per_class') == 500:
    kwargs['global_batch_size'] = 1000
  with pytest.raises(ConfigError, match=message):
    _pipeline(config, **kwargs)
