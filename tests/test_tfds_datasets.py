"""tfds datasets by name: mocked mnist / cifar10, and clear errors when data is missing."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import input_pipeline
from train_lib import train


def _dataset_config(name, **overrides):
  fields = dict(name=name, data_dir='', download=True, train_split='', eval_split='',
                train_preprocess='', eval_preprocess='', cache=True, shuffle_buffer=1000)
  return ml_collections.ConfigDict({**fields, **overrides})


@pytest.mark.parametrize('name, shape', [('mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_mocked_tfds_dataset_feeds_the_pipeline(name, shape):
  with tfds.testing.mock_data(num_examples=48):
    p = input_pipeline.InputPipeline(
        _dataset_config(name, train_preprocess=f"random_crop({shape[0]}, pad=4)|flip_lr|normalize('{name}')",
                        eval_preprocess=f"normalize('{name}')"),
        global_batch_size=16, eval_batch_size=20, seed=0)
    assert p.image_shape == shape and p.num_classes == 10 and p.steps_per_epoch == 3
    batch = next(p.train_batches(0))
    assert batch['image'].shape == (16, *shape) and batch['image'].dtype == np.float32
    evals = list(p.eval_batches())
    assert sum(int(b['mask'].sum()) for b in evals) == 48


def test_mocked_cifar10_trains(tmp_path, small_config):
  config = small_config
  config.dataset.name = 'cifar10'
  config.dataset.train_preprocess = "random_crop(32, pad=4)|flip_lr|normalize('cifar10')"
  config.dataset.eval_preprocess = "normalize('cifar10')"
  config.batch_size, config.eval_batch_size, config.total_steps = 16, 16, 4
  with tfds.testing.mock_data(num_examples=64):
    results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == 4 and results['eval_count'] == 64
  assert 0.0 <= results['eval_top1'] <= results['eval_top5'] <= 1.0


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(input_pipeline.DatasetError, match='Did you mean mnist.*offline_digits'):
    input_pipeline.get_spec('mnsit')


def test_missing_dataset_with_download_off_says_how_to_prepare(tmp_path):
  with pytest.raises(input_pipeline.DatasetError, match='(?s)download_and_prepare.*offline_digits'):
    input_pipeline.InputPipeline(_dataset_config('mnist', data_dir=str(tmp_path), download=False),
                                 global_batch_size=8, eval_batch_size=8, seed=0)


def test_failed_download_says_how_to_prepare(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise ConnectionError('Failed to resolve storage.googleapis.com')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  with pytest.raises(input_pipeline.DatasetError,
                     match=r"(?s)Could not download.*'cifar10'.*ConnectionError.*copy ~/tensorflow_datasets/cifar10"):
    input_pipeline.InputPipeline(_dataset_config('cifar10', data_dir=str(tmp_path)),
                                 global_batch_size=8, eval_batch_size=8, seed=0)
