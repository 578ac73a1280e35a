"""The dataset registry: names → tfds builders, configurations and splits; statistics; errors."""

import os
from unittest import mock

import pytest
import tensorflow_datasets as tfds

import input_pipeline
from configs import default
from input_pipeline import datasets, downloads, ops

CROP = ('random_resized_crop(32)', 'resize_shorter(36)|center_crop(32)')  # any-size images


def _dataset_config(name, train_preprocess='', eval_preprocess='', **overrides):
  config = default.get_config().dataset
  config.update(
      name=name, train_preprocess=train_preprocess, eval_preprocess=eval_preprocess, **overrides
  )
  return config


def _mocked_pipeline(config, num_examples=12):
  """The pipeline under tfds's mock data, and the (builder, config, split) pairs it read."""
  reads = []
  with tfds.testing.mock_data(num_examples=num_examples):
    mocked_as_dataset = tfds.core.DatasetBuilder.as_dataset

    def recording_as_dataset(builder, *args, split=None, **kwargs):
      reads.append((builder.name, builder.builder_config and builder.builder_config.name, split))
      return mocked_as_dataset(builder, *args, split=split, **kwargs)

    with mock.patch.object(tfds.core.DatasetBuilder, 'as_dataset', recording_as_dataset):
      pipeline = input_pipeline.InputPipeline(
          config, global_batch_size=4, eval_batch_size=4, seed=0
      )
      train_batch = next(pipeline.train_batches(0))
      eval_batch = next(pipeline.eval_batches())
  return pipeline, train_batch, eval_batch, set(reads)


# name, (tfds builder, configuration), (train split, eval split), (train ops, eval ops), image
# shape, classes
# Splits and configurations as tensorflow_datasets 4.9.10's builders define them.
CASES = [
    (
        'mnist',
        ('mnist', None),
        ('train', 'test'),
        ("random_crop(28, pad=4)|flip_lr|normalize('mnist')", "normalize('mnist')"),
        (28, 28, 1),
        10,
    ),
    (
        'cifar10',
        ('cifar10', None),
        ('train', 'test'),
        ("random_crop(32, pad=4)|flip_lr|normalize('cifar10')", "normalize('cifar10')"),
        (32, 32, 3),
        10,
    ),
    ('kmnist', ('kmnist', None), ('train', 'test'), ('', ''), (28, 28, 1), 10),
    (
        'emnist',
        ('emnist', 'balanced'),
        ('train', 'test'),
        ("normalize('emnist')", "normalize('emnist')"),
        (28, 28, 1),
        47,
    ),
    ('emnist/letters', ('emnist', 'letters'), ('train', 'test'), ('', ''), (28, 28, 1), 37),
    (
        'svhn_cropped',
        ('svhn_cropped', None),
        ('train', 'test'),
        ("random_crop(32, pad=2)|normalize('svhn_cropped')", "normalize('svhn')"),
        (32, 32, 3),
        10,
    ),
    (
        'stl10',
        ('stl10', None),
        ('train', 'test'),
        ('random_crop(64)', 'center_crop(64)'),
        (64, 64, 3),
        10,
    ),
    (
        'imagenette',
        ('imagenette', 'full-size-v2'),
        ('train', 'validation'),
        (CROP[0] + "|normalize('imagenette')", CROP[1]),
        (32, 32, 3),
        10,
    ),
    (
        'imagenette/160px-v2',
        ('imagenette', '160px-v2'),
        ('train', 'validation'),
        CROP,
        (32, 32, 3),
        10,
    ),
    ('imagenet2012', ('imagenet2012', None), ('train', 'validation'), CROP, (32, 32, 3), 1000),
]


@pytest.mark.parametrize(
    'name, builder, splits, preprocess, shape, classes', CASES, ids=[c[0] for c in CASES]
)
def test_registered_name_reads_its_builder_and_splits(
    name, builder, splits, preprocess, shape, classes
):
  pipeline, train_batch, eval_batch, reads = _mocked_pipeline(_dataset_config(name, *preprocess))
  assert {(b, c) for b, c, _ in reads} == {builder}
  assert {s for _, _, s in reads} == set(splits)
  assert pipeline.image_shape == shape and pipeline.num_classes == classes
  assert train_batch['image'].shape == (4, *shape) and eval_batch['image'].shape == (4, *shape)
  assert pipeline.num_train_examples == 12 and pipeline.steps_per_epoch == 3


def test_grey_images_become_rgb_for_rgb_models():
  pipeline, train_batch, _, _ = _mocked_pipeline(_dataset_config('kmnist', channels=3))
  assert pipeline.image_shape == (28, 28, 3)
  image = train_batch['image'][0]
  assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_any_tfds_image_classification_name_works():
  spec = input_pipeline.get_spec('oxford_flowers102')
  assert (spec.tfds_name, spec.train_split, spec.eval_split, spec.mean) == (
      'oxford_flowers102',
      'train',
      'test',
      None,
  )
  pipeline, train_batch, _, reads = _mocked_pipeline(_dataset_config('oxford_flowers102', *CROP))
  assert reads == {('oxford_flowers102', None, 'train'), ('oxford_flowers102', None, 'test')}
  assert pipeline.num_classes == 102 and train_batch['image'].shape == (4, 32, 32, 3)


