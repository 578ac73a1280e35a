"""tf.data pipeline: reproducible, resumable training batches; padded eval that counts once."""

import ml_collections
import numpy as np
import pytest

import input_pipeline


def _pipeline(data_dir, batch=64, eval_batch=300, seed=0, process_index=0, process_count=1):
  config = ml_collections.ConfigDict(dict(
      name='offline_digits', data_dir=data_dir, download=False, train_split='', eval_split='',
      train_preprocess="random_crop(28, pad=2)|normalize('mnist')",
      eval_preprocess="normalize('mnist')", cache=True, shuffle_buffer=1000))
  return input_pipeline.InputPipeline(config, global_batch_size=batch, eval_batch_size=eval_batch,
                                      seed=seed, process_index=process_index,
                                      process_count=process_count)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.fixture(scope='module')
def pipeline(data_dir):
  """Seed 0, batch 64, eval batch 300: the pipeline most tests read."""
  return _pipeline(data_dir)


def test_dataset_facts(pipeline):
  p = pipeline
  assert (p.num_train_examples, p.num_eval_examples, p.num_classes) == (4000, 1000, 10)
  assert p.steps_per_epoch == 4000 // 64 and p.image_shape == (28, 28, 1)


def test_eval_counts_every_example_exactly_once(pipeline):
  batches = list(pipeline.eval_batches())  # 1000 = 3 × 300 + 100
  assert [b['image'].shape[0] for b in batches] == [300] * 4
  assert [int(b['mask'].sum()) for b in batches] == [300, 300, 300, 100]
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  # Padding rows are zeros and masked out.
  assert not batches[-1]['image'][100:].any()


def test_resumed_batches_equal_uninterrupted_ones_across_an_epoch_boundary(pipeline):
  p = pipeline
  spe = p.steps_per_epoch
  straight = _take(p.train_batches(0), spe + 3)
  resumed = _take(p.train_batches(spe - 2), 5)
  for a, b in zip(straight[spe - 2:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_same_seed_same_batches_and_epochs_differ(data_dir, pipeline):
  first = next(pipeline.train_batches(0))
  again = next(_pipeline(data_dir, seed=0).train_batches(0))
  other_seed = next(_pipeline(data_dir, seed=2).train_batches(0))
  next_epoch = next(pipeline.train_batches(pipeline.steps_per_epoch))
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['label'], again['label'])
  assert not np.array_equal(first['label'], other_seed['label'])
  assert not np.array_equal(first['label'], next_epoch['label'])


def test_an_epoch_visits_each_training_example_at_most_once(data_dir):
  p = _pipeline(data_dir, batch=500)  # 8 steps cover all 4,000 digits
  labels = np.concatenate([b['label'] for b in _take(p.train_batches(0), p.steps_per_epoch)])
  np.testing.assert_array_equal(np.bincount(labels), [400] * 10)


def test_processes_read_disjoint_shards_and_stay_in_step(data_dir):
  shards = [_pipeline(data_dir, batch=66, eval_batch=300, process_index=i, process_count=3)
            for i in range(3)]
  assert len({s.steps_per_epoch for s in shards}) == 1
  evals = [list(s.eval_batches()) for s in shards]
  assert len({len(e) for e in evals}) == 1  # same number of eval steps on every process
  assert sum(int(b['mask'].sum()) for e in evals for b in e) == 1000
  assert evals[0][0]['image'].shape[0] == 100  # each process holds a third of the batch


def test_batch_sizes_must_fit(data_dir):
  with pytest.raises(ValueError, match='divide evenly over 3 processes'):
    _pipeline(data_dir, batch=64, process_count=3)
  with pytest.raises(ValueError, match='larger than the training split'):
    _pipeline(data_dir, batch=8192)
