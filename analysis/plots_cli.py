"""The picture modes of main.py, one function each: workdir(s) in, the written PNG's path out."""

import os
from collections.abc import Sequence

import numpy as np

from analysis import pictures, summary
from analysis.workdirs import Trained, load_trained, run_facts
from common.errors import ConfigError
from train_lib import plots, reporting


def is_conv(layer: summary.Layer) -> bool:
  """A summary row that convolves (a flax Conv module, or a conv written inline)."""
  return any(op.eqn.primitive.name == 'conv_general_dilated' for op in layer.ops)


def _conv_rows(trained: Trained) -> list[summary.Layer]:
  rows = summary.summarize(trained.model, trained.image_shape, trained.variables).layers
  return [layer for layer in rows if is_conv(layer)]


def default_layers(conv_rows: Sequence[summary.Layer]) -> list[str]:
  """The first, a middle and the last convolution: from edges and textures up to parts."""
  picks = [conv_rows[0], conv_rows[len(conv_rows) // 2], conv_rows[-1]] if conv_rows else []
  return list(dict.fromkeys(layer.name for layer in picks))


def _run_title(workdir: str, trained: Trained) -> str:
  label = pictures.run_label(os.path.basename(os.path.abspath(workdir)), trained.config.model.name)
  return f'{label}, step {trained.step}'


def write_filters(workdir: str, output: str | None = None) -> str:
  """The first convolution's filters of `workdir`'s newest checkpoint, into `output`
  (default `<workdir>/filters.png`)."""
  trained = load_trained(workdir)
  order = ['/'.join(layer.path) for layer in _conv_rows(trained)]
  name, kernel = pictures.first_conv_kernel(trained.variables['params'], order)
  h, w, i, o = kernel.shape
  title = f'{_run_title(workdir, trained)} | {name}: {o} filters {h}x{w}x{i}'
  return pictures.plot_first_layer_filters(
      kernel, output or os.path.join(workdir, 'filters.png'), title
  )


def write_feature_maps(
    workdir: str,
    image: str | None = None,
    layers: Sequence[str] | None = None,
    output: str | None = None,
    strongest: bool = False,
) -> str:
  """Feature maps of `layers` (summary row names; default `default_layers`) for the image file
  `image` (default: the first eval example), into `output` (default
  `<workdir>/feature_maps.png`)."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow, for decoding)

  trained = load_trained(workdir)
  names = list(layers) if layers else default_layers(_conv_rows(trained))
  if not names:
    raise ConfigError(
        f'{trained.config.model.name} has no convolution: name the layers to show '
        '(summary row names, e.g. from analysis.summary.summarize).'
    )
  model_image, display = input_pipeline.model_input(
      trained.config.dataset, image, trained.image_shape
  )
  outputs = summary.layer_outputs(trained.model, trained.variables, model_image[None], names)
  maps = {name: np.asarray(value)[0] for name, value in outputs.items()}
  which = os.path.basename(image) if image else 'first eval example'
  return pictures.plot_feature_maps(
      display,
      maps,
      output or os.path.join(workdir, 'feature_maps.png'),
      strongest=strongest,
      title=f'{_run_title(workdir, trained)} | {which}',
  )


def write_curves(workdir: str, output: str | None = None) -> str:
  """Loss, top-1 and learning rate against steps from `<workdir>/metrics.jsonl`, into `output`
  (default `<workdir>/curves.png`, which training also refreshes)."""
  if not os.path.exists(os.path.join(workdir, reporting.METRICS_FILE)):
    raise ConfigError(f'{workdir} has no {reporting.METRICS_FILE}: train into it first.')
  path = output or os.path.join(workdir, 'curves.png')
  plots.plot_training_curves(workdir, path)
  return path


def write_comparison(workdirs: Sequence[str], output: str | None = None) -> str:
  """Eval top-1 against parameters and MACs of the runs in `workdirs`, into `output`; one
  workdir may leave it out (`<workdir>/comparison.png`), several may not (whose would it be?)."""
  if not workdirs:
    raise ConfigError('Name the workdirs to compare (--workdirs=runs/a,runs/b).')
  if output is None:
    if len(workdirs) > 1:
      raise ConfigError(
          'A comparison of several workdirs belongs to none of them: say where to '
          'write it with --output=<path>.png.'
      )
    output = os.path.join(workdirs[0], 'comparison.png')
  return pictures.plot_comparison([run_facts(w) for w in workdirs], output)
