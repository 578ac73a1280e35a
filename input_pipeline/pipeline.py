"""tfds → tf.data → per-process numpy batches, reproducible to the example.

Training batches are a pure function of (seed, step): epoch e is shuffled with a seed drawn
from (seed, e, process), every example's augmentation draws from (that seed, its index), and
each epoch contributes exactly `steps_per_epoch` batches. A run resumed at step s therefore
sees exactly the batches the uninterrupted run saw, and skips examples before decoding work.
"""

import math
from typing import Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import datasets, ops

Batch = dict[str, np.ndarray]


def _split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # split info absent (e.g. under tfds.testing.mock_data)
    cardinality = int(builder.as_dataset(split=split).cardinality())
    if cardinality < 0:
      raise datasets.DatasetError(f'Cannot tell the size of split {split!r} of {builder.name}.')
    return cardinality


def _process_split(split: str, process_index: int, process_count: int) -> str:
  """This process's share of `split` (hosts of a multi-host job read disjoint parts)."""
  return split if process_count == 1 else tfds.even_splits(split, n=process_count)[process_index]


def _to_example(features: dict) -> dict:
  """Keeps image (float32 in [0, 1]) and label (int32)."""
  if 'image' not in features or 'label' not in features:
    raise datasets.DatasetError(
        f'Expected an image classification dataset with "image" and "label" features, got '
        f'{sorted(features)}.')
  return {'image': tf.image.convert_image_dtype(features['image'], tf.float32),
          'label': tf.cast(features['label'], tf.int32)}


class InputPipeline:
  """Train and eval batches of one process, with the dataset facts the trainer needs."""

  def __init__(self, config: ml_collections.ConfigDict, *, global_batch_size: int,
               eval_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1):
    if global_batch_size % process_count or eval_batch_size % process_count:
      raise ValueError(f'Batch sizes ({global_batch_size}, {eval_batch_size}) must divide evenly '
                       f'over {process_count} processes.')
    self.spec = datasets.get_spec(config.name)
    self._builder = datasets.load_builder(self.spec, config.data_dir or None, config.download)
    features = self._builder.info.features
    if 'label' not in features or not hasattr(features['label'], 'num_classes'):
      raise datasets.DatasetError(f'{config.name!r} has no class label feature; the trainer '
                                  'needs an image classification dataset.')
    self.num_classes: int = features['label'].num_classes
    self._seed, self._process_index, self._process_count = seed, process_index, process_count
    self._batch = global_batch_size // process_count
    self._eval_batch = eval_batch_size // process_count
    self._cache = config.cache
    self._train_preprocess = ops.parse(config.train_preprocess)
    self._eval_preprocess = ops.parse(config.eval_preprocess)

    train_split = config.train_split or self.spec.train_split
    eval_split = config.eval_split or self.spec.eval_split
    self.num_train_examples = _split_size(self._builder, train_split)
    self.num_eval_examples = _split_size(self._builder, eval_split)
    self._train_split = _process_split(train_split, process_index, process_count)
    self._eval_split = _process_split(eval_split, process_index, process_count)
    # Every process runs the same number of steps: the smallest shard sets the pace.
    self.steps_per_epoch = (self.num_train_examples // process_count) // self._batch
    if self.steps_per_epoch == 0:
      raise ValueError(f'batch_size {global_batch_size} is larger than the training split '
                       f'({self.num_train_examples} examples).')
    self.num_eval_batches = math.ceil(
        math.ceil(self.num_eval_examples / process_count) / self._eval_batch)
    self._shuffle_buffer = self.num_train_examples if self._cache else config.shuffle_buffer

    self._train_base = self._read(self._train_split, shuffle_files=False) if self._cache else None
    self._eval_ds = self._make_eval_dataset()
    image_spec = self._make_train_epoch(0, 0).element_spec['image']
    if not image_spec.shape[1:].is_fully_defined():
      raise ValueError(f'Training images have no fixed size ({image_spec.shape}); add '
                       'resize(...) or random_crop(...) to dataset.train_preprocess.')
    self.image_shape: tuple[int, ...] = tuple(image_spec.shape[1:])

  def _read(self, split: str, shuffle_files: bool, file_seed: Optional[int] = None) -> tf.data.Dataset:
    """(index, example) pairs of `split`; cached in memory when configured."""
    read_config = tfds.ReadConfig(shuffle_seed=file_seed, try_autocache=False)
    ds = self._builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
    ds = ds.map(_to_example, num_parallel_calls=tf.data.AUTOTUNE).enumerate()
    return ds.cache() if self._cache else ds

  def _epoch_seed(self, epoch: int) -> int:
    return int(np.random.SeedSequence([self._seed, epoch, self._process_index]).generate_state(1)[0])

  def _make_train_epoch(self, epoch: int, skip_batches: int) -> tf.data.Dataset:
    seed = self._epoch_seed(epoch)
    if self._train_base is not None:
      ds = self._train_base
    else:
      ds = self._read(self._train_split, shuffle_files=True, file_seed=seed)
    ds = ds.shuffle(self._shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.take(self.steps_per_epoch * self._batch).skip(skip_batches * self._batch)

    def preprocess(index, example):
      example = self._train_preprocess(example, tf.stack([tf.constant(seed, tf.int64), index]))
      return {**example, 'mask': tf.constant(True)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(self._batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    """Endless training batches from global step `start_step` on."""
    epoch, skip = divmod(start_step, self.steps_per_epoch)
    while True:
      yield from self._make_train_epoch(epoch, skip).as_numpy_iterator()
      epoch, skip = epoch + 1, 0

  def _make_eval_dataset(self) -> tf.data.Dataset:
    fixed_seed = tf.constant([0, 0], tf.int64)  # eval ops are deterministic
    ds = self._builder.as_dataset(split=self._eval_split, shuffle_files=False)
    ds = ds.map(lambda ex: self._eval_preprocess(_to_example(ex), fixed_seed),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self._eval_batch)
    return (ds.cache() if self._cache else ds).prefetch(tf.data.AUTOTUNE)

  def eval_batches(self) -> Iterator[Batch]:
    """The eval split once, in batches padded to full size; `mask` marks real examples.

    Every process yields `num_eval_batches` batches (all-masked ones at the end where its
    shard is shorter), so multi-host eval steps stay in lockstep.
    """
    count, last = 0, None
    for batch in self._eval_ds.as_numpy_iterator():
      last = pad_batch(batch, self._eval_batch)
      count += 1
      yield last
    if last is None:
      raise datasets.DatasetError(f'The eval split of {self.spec.name} is empty on this process.')
    for _ in range(self.num_eval_batches - count):
      yield {k: np.zeros_like(v) for k, v in last.items()}


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every array of `batch` with zeros to `size` rows and adds a boolean `mask`."""
  n = len(batch['label'])
  padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()}
  padded['mask'] = np.arange(size) < n
  return padded
