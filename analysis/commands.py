"""What `main.py --mode=summary` runs: pick the model and its input, summarise, render."""

import flax.linen as nn
import ml_collections

import models
from analysis import report, summary
from common import files
from common.errors import ConfigError


def model_and_input(
    config: ml_collections.ConfigDict | None,
    model_name: str | None,
    image_size: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, tuple[int, int, int]]:
  """The model and (H, W, C) input that a config trains, or a registry model on its native
  input; explicit sizes override either."""
  if (config is None) == (model_name is None):
    raise ConfigError(
        'Give --model=<name> (its native input, e.g. 224×224×3 and 1000 classes '
        'for ImageNet models) or --config=configs/<experiment>.py, not both.'
    )
  if config is not None:
    import input_pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow, for the shapes)

    (height, width, depth), classes = input_pipeline.input_signature(config.dataset)
    model = models.from_config(
        config.model, num_classes or classes, precision=config.get('precision', 'float32')
    )
  else:
    native = models.native_input(model_name)
    height = width = native.image_size
    depth, classes = native.channels, native.num_classes
    model = models.create_model(model_name, num_classes=num_classes or classes)
  return model, (image_size or height, image_size or width, channels or depth)


def summary_text(
    config: ml_collections.ConfigDict | None = None,
    model_name: str | None = None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    num_classes: int | None = None,
    fmt: str = 'table',
    output: str | None = None,
) -> str:
  """The summary of a config's or a registry model, as `fmt` (table, markdown or json); also
  written to the file `output` if given."""
  if fmt not in report.FORMATS:
    raise ConfigError(f'Unknown format {fmt!r}; choose one of {", ".join(report.FORMATS)}.')
  model, input_shape = model_and_input(config, model_name, image_size, channels, num_classes)
  name = config.model.name if config is not None else model_name
  text = report.render(summary.summarize(model, input_shape, name=name, cross_check=True), fmt)
  if output:
    files.write_text_atomic(output, text + '\n')
  return text
