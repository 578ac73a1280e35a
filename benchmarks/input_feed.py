"""Does the input pipeline keep the devices fed? Times the two halves of a training step apart.

  python -m benchmarks.input_feed --config=configs/resnet_cifar10.py [--config.x=y ...]
      [--batches=50] [--steps=20] [--no_model] [--warmup=5] [--repeats=3] [--json=out.json]
      [--mock_examples=50000]   # tfds's random mock data in place of the dataset

1. The training InputPipeline, built as train_lib/train.py builds it on one process (the
   whole global batch config.batch_size): images/s it delivers as numpy batches on this
   host's CPUs, after `warmup` batches (the first one fills the shuffle buffer, and the cache).
2. Unless --no_model, the jitted train step, built as train.py builds it (same model, state,
   optimizer, schedule, mesh shardings and state donation), on a synthetic batch of the
   pipeline's shape already on the devices: images/s the devices consume, after compiling.

Each figure is the best of `repeats` windows of `batches` batches (`steps` steps): the best
window is the one least disturbed by other work on a shared machine; the mean is printed too.
Neither figure includes the host-to-device copy of a batch. On a CPU-only machine the
pipeline and the step share the cores, so measured apart they overstate what runs together.
"""

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from ml_collections import config_flags

import input_pipeline
import models
from benchmarks import harness
from common import command_line, files
from common.errors import ConfigError, UserError
from train_lib import sharding, train

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that the benchmarks
  import one another as libraries."""
  config_flags.DEFINE_config_file(
      'config',
      None,
      'Experiment config: configs/<name>.py, or configs/<name>.py:<arg>.',
      lock_config=True,
  )
  flags.DEFINE_integer('batches', 50, 'Pipeline batches per timed window.')
  flags.DEFINE_integer('steps', 20, 'Train steps per timed window.')
  flags.DEFINE_bool('no_model', False, 'Time the input pipeline only.')
  flags.DEFINE_integer('warmup', 5, 'Pipeline batches discarded before timing (at least 1).')
  flags.DEFINE_integer('repeats', 3, 'Timed windows; the best one is reported.')
  flags.DEFINE_integer(
      'mock_examples',
      0,
      'If > 0, time tfds.testing.mock_data with this many '
      'random examples per split instead of the real dataset (no download).',
  )
  flags.DEFINE_string('json', '', "Also write the figures (benchmark()'s dict) to this JSON file.")


def tf_data_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The input settings that decide the pipeline's speed, as this run uses them."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (input_pipeline's own)

  d = config.dataset
  return {
      'cache': bool(d.cache),
      'shuffle_buffer': 'the whole split (cached)' if d.cache else int(d.shuffle_buffer),
      'train_preprocess': d.train_preprocess or '(decode only)',
      'channels': int(d.get('channels', 0)),
      'min_size': int(d.get('min_size', 0)),
      'tf_inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads() or 'auto',
      'tf_intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads() or 'auto',
      'cpu_cores': harness.cpu_cores(),
  }


def verdict(ratio: float, config: ml_collections.ConfigDict) -> str:
  """One line: does the pipeline keep up with the step, and what to try if not."""
  if ratio >= 1.0:
    return f'the pipeline keeps the accelerator fed with {ratio:.1f}x headroom'
  tips = []
  if not config.dataset.cache:
    tips.append('cache=True (if the decoded split fits in memory)')
  preprocess = config.dataset.train_preprocess
  if 'random_resized_crop' in preprocess and 'decode_and_random_resized_crop' not in preprocess:
    tips.append('a fused decode_and_random_resized_crop')
  tips.append(f'more CPU cores (this process has {harness.cpu_cores()})')
  return (
      f'input-bound: the pipeline delivers {ratio:.0%} of what the step consumes; try '
      + ', '.join(tips)
  )


def _time_pipeline(
    batches: Iterator[dict[str, np.ndarray]], count: int, warmup: int, repeats: int
) -> tuple[dict[str, np.ndarray], list[float]]:
  first = next(batches)  # builds the epoch: fills the shuffle buffer (and the cache)
  for _ in range(warmup - 1):
    next(batches)
  return first, harness.windows(lambda: next(batches), count, repeats)


def _time_train_step(
    config: ml_collections.ConfigDict,
    data: input_pipeline.InputPipeline,
    like: dict[str, np.ndarray],
    steps: int,
    repeats: int,
    mesh: jax.sharding.Mesh,
) -> dict[str, Any]:
  """Builds the model and the jitted train step as train_and_evaluate does and times it."""
  jitted = harness.Steps(
      config,
      models.from_config(config.model, data.num_classes, precision=config.precision),
      data.image_shape,
      data.num_classes,
      harness.synthetic_batch(like, data.num_classes),
      mesh,
      data.steps_per_epoch,
  )

  def run_one() -> None:
    jitted.train()

  began = time.perf_counter()
  run_one()  # compiles
  jax.block_until_ready(jitted.state)
  compile_s = time.perf_counter() - began
  for _ in range(2):
    run_one()
  jax.block_until_ready(jitted.state)
  seconds = harness.windows(
      run_one, steps, repeats, finish=lambda: jax.block_until_ready(jitted.state)
  )
  return {'seconds': seconds, 'compile_s': compile_s, 'mesh_size': mesh.size}


def benchmark(
    config: ml_collections.ConfigDict,
    *,
    batches: int = 50,
    steps: int = 20,
    model: bool = True,
    warmup: int = 5,
    repeats: int = 3,
) -> dict[str, Any]:
  """Images/s of the training pipeline and (if `model`) of the train step, and the verdict."""
  if min(batches, steps, warmup, repeats) < 1:
    raise ConfigError(
        f'batches, steps, warmup and repeats must be at least 1, got {batches}, '
        f'{steps}, {warmup}, {repeats}.'
    )
  devices = harness.devices()
  mesh = sharding.make_mesh()
  sharding.check_divisible(config.batch_size, mesh)
  data = train.make_data(config, mesh)
  first, seconds = _time_pipeline(data.train_batches(0), batches, warmup, repeats)
  pipeline_best, pipeline_mean = harness.rates(seconds, batches * config.batch_size)
  results: dict[str, Any] = {
      'dataset': data.spec.name,
      'num_train_examples': data.num_train_examples,
      'steps_per_epoch': data.steps_per_epoch,
      'batch_size': config.batch_size,
      'image_shape': tuple(data.image_shape),
      'model': config.model.name,
      **devices,
      'tf_data': tf_data_settings(config),
      'pipeline_images_per_s': pipeline_best,
      'pipeline_images_per_s_mean': pipeline_mean,
      'pipeline_timing': (
          f'best of {repeats} windows of {batches} batches after {warmup} ' 'warm-up batches'
      ),
      'step_images_per_s': None,
      'step_images_per_s_mean': None,
      'ratio': None,
  }
  if not model:
    results['verdict'] = 'train step not measured (--no_model)'
    return results
  step = _time_train_step(config, data, first, steps, repeats, mesh)
  step_best, step_mean = harness.rates(step['seconds'], steps * config.batch_size)
  ratio = pipeline_best / step_best
  results.update(
      step_images_per_s=step_best,
      step_images_per_s_mean=step_mean,
      ratio=ratio,
      compile_s=step['compile_s'],
      step_timing=f'best of {repeats} windows of {steps} steps after compiling and 2 warm-up steps',
      verdict=verdict(ratio, config),
  )
  return results


def format_report(results: dict[str, Any]) -> str:
  """The printed lines: what was measured, the two rates, their ratio and the verdict."""
  settings = ', '.join(
      f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}' for k, v in results['tf_data'].items()
  )
  lines = [
      f'dataset: {results["dataset"]} ({results["num_train_examples"]:,} training examples, '
      f'{results["steps_per_epoch"]} steps per epoch), batch {results["batch_size"]} of '
      f'{results["image_shape"]}',
      f'tf.data: {settings}',
      f'devices: {results["device_count"]} x {results["device_kind"]} ({results["platform"]})',
      f'pipeline: {results["pipeline_images_per_s"]:,.0f} images/s '
      f'({results["pipeline_timing"]}; mean {results["pipeline_images_per_s_mean"]:,.0f})',
  ]
  if results['step_images_per_s'] is not None:
    lines += [
        f'train step ({results["model"]}): {results["step_images_per_s"]:,.0f} images/s '
        f'({results["step_timing"]}; mean {results["step_images_per_s_mean"]:,.0f}; compiled in '
        f'{results["compile_s"]:.1f} s)',
        f'ratio pipeline/step: {results["ratio"]:.2f}',
    ]
    if results['platform'] == 'cpu':
      lines.append(
          'note: on CPU the pipeline and the step share the cores; measured apart, '
          'each figure overstates what runs together'
      )
  lines.append(f'verdict: {results["verdict"]}')
  return '\n'.join(lines)


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(
        f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value).'
    )
  if FLAGS.config is None:
    raise UserError('--config is required, e.g. --config=configs/lenet5_mnist.py')
  logging.set_verbosity(logging.WARNING)  # tfds's per-split INFO lines would bury the report
  input_pipeline.hide_accelerators_from_tf()
  data = (
      tfds.testing.mock_data(num_examples=FLAGS.mock_examples)
      if FLAGS.mock_examples
      else contextlib.nullcontext()
  )
  with data:
    results = benchmark(
        FLAGS.config,
        batches=FLAGS.batches,
        steps=FLAGS.steps,
        model=not FLAGS.no_model,
        warmup=FLAGS.warmup,
        repeats=FLAGS.repeats,
    )
  if FLAGS.mock_examples:
    results['dataset'] += f' (mock data: {FLAGS.mock_examples:,} random examples)'
  print(format_report(results))
  if FLAGS.json:
    files.write_json_atomic(FLAGS.json, results)


if __name__ == '__main__':
  define_flags()
  command_line.run(_main)
