"""Preprocessing ops parsed from config strings: geometry, decoding, views, cutout, mixup."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import ops, stats
from input_pipeline.ops import decode, geometry

SEED = tf.constant([3, 4], tf.int64)
RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)


def _features(h=28, w=28, c=1):
  image = tf.reshape(tf.range(h * w * c, dtype=tf.float32) / (h * w * c), (h, w, c))
  return {'image': image, 'label': tf.constant(1)}


def _seed(i):
  return tf.constant([7, i], tf.int64)


# One example string per registered op: each must give the same result eagerly and in tf.data.
SAMPLES = {
    'decode': ('decode(channels=3)', 'png'),
    'decode_and_random_resized_crop': ('decode_and_random_resized_crop(24)', 'jpeg'),
    'resize': ('resize((20, 30))', 'float'),
    'resize_shorter': ('resize_shorter(32)', 'float'),
    'ensure_min_size': ('ensure_min_size(64)', 'float'),
    'random_resize_shorter': ('random_resize_shorter(30, 60)', 'float'),
    'pad': ("pad(3, mode='reflect')", 'float'),
    'random_crop': ('random_crop(24, pad=4)', 'float'),
    'center_crop': ('center_crop(24)', 'float'),
    'random_resized_crop': ('random_resized_crop(24, scale=(0.2, 1.0))', 'float'),
    'flip_lr': ('flip_lr', 'float'),
    'ten_crop': ('ten_crop(24, scales=(32, 40))', 'float'),
    'cutout': ('cutout(12)', 'float'),
    'normalize': ("normalize('cifar10')", 'float'),
    'to_rgb': ('to_rgb', 'float'),
    'pca_lighting': ("pca_lighting(0.1, 'imagenet')", 'float'),
    'color_jitter': ('color_jitter(0.4, 0.4, 0.4, 0.1)', 'float'),
    'mixup': ('mixup(0.2)', 'batch'),
    'subtract_pixel_mean': ("subtract_pixel_mean('{stats}')", 'small'),
    'zca': ("zca('{stats}')", 'small'),
}


@pytest.fixture(scope='module')
def stats_file(tmp_path_factory):
  """Statistics of random 8×8 RGB images, for the ops that read a file."""
  images = RNG.uniform(size=(400, 8, 8, 3)).astype(np.float32)
  return stats.save(stats.compute([images]), str(tmp_path_factory.mktemp('stats')))


def _input(kind):
  if kind == 'png':
    return {'image': tf.io.encode_png(PHOTO[..., :1]), 'label': tf.constant(1)}
  if kind == 'jpeg':
    return {'image': tf.io.encode_jpeg(PHOTO), 'label': tf.constant(1)}
  if kind == 'small':
    return {'image': tf.constant(PHOTO[:8, :8] / 255.0, tf.float32), 'label': tf.constant(1)}
  if kind == 'batch':
    return {
        'image': (
            tf.constant(PHOTO[None, :8, :8] / 255.0 * np.ones((4, 1, 1, 1)), tf.float32)
            * tf.reshape(tf.range(4.0), (4, 1, 1, 1))
        ),
        'label': tf.range(4),
    }
  return {'image': tf.constant(PHOTO / 255.0, tf.float32), 'label': tf.constant(1)}


def test_every_registered_op_has_a_sample():
  assert set(SAMPLES) == set(ops.list_ops())


@pytest.mark.parametrize('name', sorted(SAMPLES))
def test_op_gives_the_same_result_eagerly_and_in_tf_data(name, stats_file):
  spec, kind = SAMPLES[name]
  preprocess = ops.parse(spec.format(stats=stats_file))
  fn = preprocess.batch_fn or preprocess.example_fn
  features = _input(kind)
  for i in range(3):
    eager = fn(features, _seed(i))
    graph = next(iter(tf.data.Dataset.from_tensors(features).map(lambda f, i=i: fn(f, _seed(i)))))
    assert set(eager) == set(graph)
    for key in eager:
      np.testing.assert_array_equal(eager[key], graph[key], err_msg=f'{spec}: {key}')


def test_random_ops_depend_on_the_seed_and_only_on_it():
  for name, (spec, kind) in SAMPLES.items():
    if name in (
        'decode',
        'resize',
        'resize_shorter',
        'ensure_min_size',
        'pad',
        'center_crop',
        'ten_crop',
        'normalize',
        'to_rgb',
        'subtract_pixel_mean',
        'zca',
    ):
      continue
    preprocess = ops.parse(spec)
    fn = preprocess.batch_fn or preprocess.example_fn
    outputs = [np.asarray(fn(_input(kind), _seed(i))['image']) for i in (0, 0, 1, 2, 3)]
    np.testing.assert_array_equal(outputs[0], outputs[1], err_msg=spec)
    assert any(
        o.shape != outputs[0].shape or not np.array_equal(o, outputs[0]) for o in outputs[2:]
    ), spec


def test_empty_spec_is_identity():
  out = ops.parse('')(_features(), SEED)
  np.testing.assert_array_equal(out['image'], _features()['image'])


# --- Geometry -----------------------------------------------------------------------------------


def test_random_crop_with_padding_shifts_the_image():
  crops = [ops.parse('random_crop(28, pad=2)')(_features(), _seed(i))['image'] for i in range(40)]
  assert all(c.shape == (28, 28, 1) for c in crops)
  assert len({np.asarray(c).tobytes() for c in crops}) > 10  # 25 offsets
  # Every crop is the padded image at some offset.
  padded = np.pad(np.asarray(_features()['image']), [(2, 2), (2, 2), (0, 0)])
  for c in crops[:5]:
    assert any(
        np.array_equal(c, padded[y : y + 28, x : x + 28]) for y in range(5) for x in range(5)
    )


def test_pad_modes():
  row = tf.tile(tf.reshape(tf.constant([1.0, 2.0, 3.0]), (1, 3, 1)), (3, 1, 1))
  out = lambda mode: np.asarray(ops.parse(f"pad(2, mode='{mode}')")({'image': row}, SEED)['image'])
  np.testing.assert_array_equal(out('reflect')[2, :, 0], [3, 2, 1, 2, 3, 2, 1])
  np.testing.assert_array_equal(out('constant')[2, :, 0], [0, 0, 1, 2, 3, 0, 0])
  assert out('constant').shape == (7, 7, 1)


def test_center_crop_and_resize_shapes():
  out = ops.parse('center_crop(20)|resize(32)')(_features(), SEED)['image']
  assert out.shape == (32, 32, 1)
  middle = ops.parse('center_crop(2)')(_features(4, 4), SEED)['image']
  np.testing.assert_array_equal(np.asarray(middle)[..., 0] * 16, [[5, 6], [9, 10]])


def test_crop_larger_than_the_image_is_refused():
  with pytest.raises(tf.errors.InvalidArgumentError, match='smaller than the 30x30 crop'):
    ops.parse('center_crop(30)')(_features(), SEED)


def test_resize_shorter_keeps_the_aspect_ratio():
  image = {'image': tf.zeros((30, 45, 3))}
  assert ops.parse('resize_shorter(20)')(image, SEED)['image'].shape == (20, 30, 3)
  assert ops.parse('resize_shorter(60)')(image, SEED)['image'].shape == (60, 90, 3)
  assert ops.parse('ensure_min_size(60)')(image, SEED)['image'].shape == (60, 90, 3)
  assert ops.parse('ensure_min_size(20)')(image, SEED)['image'].shape == (30, 45, 3)


def test_random_resize_shorter_draws_every_scale_in_its_range():
  image = {'image': tf.zeros((10, 20, 1))}
  sizes = [
      ops.parse('random_resize_shorter(8, 12)')(image, _seed(i))['image'].shape for i in range(60)
  ]
  assert {s[0] for s in sizes} == {8, 9, 10, 11, 12}
  assert all(s[1] == 2 * s[0] for s in sizes)


def test_random_resized_crop_windows_stay_in_their_area_and_aspect_ranges():
  shape = tf.constant([300, 400, 3])
  areas, ratios = [], []
  for i in range(300):
    (y, x), (h, w) = [
        np.asarray(t) for t in geometry.sample_window(shape, _seed(i), (0.08, 1.0), (3 / 4, 4 / 3))
    ]
    assert y >= 0 and y + h <= 300 and x >= 0 and x + w <= 400
    areas.append(h * w / (300 * 400))
    ratios.append(w / h)
  assert min(areas) >= 0.08 - 0.01 and max(areas) <= 1.0
  assert min(ratios) >= 0.75 - 0.02 and max(ratios) <= 4 / 3 + 0.02
  assert min(areas) < 0.15 and max(areas) > 0.85  # the whole range is drawn


@pytest.mark.parametrize('encode', [tf.io.encode_jpeg, tf.io.encode_png, tf.constant])
def test_fused_decode_and_crop_equals_decode_then_crop(encode):
  data = {'image': encode(PHOTO)}
  for i in range(4):
    fused = decode.decode_and_random_resized_crop(24)(data, _seed(i))['image']
    apart = geometry.random_resized_crop(24)(decode.decode()(data, _seed(i)), _seed(i))['image']
    assert fused.shape == (24, 24, 3)
    if encode is tf.io.encode_jpeg:  # decoding a window upsamples chroma at its edges alone
      assert np.mean(np.abs(fused - apart)) < 0.01
    else:
      np.testing.assert_array_equal(fused, apart)


def test_decode_gives_floats_in_unit_range_and_converts_grey_to_rgb():
  grey = PHOTO[..., :1]
  out = ops.parse('decode')({'image': tf.io.encode_png(grey)}, SEED)['image']
  np.testing.assert_allclose(out, grey / 255.0, atol=1e-6)
  rgb = ops.parse('decode(channels=3)')({'image': tf.io.encode_png(grey)}, SEED)['image']
  np.testing.assert_array_equal(rgb, np.repeat(out, 3, axis=-1))
  # An image decoded before caching (uint8) gives the same floats.
  cached = ops.parse('decode(channels=3)')({'image': tf.constant(grey)}, SEED)['image']
  np.testing.assert_array_equal(cached, rgb)


# --- Views ----------------------------------------------------------------------------------------


def test_ten_crop_is_the_corners_and_centre_each_mirrored():
  image = np.arange(6 * 7, dtype=np.float32).reshape(6, 7, 1)
  views = np.asarray(ops.parse('ten_crop(3)')({'image': tf.constant(image)}, SEED)['image'])
  expected = [image[1:4, 2:5], image[:3, :3], image[:3, 4:], image[3:, :3], image[3:, 4:]]
  expected += [e[:, ::-1] for e in expected]
  np.testing.assert_array_equal(views, np.stack(expected))


def test_multi_scale_views():
  image = {'image': tf.zeros((20, 30, 3))}
  assert ops.parse('ten_crop(8, scales=(10, 16, 20))')(image, SEED)['image'].shape == (30, 8, 8, 3)
  assert ops.parse('ten_crop(8, corners=False)')(image, SEED)['image'].shape == (2, 8, 8, 3)
  assert ops.parse('ten_crop(8, flip=False)')(image, SEED)['image'].shape == (5, 8, 8, 3)


# --- Cutout and mixup ----------------------------------------------------------------------------


def test_cutout_masks_one_square_that_can_sit_anywhere():
  covered = np.zeros((16, 16), bool)
  for i in range(200):
    image = np.asarray(ops.parse('cutout(6)')({'image': tf.ones((16, 16, 2))}, _seed(i))['image'])
    hole = image[..., 0] == 0
    np.testing.assert_array_equal(hole, image[..., 1] == 0)  # all channels
    rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
    assert hole.sum() == len(rows) * len(cols) and len(rows) <= 6 and len(cols) <= 6
    assert rows.size and np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    covered |= hole
  assert covered.all()


def test_mixup_mixes_images_and_labels_with_a_beta_weight():
  alpha = 0.2
  mixup = ops.parse(f'mixup({alpha})').batch_fn
  batch = {'image': tf.reshape(tf.range(8.0), (8, 1, 1, 1)), 'label': tf.range(8) * 10}
  weights = []
  for i in range(600):
    out = {k: np.asarray(v) for k, v in mixup(batch, _seed(i)).items()}
    w = out['mix_weight']
    assert np.all(w == w[0]) and 0 <= w[0] <= 1
    partner = out['mix_label'] // 10
    assert sorted(partner) == list(range(8))  # a permutation of the batch
    np.testing.assert_allclose(
        out['image'].ravel(), (1 - w[0]) * np.arange(8) + w[0] * partner, rtol=1e-5, atol=1e-5
    )
    weights.append(w[0])
  var = 1 / (4 * (2 * alpha + 1))  # Beta(α, α): mean 1/2
  assert np.mean(weights) == pytest.approx(0.5, abs=4 * np.sqrt(var / 600))
  assert np.var(weights) == pytest.approx(var, rel=0.1)


# --- Parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'spec, message',
    [
        ('random_crops(28)', "Unknown preprocessing op 'random_crops'.*Did you mean random_crop"),
        ('random_crop(28', 'Cannot parse'),
        ('random_crop(28, padding=2)', 'Bad arguments'),
        ('normalize(x)', 'Cannot parse'),
        ('flip_lr|decode', 'must be the first op'),
        ('mixup(0.2)|flip_lr', 'must come before the batch op'),
    ],
)
def test_bad_specs_are_explained(spec, message):
  with pytest.raises(ValueError, match=message):
    ops.parse(spec)


def test_decode_is_added_in_front_and_stats_see_the_ops_before_them():
  assert ops.with_decode('flip_lr', ['to_rgb']) == 'decode|to_rgb|flip_lr'
  assert ops.with_decode('decode_and_random_resized_crop(8)|flip_lr') == (
      'decode_and_random_resized_crop(8)|flip_lr'
  )
  assert ops.before_stats("resize_shorter(256)|center_crop(224)|normalize('imagenet')") == (
      'resize_shorter(256)|center_crop(224)'
  )
  assert ops.before_stats("resize_shorter(256)|ten_crop(224)|normalize('imagenet')") == (
      'resize_shorter(256)'
  )
