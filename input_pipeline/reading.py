"""Reading a tfds split as (index, example) pairs with the image still encoded."""

import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import datasets


def split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # split info absent (e.g. under tfds.testing.mock_data)
    cardinality = int(builder.as_dataset(split=split).cardinality())
    if cardinality < 0:
      raise datasets.DatasetError(
          f'Cannot tell the size of split {split!r} of {builder.name}.'
      ) from None
    return cardinality


def process_split(split: str, process_index: int, process_count: int) -> str:
  """This process's share of `split` (hosts of a multi-host job read disjoint parts)."""
  return split if process_count == 1 else tfds.even_splits(split, n=process_count)[process_index]


def image_and_label_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
  """The image and class-label features: 'image'/'label', or the dataset's supervised keys."""
  features = builder.info.features
  keys = ('image', 'label')
  if not all(k in features for k in keys) and builder.info.supervised_keys:
    keys = tuple(builder.info.supervised_keys)[:2]
  image_key, label_key = keys
  if (
      image_key not in features
      or not isinstance(features[image_key], tfds.features.Image)
      or label_key not in features
      or not hasattr(features[label_key], 'num_classes')
  ):
    raise datasets.DatasetError(
        f'{builder.name!r} is not an image classification dataset: the trainer needs an image '
        f'feature and a class label, and found {sorted(features)} (supervised keys '
        f'{builder.info.supervised_keys}).'
    )
  return image_key, label_key


def read(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shuffle_files: bool = False,
    file_seed: int = 0,
) -> tf.data.Dataset:
  """(index, {'image': encoded bytes, 'label': int32}) pairs of `split`, in file order.

  Decoding is left to the preprocessing ops, so that a fused decode-and-crop can skip most
  of a JPEG and resumed runs skip examples before any decoding work.
  """
  image_key, label_key = image_and_label_keys(builder)
  read_config = tfds.ReadConfig(shuffle_seed=file_seed, try_autocache=False)
  ds = builder.as_dataset(
      split=split,
      shuffle_files=shuffle_files,
      read_config=read_config,
      decoders={image_key: tfds.decode.SkipDecoding()},
  )
  to_example = lambda f: {'image': f[image_key], 'label': tf.cast(f[label_key], tf.int32)}
  return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).enumerate()
