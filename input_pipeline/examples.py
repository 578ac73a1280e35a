"""One image as the model sees it at evaluation, and as a person should see it (for pictures);
the names of a dataset's classes."""

import os
from collections.abc import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from common.errors import ConfigError
from input_pipeline import datasets, ops, pipeline, reading
from input_pipeline.ops.decode import decode_uint8


def _file_example(path: str, channels: int) -> ops.Features:
  """The image file at `path`, decoded to `channels` (0: as stored) when that is 1 or 3."""
  if not os.path.isfile(path):
    raise ConfigError(f'No image file {path!r} (--image takes a PNG, JPEG, GIF or BMP file).')
  data = tf.io.read_file(path)
  image = decode_uint8(data, channels) if channels in (1, 3) else data
  return {'image': image, 'label': tf.constant(0, tf.int32)}


def _first_eval_example(config: ml_collections.ConfigDict) -> ops.Features:
  spec = datasets.get_spec(config.name)
  builder = datasets.load_builder(spec, config.data_dir or None, config.download)
  _, example = next(iter(reading.read(builder, config.eval_split or spec.eval_split).take(1)))
  return example


def _first_view(config: ml_collections.ConfigDict, spec: str, example: ops.Features) -> np.ndarray:
  """`example`'s image after the ops `spec` (with the config's decoding), its first view when
  the ops stack several (ten_crop)."""
  preprocess = ops.parse(pipeline.full_preprocess(config, spec))
  image = preprocess(example, tf.constant([0, 0], tf.int64))['image']  # eval's fixed seed
  return np.asarray(image[0] if preprocess.views else image, np.float32)


def model_input(
    config: ml_collections.ConfigDict,
    path: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """(model image, display image), both float32 HWC, of the image file at `path` (PNG, JPEG,
  ...) or, when None, of the first example of `config`'s eval split.

  The model image has gone through `config.eval_preprocess` exactly as evaluation runs it (the
  first view of multi-view evaluation); the display image through the same ops less the
  statistics ones (normalize, zca, ...), so it shows the same pixels in [0, 1]. With
  `image_shape` (the model's input, HWC), a file is decoded to its channel count and a result
  of another shape is refused with what to do.
  """
  channels = image_shape[-1] if image_shape else 0
  example = _file_example(path, channels) if path else _first_eval_example(config)
  image = _first_view(config, config.eval_preprocess, example)
  display = np.clip(_first_view(config, ops.without_stats(config.eval_preprocess), example), 0, 1)
  if image_shape and image.shape != tuple(image_shape):
    raise ConfigError(
        f'{path or "The first eval example"} is {"x".join(map(str, image.shape))} after '
        f'dataset.eval_preprocess ({config.eval_preprocess!r}), but the model takes '
        f'{"x".join(map(str, image_shape))} images: resize the image to that size, or pass one '
        'from the dataset.'
    )
  return image, display


IMAGENET_CLASS_NAMES = os.path.join(os.path.dirname(__file__), 'imagenet_class_names.txt')


def class_names(config: ml_collections.ConfigDict, num_classes: int) -> list[str]:
  """The name of each of a model's `num_classes` outputs on the dataset `config`: ImageNet's
  (torchvision's wording) for its 1000 classes, else tfds's label names, else the indices."""
  spec = datasets.get_spec(config.name)
  if num_classes == pipeline.IMAGENET_CLASSES and (config.imagenet_labels or spec.imagenet_classes):
    with open(IMAGENET_CLASS_NAMES) as f:
      return f.read().splitlines()
  try:
    builder = datasets.builder_info_only(spec, config.data_dir or None)
    names = list(builder.info.features[reading.image_and_label_keys(builder)[1]].names)
  except Exception:  # pylint: disable=broad-except  (no metadata here: indices will do)
    names = []
  return names if len(names) == num_classes else [str(i) for i in range(num_classes)]
