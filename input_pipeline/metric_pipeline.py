"""Metric-learning batches (pairs, triplets or P×K) from any labelled dataset.

The training split's encoded images and labels are held in memory (metric learning is for data
with many classes and few examples each); held-out classes are removed from it. Each step's
examples come from `sampling.global_batch(seed, step)`, and each example's augmentation draws
from (that step's seed, its position in the global batch), so batches are a pure function of
(seed, step), as in the classification pipeline. Evaluation reads the whole eval split, held-out
classes included, exactly as classification does.
"""

from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from input_pipeline import reading, sampling
from input_pipeline.pipeline import Batch, InputPipeline, deterministic_options, explain_size_errors


class MetricPipeline(InputPipeline):
  """Training batches of `rows` pairs, triplets or P×K images; eval batches as classification.

  Train batches: 'image' [rows, n, H, W, C] and 'label' [rows, n] for pairs (n = 2) and
  triplets (n = 3); [rows, H, W, C] and [rows] for P×K ('classes'); 'mask' [rows].
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      *,
      sampling_name: str,
      examples_per_class: int,
      global_batch_size: int,
      eval_batch_size: int,
      seed: int,
      process_index: int = 0,
      process_count: int = 1,
  ):
    super().__init__(
        config,
        global_batch_size=global_batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    if self._eval_preprocess.views:
      raise ConfigError(
          'Metric learning embeds one view per eval image: remove ten_crop from '
          'dataset.eval_preprocess.'
      )
    if self._train_preprocess.batch_fn is not None:
      raise ConfigError('Metric learning takes no batch op (mixup) in dataset.train_preprocess.')
    if sampling_name not in sampling.ROW_SIZE:
      raise ConfigError(
          f'Unknown metric.sampling {sampling_name!r}; choose one of '
          f'{", ".join(sampling.ROW_SIZE)}.'
      )
    self._sampling, self._k = sampling_name, examples_per_class
    self._rows, self._global_rows = self._batch, global_batch_size
    k = examples_per_class
    if sampling_name == 'classes' and (k < 2 or global_batch_size % k):
      raise ConfigError(
          f'A P×K batch takes metric.examples_per_class ≥ 2 that divides batch_size; got K={k} '
          f'and batch_size={global_batch_size}.'
      )
    holdout = _check_holdout(config.holdout_classes, self.num_classes)
    encoded, labels = _read_split(self._builder, config.train_split or self.spec.train_split)
    present = sorted(set(np.unique(labels).tolist()))
    self.seen_classes: tuple[int, ...] = tuple(c for c in present if c not in holdout)
    self._groups = sampling.group_by_class(labels, self.seen_classes)
    sampling.check_groups(
        self._groups, self.seen_classes, sampling_name, global_batch_size // max(k, 1), k
    )
    self.num_train_examples = sum(len(g) for g in self._groups)
    self.images_per_step = global_batch_size * sampling.ROW_SIZE[sampling_name]
    self.steps_per_epoch = max(self.num_train_examples // self.images_per_step, 1)
    self.eval_labels = _read_split(self._builder, config.eval_split or self.spec.eval_split)[1]
    self._encoded = tf.constant(encoded)
    self._labels = tf.constant(labels, tf.int32)

  def _local_rows(self, step: np.int64) -> np.ndarray:
    """[rows of this process × n, 3]: (example index, step seed, position in the global batch)."""
    step = int(step)
    rows = sampling.global_batch(
        self._seed, step, self._groups, self._sampling, self._global_rows, self._k
    )
    n = rows.shape[1]
    first = self._process_index * self._rows
    local = rows[first : first + self._rows].reshape(-1)
    step_seed = int(sampling.step_rng(self._seed, step).integers(2**62))
    positions = first * n + np.arange(local.size)
    return np.stack([local, np.full_like(local, step_seed), positions], axis=1).astype(np.int64)

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    """Endless training batches from global step `start_step` on."""
    n = sampling.ROW_SIZE[self._sampling]

    def rows_of(step):
      rows = tf.numpy_function(self._local_rows, [step], tf.int64, stateful=False)
      return tf.reshape(rows, [self._rows * n, 3])

    def example(row):
      features = {
          'image': tf.gather(self._encoded, row[0]),
          'label': tf.gather(self._labels, row[0]),
      }
      return self._train_preprocess(features, row[1:])

    def shape_batch(batch):
      image, label = batch['image'], batch['label']
      if n > 1:
        image = tf.reshape(image, tf.concat([[self._rows, n], tf.shape(image)[1:]], 0))
        label = tf.reshape(label, [self._rows, n])
      return {'image': image, 'label': label, 'mask': tf.ones([self._rows], tf.bool)}

    ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    ds = ds.map(rows_of).unbatch()
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self._rows * n, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE).map(
        shape_batch
    )
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(deterministic_options(self._threads))
    yield from explain_size_errors(ds.as_numpy_iterator(), 'train_preprocess')


def _read_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(encoded images as bytes objects [N], int32 labels [N]) of the whole split, in file order."""
  encoded, labels = [], []
  for _, example in reading.read(builder, split).as_numpy_iterator():
    encoded.append(example['image'])
    labels.append(example['label'])
  return np.array(encoded, dtype=object), np.array(labels, np.int32)


def _check_holdout(holdout: Sequence[int], num_classes: int) -> set[int]:
  unknown = sorted(c for c in holdout if not 0 <= c < num_classes)
  if unknown:
    raise ConfigError(
        f'dataset.holdout_classes names {unknown}, but the dataset has classes 0 to '
        f'{num_classes - 1}.'
    )
  return set(holdout)
