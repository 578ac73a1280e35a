"""Entry point: python main.py --config=configs/<experiment>.py[:arg] --workdir=<dir> [--mode=...].

Any config field can be overridden: --config.optimizer.lr=0.05. Rerunning the same command
resumes from the newest checkpoint in the workdir. Other modes look inside networks and runs:
  --mode=summary --model=resnet50 [--image_size=224 --num_classes=1000 --format=table|markdown|json]
  --mode=filters|feature_maps|curves --workdir=<run> [--output=<png>]
  --mode=compare --workdirs=<run>,<run>,... --output=<png>
"""

import difflib
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

FLAGS = flags.FLAGS
ANALYSIS_MODES = ('summary', 'filters', 'feature_maps', 'curves', 'compare')
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
    ['train', 'dataset_stats', *ANALYSIS_MODES],
    "train; dataset_stats: the training split's mean, std, RGB covariance and its "
    'eigenvectors, per-pixel mean and ZCA matrix, into <workdir>/dataset_stats.npz; '
    'summary: per-layer shapes, neurons, parameters, MACs and receptive fields; '
    'filters / feature_maps / curves: PNGs of a trained workdir; compare: accuracy '
    'against parameters and MACs of several workdirs.',
)
flags.DEFINE_string('model', None, 'summary: a registry model name (instead of --config).')
flags.DEFINE_integer(
    'image_size',
    None,
    'summary: input height and width (default: the ' "model's native input, or the config's).",
)
flags.DEFINE_integer('channels', None, 'summary: input channels (default: native or config).')
flags.DEFINE_integer('num_classes', None, 'summary: classes (default: native or config).')
flags.DEFINE_enum('format', 'table', ['table', 'markdown', 'json'], 'summary: output format.')
flags.DEFINE_string(
    'output',
    None,
    'Where a picture (or the summary) is written; pictures ' 'default to <workdir>/<mode>.png.',
)
flags.DEFINE_string('image', None, 'feature_maps: an image file (default: the first eval image).')
flags.DEFINE_list(
    'layers',
    None,
    'feature_maps: summary layer names (default: the first, a ' 'middle and the last convolution).',
)
flags.DEFINE_list('workdirs', None, 'compare: the runs to compare.')
flags.DEFINE_bool('show_traceback', False, 'Print the full traceback of configuration errors.')


def _is_multiprocess_launch() -> bool:
  """True when launched as one of several processes (explicitly, SLURM, MPI or a TPU pod)."""
  env = os.environ
  return bool(
      env.get('JAX_COORDINATOR_ADDRESS')
      or int(env.get('SLURM_NTASKS', '1')) > 1
      or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
      or ',' in env.get('TPU_WORKER_HOSTNAMES', '')
  )


