"""--mode=dataset_stats on the offline digits, and ops that read the file it writes."""

import os

import numpy as np
import pytest
from conftest import read_bytes

from configs import default
from input_pipeline import dataset_stats, offline_digits, pipeline, stats


@pytest.fixture(scope='module')
def written(data_dir, tmp_path_factory):
  """The digits' statistics, written by the mode into a fresh workdir."""
  config = default.get_config()
  config.dataset.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp('stats'))
  return config, workdir, dataset_stats.write_dataset_stats(config, workdir)


def test_statistics_of_the_training_digits(written):
  _, workdir, path = written
  images, labels = offline_digits.load_arrays()
  train = images[offline_digits.stratified_split(labels)['train']] / 255.0
  s = stats.load(path)
  assert s.num_examples == 4000 and s.source['preprocess'] == 'decode'
  np.testing.assert_allclose(s.mean, [train.mean()], rtol=1e-6)
  np.testing.assert_allclose(s.std, [train.std()], rtol=1e-6)
  np.testing.assert_allclose(s.pixel_mean, train.mean(axis=0), atol=1e-6)
  # The registry's numbers for the offline digits are these, rounded.
  np.testing.assert_allclose(s.mean, [0.1315], atol=5e-5)
  np.testing.assert_allclose(s.std, [0.3088], atol=5e-5)
  assert sorted(os.listdir(workdir)) == ['dataset_stats.json', 'dataset_stats.npz']


def _normalised_training_split(config, op):
  """Every training digit once (8 batches of 500), through `op`."""
  config.update(train_preprocess=op)
  p = pipeline.InputPipeline(config, global_batch_size=500, eval_batch_size=500, seed=0)
  return np.concatenate(
      [next(batches)['image'] for batches in [p.train_batches(0)] for _ in range(p.steps_per_epoch)]
  )


def test_normalising_gives_zero_mean_and_unit_std_on_the_training_split(written):
  config, _, path = written
  images = _normalised_training_split(config.dataset, f"normalize('{path}')")
  assert images.shape == (4000, 28, 28, 1)
  assert abs(images.mean()) < 1e-5 and images.std() == pytest.approx(1.0, abs=1e-5)
  pixels = _normalised_training_split(config.dataset, f"subtract_pixel_mean('{path}')")
  np.testing.assert_allclose(pixels.mean(axis=0), 0.0, atol=1e-6)


def test_a_workdir_with_other_statistics_is_refused_and_kept(written):
  config, workdir, path = written
  before = read_bytes(path)
  assert dataset_stats.write_dataset_stats(config, workdir) == path  # same images: reused
  other = config.copy_and_resolve_references()
  other.dataset.eval_preprocess = "center_crop(20)|normalize('mnist')"
  with pytest.raises(ValueError, match='already holds the statistics'):
    dataset_stats.write_dataset_stats(other, workdir)
  assert read_bytes(path) == before


def test_main_writes_the_statistics_and_prints_their_path(data_dir, tmp_path):
  from conftest import REPO, run_main  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / 'stats'
  done = run_main(
      f'--config={REPO}/configs/lenet5_mnist.py',
      f'--workdir={workdir}',
      '--mode=dataset_stats',
      f'--config.dataset.data_dir={data_dir}',
      "--config.dataset.eval_preprocess=center_crop(24)|normalize('mnist')",
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == str(workdir / 'dataset_stats.npz')
  assert stats.load(str(workdir)).pixel_mean.shape == (24, 24, 1)
