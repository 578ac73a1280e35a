"""tfds → tf.data → per-process numpy batches, reproducible to the example.

Training batches are a pure function of (seed, step): epoch e is shuffled with a seed drawn
from (seed, e, process), every example's augmentation draws from (that seed, its index), each
batch op (mixup) from (that seed, the batch's index in the epoch), and each epoch contributes
exactly `steps_per_epoch` batches. A run resumed at step s therefore sees exactly the batches
the uninterrupted run saw, and skips examples before any decoding work.
"""

import math
import re
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from input_pipeline import datasets, ops, reading
from input_pipeline.ops.decode import decode_uint8

Batch = dict[str, np.ndarray]


def full_preprocess(config: ml_collections.ConfigDict, spec: str) -> str:
  """`spec` with decoding in front, then the grey→RGB and minimum-size ops the config asks for."""
  if config.channels not in (0, 3):
    raise ConfigError(
        f'dataset.channels must be 0 (as stored) or 3 (grey to RGB), not {config.channels}.'
    )
  after_decode = (['to_rgb'] if config.channels == 3 else []) + (
      [f'ensure_min_size({config.min_size})'] if config.min_size else []
  )
  return ops.with_decode(spec, after_decode)


def build_preprocess(config: ml_collections.ConfigDict) -> tuple[ops.Preprocess, ops.Preprocess]:
  """The train and eval preprocessing of the dataset `config`, each op's arguments checked and
  each op where it belongs (views in evaluation, batch ops in training); reads no data."""
  train = ops.parse(full_preprocess(config, config.train_preprocess))
  if train.views:
    raise ConfigError(
        'dataset.train_preprocess stacks evaluation views (ten_crop); those '
        'belong in dataset.eval_preprocess.'
    )
  evaluation = ops.parse(full_preprocess(config, config.eval_preprocess))
  if evaluation.batch_fn is not None:
    raise ConfigError('dataset.eval_preprocess has a batch op (mixup); that is for training only.')
  return train, evaluation


def check_preprocess(config: ml_collections.ConfigDict) -> None:
  """Builds both preprocessing strings of the dataset `config` without reading any data, so
  that a bad op, argument or placement stops the run before any work."""
  build_preprocess(config)
  if config.imagenet_labels:
    imagenet_classes(config.name)


def deterministic_options(threads: int = 0) -> tf.data.Options:
  """Ordered parallel map and batch; `threads` > 0 sizes tf.data's private threadpool."""
  options = tf.data.Options()
  options.deterministic = True  # parallel map and batch keep the order: same seed, same batches
  options.experimental_optimization.map_parallelization = True
  if threads:
    options.threading.private_threadpool_size = threads
  return options


def explain_size_errors(batches: Iterator[Batch], which: str) -> Iterator[Batch]:
  """`batches`, with tf.data's "cannot batch" error turned into what to change in the config."""
  try:
    yield from batches
  except tf.errors.InvalidArgumentError as e:
    if 'Cannot batch tensors with different shapes' not in str(e):
      raise
    shapes = re.search(r'First element had shape \S+ and element \d+ had shape [^ .]+', str(e))
    raise ConfigError(
        f'Images of different sizes cannot form a batch '
        f'({shapes.group(0) if shapes else e.message}): end dataset.{which} with ops '
        'that fix the size, e.g. resize_shorter(256)|center_crop(224).'
    ) from e