def _initialize_distributed() -> None:
  import jax  # pylint: disable=import-outside-toplevel

  env = os.environ
  jax.distributed.initialize(
      num_processes=int(env['JAX_NUM_PROCESSES']) if 'JAX_NUM_PROCESSES' in env else None,
      process_id=int(env['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in env else None,
  )


def _missing_config_message(path: str) -> str:
  return f'config file {path!r} does not exist; experiment configs live in configs/.'


def _explain_override_error(argv: list[str]) -> str:
  """Names the --config.<field> override that does not exist, with the fields that do."""
  config_arg = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  if config_arg is None:
    return ''
  path, _, arg = config_arg.partition(':')
  if not os.path.isfile(path):
    return _missing_config_message(path)
  try:
    namespace: dict = {}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    exec(compile(open(path).read(), path, 'exec'), namespace)  # pylint: disable=exec-used
    config = namespace['get_config'](arg) if arg else namespace['get_config']()
  except Exception:  # the real error is reported by the caller
    return ''
  for a in argv:
    if not a.startswith('--config.'):
      continue
    node, walked = config, []
    for key in a[len('--config.') :].split('=', 1)[0].split('.'):
      if not isinstance(node, config_dict.ConfigDict) or key not in node:
        known = list(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
        close = difflib.get_close_matches(key, known, n=1)
        where = 'config.' + '.'.join(walked) if walked else 'config'
        hint = f' Did you mean {close[0]!r}?' if close else ''
        return (
            f'Unknown config field {key!r} in {a!r}.{hint} Fields of {where}: '
            f'{", ".join(sorted(known))}.'
        )
      node, walked = node[key], walked + [key]
  return ''


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config override mistakes reported as one clear line."""
  try:
    remaining = FLAGS(argv)
    if FLAGS.config is not None:
      path = config_flags.get_config_filename(FLAGS['config']).partition(':')[0]
      if not os.path.isfile(path):
        sys.exit(f'error: {_missing_config_message(path)}')
    return remaining
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --help for usage.')
  except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    sys.exit(f'error: {_explain_override_error(argv) or f"bad --config: {e}"}')


def _user_errors() -> tuple[type[Exception], ...]:
  """Errors caused by the command or the workdir: reported as a message, not a traceback."""
  import input_pipeline  # pylint: disable=import-outside-toplevel
  import models  # pylint: disable=import-outside-toplevel
  from train_lib import checkpoint, train  # pylint: disable=import-outside-toplevel

  return (
      models.UnknownModelError,
      input_pipeline.DatasetError,
      checkpoint.IncompatibleCheckpointError,
      train.NonFiniteLossError,
      ValueError,
  )


def _quiet_library_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the progress log (warnings still show)."""
  import logging as std_logging  # pylint: disable=import-outside-toplevel

  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname
  )


def _check_required_flags() -> None:
  mode = FLAGS.mode
  if mode in ('train', 'dataset_stats') and FLAGS.config is None:
    raise app.UsageError('--config is required, e.g. --config=configs/lenet5_mnist.py')
  if mode == 'summary' and (FLAGS.config is None) == (FLAGS.model is None):
    raise app.UsageError(
        '--mode=summary takes --model=<name> (e.g. resnet50) or --config=..., ' 'one of them.'
    )
  if mode == 'compare' and not FLAGS.workdirs:
    raise app.UsageError('--mode=compare needs --workdirs=<run>,<run>,...')
  if mode not in ('summary', 'compare') and not FLAGS.workdir:
    raise app.UsageError(f'--workdir is required for --mode={mode}, e.g. --workdir=runs/lenet5')


def _analysis(mode: str) -> str:
  """Runs an analysis mode; returns what to print (the summary, or the path of the picture)."""
  # pylint: disable=import-outside-toplevel
  if mode == 'summary':
    from analysis import commands

    text = commands.summary_text(
        FLAGS.config,
        FLAGS.model,
        image_size=FLAGS.image_size,
        channels=FLAGS.channels,
        num_classes=FLAGS.num_classes,
        fmt=FLAGS.format,
    )
    if FLAGS.output:
      from train_lib import files

      files.write_text_atomic(FLAGS.output, text + '\n')
    return text
  from analysis import plots_cli as pictures

  if mode == 'filters':
    return pictures.write_filters(FLAGS.workdir, FLAGS.output)
  if mode == 'feature_maps':
    return pictures.write_feature_maps(FLAGS.workdir, FLAGS.image, FLAGS.layers, FLAGS.output)
  if mode == 'curves':
    return pictures.write_curves(FLAGS.workdir, FLAGS.output)
  return pictures.write_comparison(FLAGS.workdirs, FLAGS.output)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  _check_required_flags()

  _quiet_library_logs()
  if FLAGS.mode != 'summary' or FLAGS.config is not None:  # a --model summary needs no TensorFlow
    import input_pipeline  # pylint: disable=import-outside-toplevel

    input_pipeline.hide_accelerators_from_tf()
  if _is_multiprocess_launch():
    _initialize_distributed()
  import jax  # pylint: disable=import-outside-toplevel

  from train_lib import preemption, train  # pylint: disable=import-outside-toplevel

  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)

  try:
    if FLAGS.mode in ANALYSIS_MODES:
      print(_analysis(FLAGS.mode))
    elif FLAGS.mode == 'dataset_stats':
      from input_pipeline import dataset_stats  # pylint: disable=import-outside-toplevel

      print(dataset_stats.write_dataset_stats(FLAGS.config, FLAGS.workdir))
    else:
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.StopRequested as stop:
    logging.warning(str(stop))
    sys.exit(128 + stop.signum)
  except _user_errors() as e:
    if FLAGS.show_traceback:
      traceback.print_exc()
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
