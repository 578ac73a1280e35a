"""Entry point: python main.py --config=configs/<experiment>.py[:arg] --workdir=<dir> [--mode=...].

Any config field can be overridden: --config.optimizer.lr=0.05. Rerunning the same command
resumes from the newest checkpoint in the workdir. Other modes:
  --mode=evaluate --config=... --workdir=<run>
                                    the newest good checkpoint evaluated (with the config's eval
                                    settings, e.g. another eval_split) into evaluation.json
  --mode=list                       the configs with their arguments, the models with their
                                    parameter counts and references
  --mode=dataset_stats --config=... --workdir=<dir>
  --mode=summary --model=resnet50 [--image_size=224 --num_classes=1000 --format=table|markdown|json]
  --mode=filters|feature_maps|curves --workdir=<run> [--output=<png>]
  --mode=compare --workdirs=<run>,<run>,... --output=<png>
  --config=... --workdir=<root> --sweep [--sweep_index=k]
                                    every point of the config's get_sweep() into its own
                                    workdir under <root> (or point k; SLURM_ARRAY_TASK_ID too)
  --mode=sweep_report --workdir=<root>
  --mode=compress --config=configs/compression.py:<method> --workdir=<dir>
                                    distillation, pruning, quantization, binary weights or low
                                    rank applied to config.init_from's run, with a report
  --mode=convert --config=configs/pretrained.py:<model> --weights=<file> --workdir=<dir>
                                    a torchvision, timm or Keras weight file as a workdir
  --mode=predict --workdir=<run> --image=<file>
                                    the top-5 classes of an image, with their probabilities
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from common import command_line
from common.errors import UserError

FLAGS = flags.FLAGS
PICTURE_MODES = ('filters', 'feature_maps', 'curves', 'compare')
MODES = (
    'train',
    'evaluate',
    'compress',
    'convert',
    'predict',
    'sweep_report',
    'list',
    'dataset_stats',
    'summary',
    *PICTURE_MODES,
)
config_flags.DEFINE_config_file(
    'config',
    None,
    'Experiment config: configs/<name>.py, or configs/<name>.py:<arg>.',
    lock_config=True,
)
flags.DEFINE_string('workdir', None, 'Where checkpoints, logs and results go; rerun to resume.')
flags.DEFINE_enum(
    'mode',
    'train',
    MODES,
    "train (with --sweep: every point of the config's get_sweep()); evaluate: the newest "
    'checkpoint of --workdir under the eval settings of --config, into evaluation.json; '
    'sweep_report: the table '
    'and plots of a sweep root; compress: config.compression.method applied to the trained run '
    'config.init_from, with a report; convert: a published weight file (--weights) into a '
    'workdir; predict: the top-5 classes of --image; list: configs, their arguments and the '
    'models; '
    'dataset_stats: the '
    "training split's mean, std, RGB covariance and its eigenvectors, per-pixel "
    'mean and ZCA matrix, into <workdir>/dataset_stats.npz; summary: per-layer '
    'shapes, neurons, parameters, MACs and receptive fields; filters / '
    'feature_maps / curves: PNGs of a trained workdir; compare: accuracy against '
    'parameters and MACs of several workdirs.',
)
flags.DEFINE_bool(
    'sweep', False, "train: run every point of the config's get_sweep() under --workdir."
)
flags.DEFINE_integer(
    'sweep_index',
    None,
    'train --sweep: run point k alone (default: $SLURM_ARRAY_TASK_ID when set, else all).',
)
flags.DEFINE_string('model', None, 'summary: a registry model name (instead of --config).')
flags.DEFINE_integer(
    'image_size',
    None,
    "summary: input height and width (default: the model's native input, or the config's).",
)
flags.DEFINE_integer('channels', None, 'summary: input channels (default: native or config).')
flags.DEFINE_integer('num_classes', None, 'summary: classes (default: native or config).')
flags.DEFINE_enum('format', 'table', ['table', 'markdown', 'json'], 'summary: output format.')
flags.DEFINE_string(
    'output',
    None,
    'Where a picture (or the summary) is written; pictures default to <workdir>/<mode>.png.',
)
flags.DEFINE_string(
    'image',
    None,
    'predict, feature_maps: an image file (feature_maps default: the first eval one).',
)
flags.DEFINE_string(
    'weights',
    None,
    'convert: a torchvision/timm/Keras weight file (.safetensors, .h5, .keras, .npz; .pth with '
    'torch installed).',
)
flags.DEFINE_list(
    'layers',
    None,
    'feature_maps: summary layer names (default: the first, a middle and the last convolution).',
)
flags.DEFINE_list('workdirs', None, 'compare: the runs to compare.')


def _check_flags() -> None:
  """Refuses a mode without what it needs, before anything is imported or read."""
  mode, example = FLAGS.mode, ' (e.g. --config=configs/lenet5_mnist.py)'
  if mode in ('train', 'evaluate', 'compress', 'convert', 'dataset_stats') and FLAGS.config is None:
    raise UserError(f'--mode={mode} needs --config{example}.')
  if mode == 'convert' and not FLAGS.weights:
    raise UserError(
        "--mode=convert needs --weights=<file>, the reference's weights (e.g. "
        'resnet50-0676ba61.pth, or its .safetensors).'
    )
  if mode == 'predict' and not FLAGS.image:
    raise UserError('--mode=predict needs --image=<file> (a PNG, JPEG, GIF or BMP image).')
  if mode == 'summary' and (FLAGS.config is None) == (FLAGS.model is None):
    raise UserError(
        '--mode=summary takes --model=<name> (e.g. resnet50) or --config=..., one of them.'
    )
  if mode == 'compare' and not FLAGS.workdirs:
    raise UserError('--mode=compare needs --workdirs=<run>,<run>,...')
  if (FLAGS.sweep or FLAGS.sweep_index is not None) and mode != 'train':
    raise UserError('--sweep and --sweep_index go with --mode=train.')
  if FLAGS.sweep_index is not None and not FLAGS.sweep:
    raise UserError('--sweep_index=k picks a point of a sweep: add --sweep.')
  if (
      mode
      in (
          'train',
          'evaluate',
          'compress',
          'convert',
          'predict',
          'sweep_report',
          'dataset_stats',
          'filters',
          'feature_maps',
          'curves',
      )
      and not FLAGS.workdir
  ):
    raise UserError(f'--mode={mode} needs --workdir, e.g. --workdir=runs/lenet5')


def _listing() -> str:
  """--mode=list: every config with its arguments, every model with its count and reference."""
  # pylint: disable=import-outside-toplevel
  import configs
  import models

  lines = [
      'Configs (--config=configs/<file>.py:<variant>[,<dataset>]; the first of each is the '
      'default):'
  ]
  for name, (variants, datasets) in configs.arguments().items():
    lines.append(
        f'  {name:<24} {" ".join(variants) or "(no argument)"}'
        + (f'  |  datasets: {" ".join(datasets)}' if datasets else '')
    )
  lines += ['', 'Models (parameters on the native input, and the implementation followed):']
  for name in models.list_models():
    entry = models.entry(name)
    size, channels, classes = entry.native_input
    lines.append(
        f'  {name:<22} {entry.params:>12,}  {size}×{size}×{channels}, {classes:>4} '
        f'classes  {entry.reference}'
    )
  return '\n'.join(lines)


def _summary() -> str:
  from analysis import commands  # pylint: disable=import-outside-toplevel

  return commands.summary_text(
      FLAGS.config,
      FLAGS.model,
      image_size=FLAGS.image_size,
      channels=FLAGS.channels,
      num_classes=FLAGS.num_classes,
      fmt=FLAGS.format,
      output=FLAGS.output,
  )


def _picture() -> str:
  from analysis import plots_cli  # pylint: disable=import-outside-toplevel

  if FLAGS.mode == 'filters':
    return plots_cli.write_filters(FLAGS.workdir, FLAGS.output)
  if FLAGS.mode == 'feature_maps':
    return plots_cli.write_feature_maps(FLAGS.workdir, FLAGS.image, FLAGS.layers, FLAGS.output)
  if FLAGS.mode == 'curves':
    return plots_cli.write_curves(FLAGS.workdir, FLAGS.output)
  return plots_cli.write_comparison(FLAGS.workdirs, FLAGS.output)


def _train() -> None:
  # pylint: disable=import-outside-toplevel
  import functools

  from analysis import summary, sweep_report
  from train_lib import sweeps, train

  train_fn = functools.partial(train.train_and_evaluate, model_facts=summary.model_facts)
  if not FLAGS.sweep:
    train_fn(FLAGS.config, FLAGS.workdir)
    return
  points = sweeps.load_points(config_flags.get_config_filename(FLAGS['config']))
  index = sweeps.sweep_index(FLAGS.sweep_index)
  sweeps.run(FLAGS.config, points, FLAGS.workdir, train_fn, index)
  if index is None:  # array tasks: --mode=sweep_report once they are all done
    print(sweep_report.write_report(FLAGS.workdir))


def _evaluate() -> str:
  import json  # pylint: disable=import-outside-toplevel

  from train_lib import train  # pylint: disable=import-outside-toplevel

  return json.dumps(train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir), indent=1)


def _sweep_report() -> str:
  from analysis import sweep_report  # pylint: disable=import-outside-toplevel

  return sweep_report.write_report(FLAGS.workdir)


def _compress() -> str:
  # pylint: disable=import-outside-toplevel
  from analysis import summary
  from compression import run

  return run.compress(FLAGS.config, FLAGS.workdir, model_facts=summary.model_facts)


def _convert() -> str:
  # pylint: disable=import-outside-toplevel
  from analysis import summary
  from pretrained import workdir

  derived = workdir.convert_into_workdir(
      FLAGS.config, FLAGS.weights, FLAGS.workdir, model_facts=summary.model_facts
  )
  source = derived['converted_from']
  return (
      f'{FLAGS.workdir}: {FLAGS.config.model.name} from {source["library"]} '
      f'{source["reference"]} ({derived["num_params"]:,} parameters). Next: '
      f'python main.py --mode=predict --workdir={FLAGS.workdir} --image=<file>'
  )


def _predict() -> str:
  from analysis import predict  # pylint: disable=import-outside-toplevel

  return predict.predict_text(FLAGS.workdir, FLAGS.image)


def _dataset_stats() -> str:
  from input_pipeline import dataset_stats  # pylint: disable=import-outside-toplevel

  return dataset_stats.write_dataset_stats(FLAGS.config, FLAGS.workdir)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(
        f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value).'
    )
  _check_flags()
  if FLAGS.mode == 'list':
    print(_listing())
    return
  command_line.quiet_library_logs()
  if FLAGS.mode != 'summary' or FLAGS.config is not None:  # a --model summary needs no TensorFlow
    import input_pipeline  # pylint: disable=import-outside-toplevel

    input_pipeline.hide_accelerators_from_tf()
  # pylint: disable=import-outside-toplevel
  from train_lib import preemption, sharding

  sharding.initialize_distributed_if_launched()
  import jax

  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.mode == 'train':
      _train()
    else:
      commands = {
          'summary': _summary,
          'evaluate': _evaluate,
          'dataset_stats': _dataset_stats,
          'compress': _compress,
          'convert': _convert,
          'predict': _predict,
          'sweep_report': _sweep_report,
      }
      print(commands.get(FLAGS.mode, _picture)())
  except preemption.StopRequested as stop:
    logging.warning(str(stop))
    sys.exit(128 + stop.signum)


if __name__ == '__main__':
  command_line.run(main)