class InputPipeline:
  """Train and eval batches of one process, with the dataset facts the trainer needs."""

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      *,
      global_batch_size: int,
      eval_batch_size: int,
      seed: int,
      process_index: int = 0,
      process_count: int = 1,
  ):
    if global_batch_size % process_count or eval_batch_size % process_count:
      raise ConfigError(
          f'Batch sizes ({global_batch_size}, {eval_batch_size}) must divide evenly '
          f'over {process_count} processes.'
      )
    self._train_preprocess, self._eval_preprocess = build_preprocess(config)
    self.spec = datasets.get_spec(config.name)
    self._builder = datasets.load_builder(self.spec, config.data_dir or None, config.download)
    label_key = reading.image_and_label_keys(self._builder)[1]
    self.num_classes: int = self._builder.info.features[label_key].num_classes
    self._imagenet_labels = None
    if config.imagenet_labels:
      self._imagenet_labels = tf.constant(imagenet_classes(config.name), tf.int64)
      self.num_classes = IMAGENET_CLASSES
    self._seed, self._process_index = seed, process_index
    self._batch = global_batch_size // process_count
    self._eval_batch = eval_batch_size // process_count
    self._cache = config.cache
    self._threads = config.get('threads', 0)

    train_split = config.train_split or self.spec.train_split
    eval_split = config.eval_split or self.spec.eval_split
    self.num_train_examples = reading.split_size(self._builder, train_split)
    self.num_eval_examples = reading.split_size(self._builder, eval_split)
    self._train_split = reading.process_split(train_split, process_index, process_count)
    self._eval_split = reading.process_split(eval_split, process_index, process_count)
    # Every process runs the same number of steps: the smallest shard sets the pace.
    self.steps_per_epoch = (self.num_train_examples // process_count) // self._batch
    if self.steps_per_epoch == 0:
      raise ConfigError(
          f'batch_size {global_batch_size} is larger than the training split '
          f'({self.num_train_examples} examples).'
      )
    self.num_eval_batches = math.ceil(
        math.ceil(self.num_eval_examples / process_count) / self._eval_batch
    )
    self._shuffle_buffer = self.num_train_examples if self._cache else config.shuffle_buffer

    self._train_base = (
        self._cached(self._train_split, self._train_preprocess) if self._cache else None
    )
    self._eval_ds = self._make_eval_dataset()
    self.image_shape: tuple[int, ...] = self._first_train_image_shape()

  def _relabel(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """With `imagenet_labels`, each label as the index of its class among ImageNet's."""
    if self._imagenet_labels is None:
      return example
    return {**example, 'label': tf.gather(self._imagenet_labels, example['label'])}

  def _cached(self, split: str, preprocess: ops.Preprocess) -> tf.data.Dataset:
    """The split in memory: decoded to uint8 when the pipeline starts with a plain `decode`."""
    ds = reading.read(self._builder, split)
    if preprocess.names[:1] == ('decode',):
      ds = ds.map(
          lambda i, ex: (i, {**ex, 'image': decode_uint8(ex['image'])}),
          num_parallel_calls=tf.data.AUTOTUNE,
      )
    return ds.cache()

  def _first_train_image_shape(self) -> tuple[int, ...]:
    """The training images' shape, from one preprocessed example (decoded sizes are dynamic)."""
    index, example = next(iter(reading.read(self._builder, self._train_split).take(1)))
    image = self._train_preprocess(example, tf.stack([tf.constant(0, tf.int64), index]))['image']
    return tuple(image.shape)

  def _epoch_seed(self, epoch: int) -> int:
    return int(
        np.random.SeedSequence([self._seed, epoch, self._process_index]).generate_state(1)[0]
    )

  def _make_train_epoch(self, epoch: int, skip_batches: int) -> tf.data.Dataset:
    seed = self._epoch_seed(epoch)
    if self._train_base is not None:
      ds = self._train_base
    else:
      ds = reading.read(self._builder, self._train_split, shuffle_files=True, file_seed=seed)
    ds = ds.shuffle(self._shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.take(self.steps_per_epoch * self._batch).skip(skip_batches * self._batch)
    seed_t = tf.constant(seed, tf.int64)

    def preprocess(index, example):
      example = self._train_preprocess(self._relabel(example), tf.stack([seed_t, index]))
      return {**example, 'mask': tf.constant(True)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self._batch, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    batch_fn = self._train_preprocess.batch_fn
    if batch_fn is not None:  # seeded by the batch's index in the epoch, negated to stay apart
      ds = ds.enumerate(start=skip_batches).map(
          lambda i, batch: batch_fn(batch, tf.stack([seed_t, -1 - i])),
          num_parallel_calls=tf.data.AUTOTUNE,
      )
    return ds.prefetch(tf.data.AUTOTUNE).with_options(deterministic_options(self._threads))

  def train_batches(self, start_step: int = 0) -> Iterator[Batch]:
    """Endless training batches from global step `start_step` on."""
    epoch, skip = divmod(start_step, self.steps_per_epoch)
    while True:
      yield from explain_size_errors(
          self._make_train_epoch(epoch, skip).as_numpy_iterator(), 'train_preprocess'
      )
      epoch, skip = epoch + 1, 0

  def _make_eval_dataset(self) -> tf.data.Dataset:
    fixed_seed = tf.constant([0, 0], tf.int64)  # eval ops are deterministic
    ds = reading.read(self._builder, self._eval_split)
    ds = ds.map(
        lambda index, ex: self._eval_preprocess(self._relabel(ex), fixed_seed),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(self._eval_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return (
        (ds.cache() if self._cache else ds)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(deterministic_options(self._threads))
    )

  def eval_batches(self) -> Iterator[Batch]:
    """The eval split once, in batches padded to full size; `mask` marks real examples.

    Every process yields `num_eval_batches` batches (all-masked ones at the end where its
    shard is shorter), so multi-host eval steps stay in lockstep.
    """
    count, last = 0, None
    for batch in explain_size_errors(self._eval_ds.as_numpy_iterator(), 'eval_preprocess'):
      last = pad_batch(batch, self._eval_batch)
      count += 1
      yield last
    if last is None:
      raise datasets.DatasetError(f'The eval split of {self.spec.name} is empty on this process.')
    for _ in range(self.num_eval_batches - count):
      yield {k: np.zeros_like(v) for k, v in last.items()}


IMAGENET_CLASSES = 1000


def imagenet_classes(name: str) -> tuple[int, ...]:
  """Each class of dataset `name` as its index among ImageNet's 1000 (`dataset.imagenet_labels`:
  an ImageNet network evaluated, or fine-tuned with its classifier kept, on Imagenette)."""
  classes = datasets.get_spec(name).imagenet_classes
  if classes is None:
    having = [n for n in datasets.registered_names() if datasets.get_spec(n).imagenet_classes]
    raise ConfigError(
        f"dataset.imagenet_labels: {name}'s classes are not ImageNet classes (those of "
        f'{", ".join(having)} are). Set it to False to train a classifier of its own classes.'
    )
  return classes


def input_signature(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], int]:
  """(image shape the model sees, number of classes) for `config.dataset`, without reading data.

  The shape is that of a blank image of the stored size (512² where sizes vary) after the
  training preprocessing less its statistics ops, so it needs only the dataset's metadata.
  """
  spec = datasets.get_spec(config.name)
  builder = datasets.builder_info_only(spec, config.data_dir or None)
  image_key, label_key = reading.image_and_label_keys(builder)
  stored = builder.info.features[image_key].shape
  blank = tf.zeros([d or 512 for d in stored], tf.uint8)
  preprocess = ops.parse(full_preprocess(config, ops.without_stats(config.train_preprocess)))
  image = preprocess(
      {'image': blank, 'label': tf.constant(0, tf.int64)}, tf.constant([0, 0], tf.int64)
  )['image']
  num_classes = builder.info.features[label_key].num_classes
  if config.imagenet_labels:
    imagenet_classes(config.name)
    num_classes = IMAGENET_CLASSES
  return tuple(image.shape), num_classes


def stats_images(
    config: ml_collections.ConfigDict, batch_size: int = 500
) -> tuple[Iterator[np.ndarray], dict[str, str]]:
  """Batches of the training split as the eval pipeline's first statistics op would see them
  (its ops before normalize/zca/pca_lighting), in file order; and what they are."""
  spec = datasets.get_spec(config.name)
  builder = datasets.load_builder(spec, config.data_dir or None, config.download)
  split = config.train_split or spec.train_split
  preprocess_text = full_preprocess(config, ops.before_stats(config.eval_preprocess))
  preprocess = ops.parse(preprocess_text)
  seed = tf.constant([0, 0], tf.int64)
  ds = reading.read(builder, split).map(
      lambda i, ex: preprocess(ex, seed)['image'], num_parallel_calls=tf.data.AUTOTUNE
  )
  ds = (
      ds.batch(batch_size)
      .prefetch(tf.data.AUTOTUNE)
      .with_options(deterministic_options(config.get('threads', 0)))
  )
  return ds.as_numpy_iterator(), {
      'dataset': spec.name,
      'split': split,
      'preprocess': preprocess_text,
  }


def pad_batch(batch: Batch, size: int) -> Batch:
  """Pads every array of `batch` with zeros to `size` rows and adds a boolean `mask`."""
  n = len(batch['label'])
  padded = {
      k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()
  }
  padded['mask'] = np.arange(size) < n
  return padded
