"""Dataset statistics (input_pipeline.stats) and the ops that consume them: normalize with a
stats file, subtract_pixel_mean and zca."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import datasets, ops
from input_pipeline import stats as stats_lib

SEED = tf.constant([3, 4], tf.int64)


def _correlated_images(n: int, shape=(4, 5, 3), seed: int = 0) -> np.ndarray:
  """Images in about [0, 1] whose channels and pixels are correlated (a shared random field)."""
  rng = np.random.default_rng(seed)
  field = rng.normal(size=(n,) + shape[:2] + (1,))
  mixing = np.array([[0.2, 0.15, 0.1]])[..., : shape[-1]]
  noise = 0.05 * rng.normal(size=(n,) + shape)
  return (0.5 + field * mixing + noise + np.linspace(0, 0.1, shape[1])[:, None]).astype(np.float32)


def _batches(images: np.ndarray, sizes):
  assert sum(sizes) == len(images)
  starts = np.cumsum([0] + list(sizes))
  return [images[a:b] for a, b in zip(starts[:-1], starts[1:])]


def _apply(spec: str, image) -> np.ndarray:
  return np.asarray(ops.parse(spec)({'image': tf.constant(image), 'label': 0}, SEED)['image'])


def test_compute_matches_numpy_over_uneven_batches():
  images = _correlated_images(37)
  stats = stats_lib.compute(
      _batches(images, [10, 7, 15, 5]), zca_epsilon=1e-3, source={'dataset': 'synthetic'}
  )
  x = images.astype(np.float64)
  pixels = x.reshape(-1, 3)
  np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.std, pixels.std(0), rtol=1e-10)  # population std (ddof 0)
  np.testing.assert_allclose(stats.cov, np.cov(pixels.T, bias=True), rtol=1e-10, atol=1e-14)
  eigval, eigvec = np.linalg.eigh(np.cov(pixels.T, bias=True))
  np.testing.assert_allclose(stats.eigval, eigval[::-1], rtol=1e-9)
  # Same eigenvectors up to sign; the sign rule makes each column's largest entry positive.
  np.testing.assert_allclose(np.abs(stats.eigvec.T @ eigvec[:, ::-1]), np.eye(3), atol=1e-9)
  columns = np.arange(3)
  assert np.all(stats.eigvec[np.argmax(np.abs(stats.eigvec), 0), columns] > 0)
  np.testing.assert_allclose(stats.pixel_mean, x.mean(0), rtol=1e-12)
  flat = x.reshape(37, -1)
  lam, u = np.linalg.eigh(np.cov(flat.T, bias=True))
  expected_zca = u @ np.diag(1 / np.sqrt(np.maximum(lam, 0) + 1e-3)) @ u.T
  np.testing.assert_allclose(
      stats.zca, expected_zca, rtol=1e-5, atol=1e-5 * np.abs(expected_zca).max()
  )
  assert stats.zca_epsilon == 1e-3 and stats.num_examples == 37
  assert stats.source == {'dataset': 'synthetic'}


def test_default_zca_epsilon_is_a_tenth_of_the_mean_pixel_variance():
  images = _correlated_images(20)
  stats = stats_lib.compute([images])
  flat = images.reshape(20, -1).astype(np.float64)
  assert stats.zca_epsilon == pytest.approx(0.1 * flat.var(0).mean(), rel=1e-9)


def test_images_of_several_sizes_give_channel_statistics_only():
  small, large = _correlated_images(6, (4, 5, 3)), _correlated_images(3, (6, 2, 3), seed=1)
  stats = stats_lib.compute([small, large])
  pixels = np.concatenate([small.reshape(-1, 3), large.reshape(-1, 3)]).astype(np.float64)
  np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.std, pixels.std(0), rtol=1e-10)
  assert stats.pixel_mean is None and stats.zca is None
  assert 'shapes differ' in stats.zca_note


def test_zca_is_skipped_above_zca_max_dims_and_the_json_says_why(tmp_path):
  stats = stats_lib.compute([_correlated_images(5)], zca_max_dims=59)  # D = 60
  assert stats.zca is None and stats.pixel_mean is not None
  stats_lib.save(stats, str(tmp_path))
  record = json.loads((tmp_path / stats_lib.JSON_NAME).read_text())
  assert record['zca'] is None and 'D = H*W*C = 60 > zca_max_dims = 59' in record['zca_note']
  with pytest.raises(ValueError, match='zca needs the zca of .*zca_max_dims = 59'):
    ops.parse(f"zca('{tmp_path}')")


def test_zca_whitened_data_has_identity_covariance(tmp_path):
  # N = 4000 images of D = 48 dims, covariance eigenvalues spread over three decades.
  rng = np.random.default_rng(1)
  n, shape, d = 4000, (4, 4, 3), 48
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  mixing = q @ np.diag(np.sqrt(np.logspace(-3, -1, d)))
  images = (0.5 + rng.normal(size=(n, d)) @ mixing.T).reshape((n,) + shape).astype(np.float32)
  epsilon = 1e-7
  path = stats_lib.save(
      stats_lib.compute(_batches(images, [1500, 1500, 1000]), zca_epsilon=epsilon), str(tmp_path)
  )
  white = _apply(f"zca('{path}')", images).reshape(n, d).astype(np.float64)
  np.testing.assert_allclose(white.mean(0), 0, atol=1e-5)
  cov = np.cov(white.T, bias=True)
  # Exactly, cov = U diag(λ/(λ+ε)) Uᵀ: off identity by at most ε/(λ_min+ε); float32 rounding
  # of the images and of W adds relative errors of about 1e-6 per entry.
  lam_min = np.linalg.eigvalsh(np.cov(images.reshape(n, d).astype(np.float64).T, bias=True))[0]
  np.testing.assert_allclose(cov, np.eye(d), atol=epsilon / (lam_min + epsilon) + 1e-5)
  # Zero-phase: W is symmetric (PCA whitening, a rotation of it, would whiten as well).
  w = stats_lib.load(path).zca
  np.testing.assert_allclose(w, w.T, atol=1e-6 * np.abs(w).max())


def test_zca_with_another_epsilon_equals_computing_it_with_that_epsilon(tmp_path):
  images = _correlated_images(200)
  path = stats_lib.save(stats_lib.compute([images], zca_epsilon=1e-4), str(tmp_path))
  direct = stats_lib.compute([images], zca_epsilon=3e-2).zca
  rebuilt = stats_lib.rezca(stats_lib.load(path).zca, 1e-4, 3e-2)
  np.testing.assert_allclose(rebuilt, direct, atol=1e-5 * np.abs(direct).max())
  np.testing.assert_allclose(
      _apply(f"zca('{path}', epsilon=3e-2)", images[:3]),
      ((images[:3] - images.mean(0)).reshape(3, -1) @ direct).reshape(images[:3].shape),
      atol=1e-4,
  )


def test_normalize_with_a_stats_file_standardises_the_data(tmp_path):
  images = _correlated_images(300, (6, 6, 3))
  path = stats_lib.save(stats_lib.compute(_batches(images, [128, 128, 44])), str(tmp_path))
  for where in (path, str(tmp_path)):  # the file or its directory
    out = _apply(f"normalize('{where}')", images).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, rtol=1e-5)


def test_normalize_keeps_dataset_names_and_numbers():
  out = _apply("normalize('imagenet')", np.full((2, 2, 3), 0.456, np.float32))
  np.testing.assert_allclose(out[..., 1], 0, atol=1e-6)
  np.testing.assert_allclose(
      _apply('normalize((0.5,), (0.25,))', np.ones((1, 1, 2), np.float32)), 2.0
  )
  with pytest.raises(ValueError, match='must have 3 channels'):
    _apply("normalize('cifar10')", np.ones((2, 2, 1), np.float32))


def test_subtract_pixel_mean_centres_every_pixel_and_checks_the_shape(tmp_path):
  images = _correlated_images(50)
  path = stats_lib.save(stats_lib.compute([images]), str(tmp_path))
  out = _apply(f"subtract_pixel_mean('{path}')", images)  # a [V, H, W, C] stack
  np.testing.assert_allclose(out.mean(0), 0, atol=1e-6)
  with pytest.raises(ValueError, match=r'differs from the mean image.*4x5x3.*crop or resize'):
    _apply(f"subtract_pixel_mean('{path}')", np.zeros((5, 4, 3), np.float32))
  # Inside tf.data after decoding, the size is known only at run time.
  op = ops.parse(f"subtract_pixel_mean('{path}')")
  ds = tf.data.Dataset.from_generator(
      lambda: iter([np.zeros((5, 4, 3), np.float32)]),
      output_signature=tf.TensorSpec([None, None, 3], tf.float32),
  )
  with pytest.raises(tf.errors.InvalidArgumentError, match='differs from the mean image'):
    next(iter(ds.map(lambda image: op({'image': image}, SEED))))


def test_save_load_round_trip_and_readable_json(tmp_path):
  stats = stats_lib.compute(
      [_correlated_images(30)], source={'dataset': 'synthetic', 'split': 'train'}
  )
  path = stats_lib.save(stats, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted([stats_lib.NPZ_NAME, stats_lib.JSON_NAME])
  loaded = stats_lib.load(path)
  for field in ('mean', 'std', 'cov', 'eigval', 'eigvec', 'pixel_mean', 'zca'):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(stats, field))
  assert (loaded.zca_epsilon, loaded.num_examples, loaded.source) == (
      stats.zca_epsilon,
      30,
      {'dataset': 'synthetic', 'split': 'train'},
  )
  record = json.loads((tmp_path / stats_lib.JSON_NAME).read_text())
  np.testing.assert_allclose(record['std'], stats.std)
  np.testing.assert_allclose(record['eigvec'], stats.eigvec)
  assert record['image_shape'] == [4, 5, 3] and record['num_examples'] == 30
  assert record['source']['split'] == 'train'


def test_a_failed_save_keeps_the_old_files_and_leaves_no_temporary_file(tmp_path, monkeypatch):
  old = stats_lib.compute([_correlated_images(10)])
  stats_lib.save(old, str(tmp_path))

  def crash(f, **arrays):
    f.write(b'half an npz')
    raise KeyboardInterrupt('killed mid-write')

  monkeypatch.setattr(np, 'savez', crash)
  with pytest.raises(KeyboardInterrupt):
    stats_lib.save(stats_lib.compute([_correlated_images(10, seed=5)]), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted([stats_lib.NPZ_NAME, stats_lib.JSON_NAME])
  np.testing.assert_array_equal(stats_lib.load(str(tmp_path)).mean, old.mean)


def test_load_by_dataset_name_uses_the_recorded_numbers():
  stats = stats_lib.load('imagenet')
  spec = datasets.get_spec('imagenet2012')
  np.testing.assert_array_equal(stats.mean, spec.mean)
  np.testing.assert_array_equal(stats.eigvec, spec.eigvec)
  assert stats.cov is None and stats.pixel_mean is None and stats.zca is None


def test_missing_statistics_are_explained(tmp_path, monkeypatch):
  how = r'python main\.py --mode=dataset_stats .*dataset_stats\.npz'
  with pytest.raises(ValueError, match=f'does not exist.*{how}'):
    stats_lib.load(str(tmp_path / 'nothing.npz'))
  with pytest.raises(ValueError, match=f'No dataset_stats.npz in directory.*{how}'):
    stats_lib.load(str(tmp_path))
  monkeypatch.setattr(datasets, 'get_spec', lambda name: datasets.DatasetSpec(name, name))
  with pytest.raises(ValueError, match=f"No statistics are recorded for dataset 'plain'.*{how}"):
    stats_lib.load('plain')
  with pytest.raises(ValueError, match=f'No statistics .*{how}.*Or give the numbers'):
    ops.parse("normalize('plain')")
  monkeypatch.undo()
  with pytest.raises(ValueError, match="subtract_pixel_mean needs the pixel_mean of 'cifar10'"):
    ops.parse("subtract_pixel_mean('cifar10')")
  (tmp_path / 'bad.npz').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='Cannot read dataset statistics'):
    stats_lib.load(str(tmp_path / 'bad.npz'))
  with pytest.raises(ValueError, match='No images'):
    stats_lib.compute([])
  with pytest.raises(ValueError, match=r'\[B, H, W, C\]'):
    stats_lib.compute([np.zeros((4, 4, 3), np.float32)])
