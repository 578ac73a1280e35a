"""Preprocessing ops parsed from config strings."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import ops

SEED = tf.constant([3, 4], tf.int64)


def _features(h=28, w=28, c=1):
  image = tf.reshape(tf.range(h * w * c, dtype=tf.float32) / (h * w * c), (h, w, c))
  return {'image': image, 'label': tf.constant(1)}


def test_empty_spec_is_identity():
  out = ops.parse('')(_features(), SEED)
  np.testing.assert_array_equal(out['image'], _features()['image'])


def test_random_crop_with_padding_shifts_the_image():
  crops = [ops.parse('random_crop(28, pad=2)')(_features(), tf.constant([0, i], tf.int64))['image']
           for i in range(20)]
  assert all(c.shape == (28, 28, 1) for c in crops)
  distinct = {np.asarray(c).tobytes() for c in crops}
  assert len(distinct) > 5  # up to 25 offsets
  # Same seed, same crop.
  again = ops.parse('random_crop(28, pad=2)')(_features(), tf.constant([0, 0], tf.int64))['image']
  np.testing.assert_array_equal(crops[0], again)


def test_op_gives_the_same_result_eagerly_and_in_tf_data():
  op = ops.parse("random_crop(24, pad=1)|flip_lr|normalize('mnist')")
  eager = op(_features(), SEED)['image']
  ds = tf.data.Dataset.from_tensors(_features()).map(lambda f: op(f, SEED))
  np.testing.assert_allclose(eager, next(iter(ds))['image'], rtol=0, atol=0)


def test_normalize_uses_registered_statistics():
  out = ops.parse("normalize('mnist')")({'image': tf.fill((2, 2, 1), 0.1307)}, SEED)['image']
  np.testing.assert_allclose(out, 0.0, atol=1e-6)
  out = ops.parse('normalize((0.5, 0.5), (0.25, 0.5))')({'image': tf.ones((1, 1, 2))}, SEED)['image']
  np.testing.assert_allclose(np.asarray(out).ravel(), [2.0, 1.0])


def test_center_crop_and_resize_shapes():
  out = ops.parse('center_crop(20)|resize(32)')(_features(), SEED)['image']
  assert out.shape == (32, 32, 1)
  middle = ops.parse('center_crop(2)')(_features(4, 4), SEED)['image']
  np.testing.assert_array_equal(np.asarray(middle)[..., 0] * 16, [[5, 6], [9, 10]])


@pytest.mark.parametrize('spec, message', [
    ('random_crops(28)', "Unknown preprocessing op 'random_crops'.*Did you mean random_crop"),
    ('random_crop(28', 'Cannot parse'),
    ('random_crop(28, padding=2)', 'Bad arguments'),
    ('normalize(x)', 'Cannot parse'),
])
def test_bad_specs_are_explained(spec, message):
  with pytest.raises(ValueError, match=message):
    ops.parse(spec)