def test_aliases_configurations_and_versions_keep_the_registered_facts():
  assert input_pipeline.get_spec('emnist').tfds_name == 'emnist/balanced'
  letters = input_pipeline.get_spec('emnist/letters:3.1.0')
  assert letters.tfds_name == 'emnist/letters:3.1.0' and letters.mean == (0.172,)
  assert input_pipeline.get_spec('svhn').tfds_name == 'svhn_cropped'
  assert input_pipeline.get_spec('imagenet') == input_pipeline.get_spec('imagenet2012')
  small = input_pipeline.get_spec('imagenette/320px-v2')
  imagenet = input_pipeline.get_spec('imagenet2012')
  assert small.tfds_name == 'imagenette/320px-v2' and small.eval_split == 'validation'
  assert (small.mean, small.std, small.eigval) == (imagenet.mean, imagenet.std, imagenet.eigval)


def test_recorded_statistics_have_one_value_per_image_channel():
  for name in input_pipeline.registered_names():
    spec = input_pipeline.get_spec(name)
    if spec.mean is None:
      continue
    channels = tfds.builder(spec.tfds_name).info.features['image'].shape[-1]
    assert len(spec.mean) == len(spec.std) == channels, name
    assert all(0.1 < m < 0.6 for m in spec.mean) and all(0.1 < s < 0.4 for s in spec.std), name


def test_missing_statistics_point_to_the_dataset_stats_mode():
  for name in ('kmnist', 'stl10', 'oxford_flowers102'):
    with pytest.raises(
        ValueError,
        match=f"(?s)No statistics are recorded for dataset '{name}'.*--mode=dataset_stats",
    ):
      ops.parse(f"normalize('{name}')")


@pytest.mark.parametrize('download', [True, False])
def test_imagenet_says_where_to_put_which_files(tmp_path, monkeypatch, download):
  def must_not_run(*args, **kwargs):
    raise AssertionError('download_and_prepare must not run without the manual files')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', must_not_run)
  manual = os.path.join(str(tmp_path), 'downloads', 'manual') + os.sep
  config = _dataset_config('imagenet', data_dir=str(tmp_path), download=download)
  with pytest.raises(input_pipeline.DatasetError) as error:
    input_pipeline.InputPipeline(config, global_batch_size=8, eval_batch_size=8, seed=0)
  message = str(error.value)
  assert f'into {manual} ' in message
  assert 'ILSVRC2012_img_train.tar is missing; ILSVRC2012_img_val.tar is missing' in message
  assert 'https://image-net.org/download-images' in message


def test_imagenet_flags_a_truncated_archive(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  (manual / 'ILSVRC2012_img_val.tar').write_bytes(b'\0' * 1000)
  with pytest.raises(
      input_pipeline.DatasetError,
      match=r'train\.tar is missing; ILSVRC2012_img_val\.tar has 1,000 bytes '
      r'\(an incomplete download\?\)',
  ):
    datasets.load_builder(input_pipeline.get_spec('imagenet2012'), str(tmp_path), download=True)


def test_unknown_configuration_lists_the_configurations(tmp_path):
  with pytest.raises(
      input_pipeline.DatasetError, match="(?s)cannot open 'imagenette/999px'.*imagenette/320px-v2"
  ):
    datasets.load_builder(input_pipeline.get_spec('imagenette/999px'), str(tmp_path), False)


def test_images_of_different_sizes_need_an_op_that_fixes_the_size():
  config = _dataset_config('imagenette', *CROP)
  config.eval_preprocess = "normalize('imagenette')"
  with pytest.raises(
      ValueError,
      match=r'(?s)different sizes cannot form a batch \(First element '
      r'had shape .*end dataset.eval_preprocess with ops that fix the size',
  ):
    _mocked_pipeline(config)


def test_missing_dataset_with_download_off_says_how_to_prepare(tmp_path):
  with pytest.raises(input_pipeline.DatasetError, match='(?s)download_and_prepare.*offline_digits'):
    input_pipeline.InputPipeline(
        _dataset_config('mnist', data_dir=str(tmp_path), download=False),
        global_batch_size=8,
        eval_batch_size=8,
        seed=0,
    )


def test_failed_download_says_how_to_prepare(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise ConnectionError('Failed to resolve storage.googleapis.com')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  monkeypatch.setattr(downloads, 'download_servers', lambda builder: [])  # no reachability probe
  with pytest.raises(
      input_pipeline.DatasetError,
      match=r"(?s)Could not download.*'cifar10'"
      r'.*ConnectionError.*copy ~/tensorflow_datasets/cifar10',
  ):
    input_pipeline.InputPipeline(
        _dataset_config('cifar10', data_dir=str(tmp_path)),
        global_batch_size=8,
        eval_batch_size=8,
        seed=0,
    )


@pytest.mark.parametrize(
    'typo, meant',
    [
        ('mnsit', 'mnist'),
        ('fashoin_mnist', 'fashion_mnist'),
        ('imagenete', 'imagenette'),
        ('svhn_croped', 'svhn_cropped'),
        ('stl_10', 'stl10'),
        ('kmnsit', 'kmnist'),
    ],
)
def test_misspelt_name_suggests_the_right_one(typo, meant):
  with pytest.raises(input_pipeline.DatasetError, match=f'Did you mean [^?]*\\b{meant}\\b'):
    input_pipeline.get_spec(typo)
