"""tf.data pipeline: reproducible, resumable training batches; padded eval that counts once."""

import numpy as np
import pytest

import input_pipeline
from configs import default
from input_pipeline import pipeline as pipeline_lib


def _pipeline(
    data_dir, batch=64, eval_batch=300, seed=0, process_index=0, process_count=1, **fields
):
  config = default.get_config().dataset
  config.update(
      name='offline_digits',
      data_dir=data_dir,
      download=False,
      train_preprocess="random_crop(28, pad=2)|normalize('mnist')",
      eval_preprocess="normalize('mnist')",
      shuffle_buffer=1000,
  )
  config.update(fields)
  return input_pipeline.InputPipeline(
      config,
      global_batch_size=batch,
      eval_batch_size=eval_batch,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
  )


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


def test_threads_size_tf_datas_threadpool_and_change_no_batch(data_dir, pipeline):
  threaded = _pipeline(data_dir, threads=3)
  for p, size in ((pipeline, None), (threaded, 3)):  # None: TensorFlow's default pool
    for ds in (p._make_train_epoch(0, 0), p._eval_ds):  # pylint: disable=protected-access
      assert ds.options().threading.private_threadpool_size == size
  (first,) = _take(threaded.train_batches(), 1)
  np.testing.assert_array_equal(first['image'], next(pipeline.train_batches())['image'])


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
  for a, b in zip(straight[spe - 2 :], resumed):
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
  shards = [
      _pipeline(data_dir, batch=66, eval_batch=300, process_index=i, process_count=3)
      for i in range(3)
  ]
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


def _digit_identities_and_offsets(batches):
  """Each training digit's identity (its sorted pixels, which a shift of ≤ 2 px keeps unless
  it cuts the digit) and the position its crop put it at (its centroid)."""
  found = {}
  for b in batches:
    for image, label in zip(b['image'][..., 0], b['label']):
      ink = image - image.min()
      key = (int(label), np.sort(ink.ravel()).round(4).tobytes())
      rows, cols = np.indices(ink.shape)
      found[key] = (float((rows * ink).sum() / ink.sum()), float((cols * ink).sum() / ink.sum()))
  return found


def test_each_example_gets_new_augmentation_each_epoch_and_the_same_on_a_rerun(data_dir):
  p = _pipeline(data_dir, batch=500)  # 8 steps: every digit once per epoch
  batches = _take(p.train_batches(0), 2 * p.steps_per_epoch)
  epoch0 = _digit_identities_and_offsets(batches[:8])
  epoch1 = _digit_identities_and_offsets(batches[8:])
  rerun = _digit_identities_and_offsets(_take(_pipeline(data_dir, batch=500).train_batches(0), 8))
  common = set(epoch0) & set(epoch1)
  assert len(common) > 3500  # the same digits, less those whose crop cut a stroke
  moved = sum(np.hypot(*np.subtract(epoch0[k], epoch1[k])) > 0.5 for k in common)
  assert moved > 0.8 * len(common)  # 24 of the 25 offsets differ from any given one
  assert rerun == epoch0


def test_decoding_before_the_cache_changes_no_batch(data_dir):
  cached = next(_pipeline(data_dir, batch=100).train_batches(3))
  streamed = next(_pipeline(data_dir, batch=100, cache=False, shuffle_buffer=4000).train_batches(3))
  for key in ('image', 'label'):
    np.testing.assert_array_equal(cached[key], streamed[key])


def test_mixup_batches_are_seeded_by_their_place_in_the_epoch(data_dir):
  p = _pipeline(data_dir, train_preprocess='random_crop(28, pad=2)|mixup(0.4)')
  straight = _take(p.train_batches(0), p.steps_per_epoch + 2)
  resumed = _take(p.train_batches(p.steps_per_epoch - 1), 3)
  for a, b in zip(straight[-3:], resumed):
    for key in ('image', 'label', 'mix_label', 'mix_weight'):
      np.testing.assert_array_equal(a[key], b[key])
  weights = [b['mix_weight'][0] for b in straight]
  assert len(set(weights)) == len(weights)  # a new λ every batch
  assert all(np.any(b['mix_label'] != b['label']) for b in straight)


def test_ten_view_eval_and_grey_to_rgb_at_a_minimum_size(data_dir):
  p = _pipeline(
      data_dir,
      eval_batch=250,
      channels=3,
      min_size=36,
      train_preprocess='random_crop(32)',
      eval_preprocess='ten_crop(32)',
  )
  assert p.image_shape == (32, 32, 3)
  batch = next(p.eval_batches())
  assert batch['image'].shape == (250, 10, 32, 32, 3)
  views = batch['image'][0]
  np.testing.assert_array_equal(views[0], views[5][:, ::-1])  # the centre and its mirror
  np.testing.assert_array_equal(views[..., 0], views[..., 2])  # grey in all three channels


def test_views_in_training_mixup_in_eval_and_other_channel_counts_are_refused(data_dir):
  with pytest.raises(ValueError, match='belong in dataset.eval_preprocess'):
    _pipeline(data_dir, train_preprocess='ten_crop(24)')
  with pytest.raises(ValueError, match='training only'):
    _pipeline(data_dir, eval_preprocess='mixup(0.2)')
  with pytest.raises(ValueError, match='dataset.channels must be 0'):
    _pipeline(data_dir, channels=1)


def test_stats_images_are_what_the_first_statistics_op_sees(data_dir):
  config = default.get_config().dataset
  config.update(data_dir=data_dir, eval_preprocess="center_crop(20)|normalize('mnist')|cutout(4)")
  batches, source = pipeline_lib.stats_images(config, batch_size=1000)
  images = np.concatenate(list(batches))
  assert images.shape == (4000, 20, 20, 1) and source['preprocess'] == 'decode|center_crop(20)'
  assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.99
