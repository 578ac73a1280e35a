"""Colour ops: PCA lighting, colour jitter, grey to RGB."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import datasets, ops

SEED = tf.constant([3, 4], tf.int64)


def _image(h=4, w=5, c=3, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0.1, 0.9, (h, w, c)).astype(np.float32)


def _apply(spec: str, image, seed=SEED) -> np.ndarray:
  return np.asarray(ops.parse(spec)({'image': tf.constant(image), 'label': 0}, seed)['image'])


def _seed(i: int) -> tf.Tensor:
  return tf.constant([7, i], tf.int64)


def test_pca_lighting_offsets_have_the_alexnet_distribution():
  # 20,000 images through tf.data, each with its own seed: the per-pixel offset
  # o = V diag(λ) α with α ~ N(0, σ² I) must have mean 0 and covariance V diag((σλ)²) Vᵀ.
  n, sigma = 20_000, 0.1
  spec = datasets.get_spec('imagenet')
  eigval, eigvec = np.asarray(spec.eigval), np.asarray(spec.eigvec)
  image = tf.constant(_image(2, 2))
  op = ops.parse(f'pca_lighting({sigma})')
  offsets = tf.data.Dataset.range(n).map(
      lambda i: op({'image': image}, tf.stack([i, tf.constant(11, tf.int64)]))['image'] - image
  )
  offsets = next(iter(offsets.batch(n))).numpy().astype(np.float64)  # [n, 2, 2, 3]
  # The same offset for every pixel of an image (up to float32 rounding of image + offset).
  np.testing.assert_allclose(offsets, np.broadcast_to(offsets[:, :1, :1], offsets.shape), atol=2e-7)
  o = offsets[:, 0, 0]
  cov = eigvec @ np.diag((sigma * eigval) ** 2) @ eigvec.T
  # Sample mean: standard error sqrt(Σ_jj / n). Second moment (mean known to be 0): for a
  # Gaussian, Var(o_j o_k) = Σ_jj Σ_kk + Σ_jk². Five standard errors each.
  np.testing.assert_array_less(np.abs(o.mean(0)), 5 * np.sqrt(np.diag(cov) / n))
  moment = o.T @ o / n
  moment_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
  np.testing.assert_array_less(np.abs(moment - cov), 5 * moment_se)
  # The same in eigen-coordinates, where even the smallest component (λ₃ = 0.0045) is
  # resolved: β = V⁻¹ o / (σλ) must be standard normal, independent across components.
  beta = o @ np.linalg.inv(eigvec).T / (sigma * eigval)
  np.testing.assert_array_less(np.abs(beta.mean(0)), 5 / np.sqrt(n))
  np.testing.assert_array_less(
      np.abs(beta.T @ beta / n - np.eye(3)), 5 * np.sqrt((1 + np.eye(3)) / n)
  )


def test_pca_lighting_takes_explicit_eigenvectors_and_sigma_zero_is_the_identity():
  image = _image()
  np.testing.assert_array_equal(_apply('pca_lighting(0.0)', image), image)
  # One eigenvector (1, 0, 0) with eigenvalue 1: only red moves, by α ~ N(0, 0.5²).
  out = _apply(
      'pca_lighting(0.5, eigval=(1, 0, 0), eigvec=((1, 0, 0), (0, 1, 0), (0, 0, 1)))', image
  )
  shift = out - image
  np.testing.assert_array_equal(shift[..., 1:], 0)
  assert np.ptp(shift[..., 0]) < 1e-6 and abs(shift[0, 0, 0]) > 1e-3
  with pytest.raises(ValueError, match='must have 3 channels'):
    _apply('pca_lighting()', np.zeros((2, 2, 1), np.float32))
  with pytest.raises(ValueError, match="pca_lighting needs the eigval of 'cifar10'"):
    ops.parse("pca_lighting(stats='cifar10')")


def test_color_jitter_with_zero_factors_is_the_identity():
  image = _image()
  for i in range(5):
    np.testing.assert_array_equal(_apply('color_jitter()', image, _seed(i)), image)
    np.testing.assert_array_equal(
        _apply('color_jitter(0, (1, 1), (1, 1), (0, 0))', image, _seed(i)), image
    )


def test_brightness_multiplies_by_a_factor_in_its_range():
  image = _image() * 0.5  # no clipping below 1 / 0.45 = 2.2
  ratios = [
      float(np.mean(_apply('color_jitter(brightness=0.4)', image, _seed(i)) / image))
      for i in range(60)
  ]
  for i in range(3):
    out = _apply('color_jitter(brightness=0.4)', image, _seed(i))
    np.testing.assert_allclose(out / image, ratios[i], rtol=1e-6)  # one factor per image
  # 60 draws of U[0.6, 1.4]: each end tenth stays empty with probability 0.9^60 = 0.2%.
  assert 0.6 <= min(ratios) < 0.68 and 1.32 < max(ratios) <= 1.4
  np.testing.assert_allclose(_apply('color_jitter(brightness=(2, 2))', image), 2 * image, rtol=1e-6)
  np.testing.assert_array_equal(
      _apply('color_jitter(brightness=(3, 3))', image), np.minimum(3 * image, 1)
  )  # clipped to [0, 1]


def _luma(image: np.ndarray) -> np.ndarray:
  return image @ np.array([0.2989, 0.587, 0.114], np.float32)


def test_contrast_blends_with_the_mean_luma():
  image = _image()
  flat = _apply('color_jitter(contrast=(0, 0))', image)
  np.testing.assert_allclose(flat, _luma(image).mean(), atol=1e-6)
  half = _apply('color_jitter(contrast=(0.5, 0.5))', image)
  np.testing.assert_allclose(half, 0.5 * image + 0.5 * _luma(image).mean(), atol=1e-6)
  assert np.std(_luma(half)) == pytest.approx(0.5 * np.std(_luma(image)), rel=1e-4)


def test_saturation_zero_gives_the_grey_image():
  image = _image()
  grey = _apply('color_jitter(saturation=(0, 0))', image)
  np.testing.assert_allclose(grey, np.repeat(_luma(image)[..., None], 3, -1), atol=1e-6)
  vivid = _apply('color_jitter(saturation=(1.5, 1.5))', image)
  spread = lambda x: np.mean(np.ptp(x, axis=-1))
  assert spread(vivid) > 1.2 * spread(image)  # 1.5× before clipping


def test_hue_turns_the_colour_wheel():
  pixels = np.array([[[1, 0, 0], [0, 1, 0], [0.2, 0.4, 0.8]]], np.float32)
  third = _apply(f'color_jitter(hue=({1 / 3!r}, {1 / 3!r}))', pixels)
  np.testing.assert_allclose(third[0, :2], [[0, 1, 0], [0, 0, 1]], atol=1e-6)
  np.testing.assert_allclose(third[0, 2], [0.8, 0.2, 0.4], atol=1e-6)  # a third of a turn
  # Hue keeps value (max) and saturation: the same channel values, permuted.
  shifts = [_apply('color_jitter(hue=0.1)', pixels, _seed(i)) for i in range(20)]
  hues = [float(tf.image.rgb_to_hsv(s)[0, 0, 0]) for s in shifts]  # red starts at hue 0
  assert all(min(h, 1 - h) <= 0.1 + 1e-6 for h in hues) and len(set(hues)) == 20


def test_jitter_runs_in_a_random_order_unless_told_not_to():
  image = _image()
  bright_then_flat = np.full_like(image, _luma(np.minimum(3 * image, 1)).mean())
  flat_then_bright = np.full_like(image, min(3 * _luma(image).mean(), 1))
  spec = 'color_jitter(brightness=(3, 3), contrast=(0, 0){})'
  results = {tuple(np.round(_apply(spec.format(''), image, _seed(i))[0, 0], 5)) for i in range(16)}
  expected = {tuple(np.round(x[0, 0], 5)) for x in (bright_then_flat, flat_then_bright)}
  assert results == expected  # both orders occur (each has chance 2^-16 of not occurring)
  for i in range(4):
    np.testing.assert_allclose(
        _apply(spec.format(', random_order=False'), image, _seed(i)), bright_then_flat, atol=1e-6
    )


def test_jitter_on_grey_images_and_view_stacks():
  grey = _image(c=1)
  np.testing.assert_array_equal(_apply('color_jitter(saturation=(0, 0), hue=0.3)', grey), grey)
  np.testing.assert_allclose(
      _apply('color_jitter(brightness=(0.5, 0.5))', grey), grey / 2, rtol=1e-6
  )
  views = np.stack([_image(seed=1), _image(seed=2)])
  spec = 'color_jitter(0, (0.5, 0.5), (0.5, 0.5), (0.2, 0.2))'
  np.testing.assert_allclose(
      _apply(spec, views), np.stack([_apply(spec, v) for v in views]), atol=1e-6
  )  # contrast uses each view's own mean


def test_to_rgb_repeats_grey_and_keeps_rgb():
  grey, rgb = _image(c=1), _image()
  np.testing.assert_array_equal(_apply('to_rgb', grey), np.repeat(grey, 3, -1))
  np.testing.assert_array_equal(_apply('to_rgb', rgb), rgb)
  with pytest.raises(ValueError, match='1 or 3 channels'):
    _apply('to_rgb', _image(c=2))


def test_channel_count_known_only_at_run_time():
  # After `decode` with channels=0, tf.data knows the channel count only per image.
  op = ops.parse('to_rgb|color_jitter(saturation=(0, 0))')
  images = [_image(c=1), _image(c=3, seed=4)]
  unknown_shape = tf.TensorSpec([None, None, None], tf.float32)
  ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=unknown_shape)
  out = [x['image'].numpy() for x in ds.map(lambda image: op({'image': image}, SEED))]
  grey_of = lambda rgb: np.repeat(_luma(rgb)[..., None], 3, -1)
  np.testing.assert_allclose(out[0], grey_of(np.repeat(images[0], 3, -1)), atol=1e-6)
  np.testing.assert_allclose(out[1], grey_of(images[1]), atol=1e-6)
  bad = tf.data.Dataset.from_generator(lambda: iter([_image(c=2)]), output_signature=unknown_shape)
  with pytest.raises(tf.errors.InvalidArgumentError, match='1 or 3 channels'):
    next(iter(bad.map(lambda image: ops.parse('to_rgb')({'image': image}, SEED))))


@pytest.mark.parametrize(
    'spec, message',
    [
        ('color_jitter(brightness=-0.1)', r'brightness must be in \[0, inf\]'),
        ('color_jitter(hue=0.6)', r'hue must be in \[0, 0.5\]'),
        ('color_jitter(hue=(0.2, 0.6))', r'hue range .* -0.5 <= min <= max <= 0.5'),
        ('pca_lighting(-1)', 'sigma must be >= 0'),
        ('pca_lighting(eigval=(1, 2), eigvec=((1, 0, 0),))', 'eigval must be \\[C\\]'),
    ],
)
def test_bad_arguments_are_explained(spec, message):
  with pytest.raises(ValueError, match=message):
    ops.parse(spec)
