"""The accelerator measurement, prepared to run in under 8 minutes where a GPU is at hand
(125 s in all on one H200).

  python -m benchmarks.gpu_check [--json=gpu.json]
  python -m benchmarks.gpu_check --dry_run    # the same program at toy sizes, on any machine

One table: the train and eval steps of ResNet-50 at 224×224 in bfloat16, batch 256 (images/s
and fraction of the device's bf16 matmul peak; the first bar is 3,000 images/s on one
H100/H200, MLPerf's ≈ 7,200 per H100 the aim), ResNet-20 on 32×32 (float32 at batch 128, its
recipe, and bfloat16 at batch 1024), each measured by benchmarks.train_step; beside them the
training loop's own images/s (train_lib.train.train_and_evaluate fed random host batches: the
host-to-device copies, prefetching, logging and the step together, without tf.data), and the
training input pipeline's images/s on this host's CPUs for the same configs, on tfds's random
mock data (benchmarks.input_feed; needs TensorFlow, and is reported as not measured without it).
"""

import importlib
import itertools
import tempfile
import time
from typing import Any

from absl import flags, logging

from benchmarks import harness, train_step
from common import command_line, files
from common.errors import UserError
from train_lib import train

FLAGS = flags.FLAGS
flags.DEFINE_bool('dry_run', False, 'Toy sizes (batch 2, 32×32, one step): checks the script.')
flags.DEFINE_string('json', '', 'Also write the rows to this JSON file.')

# (model, image size, dtype, batch, steps, the configs/ module whose pipeline feeds it).
CASES = (
    ('resnet50', 224, 'bfloat16', 256, 20, 'resnet_imagenet'),
    ('resnet20', 32, 'float32', 128, 50, 'resnet_cifar10'),
    ('resnet20', 32, 'bfloat16', 1024, 20, 'resnet_cifar10'),
)
MOCK_EXAMPLES = 2048  # random examples per split of tfds's mock data


def measure_steps(
    cases: tuple[tuple[Any, ...], ...] = CASES, dry_run: bool = False
) -> list[dict[str, Any]]:
  """benchmarks.train_step's row of every case (at toy sizes if `dry_run`)."""
  rows = []
  for name, size, dtype, batch, steps, _ in cases:
    if dry_run:
      size, batch, steps = 32, 2, 1
    results = train_step.benchmark(
        [name],
        batch_size=batch,
        image_size=size,
        dtype=dtype,
        steps=steps,
        warmup=0 if dry_run else 3,
        matmul_size=256 if dry_run else 0,
    )
    rows.append({**results['models'][0], 'device_kind': results['device_kind']})
  return rows


class _HostBatches:
  """A train.DataSource of two random host batches in turn: the loop copies each to the devices
  as it copies tf.data's, at no input cost of its own."""

  def __init__(self, batch_size: int, image_shape: tuple[int, ...], num_classes: int):
    self.batches = [
        harness.classification_batch(batch_size, image_shape, num_classes, seed) for seed in (0, 1)
    ]
    self.num_classes, self.image_shape = num_classes, image_shape
    self.steps_per_epoch = 1_000  # longer than a measurement: eval and saving only at its end

  def train_batches(self, start_step: int):
    for step in itertools.count(start_step):
      yield self.batches[step % 2]

  def eval_batches(self):
    yield self.batches[0]


def measure_loop(name: str, size: int, dtype: str, batch: int, steps: int) -> float:
  """images/s of train_and_evaluate over its last `steps` steps (its final log window), after
  `steps` steps that compile and warm up."""
  config = train_step.model_config(name, batch, dtype)
  config.total_steps = 2 * steps
  config.log_every_steps = steps
  config.optimizer.lr = 1e-3  # random labels: the default 0.1 can diverge, which stops the loop
  shape, num_classes = train_step.input_shape(name, size)
  with tempfile.TemporaryDirectory() as workdir:
    results = train.train_and_evaluate(config, workdir, _HostBatches(batch, shape, num_classes))
  return results['images_per_s']


def measure_pipeline(config_name: str, batch_size: int, dry_run: bool) -> dict[str, Any]:
  """images/s of configs/`config_name`'s training pipeline on mock data at `batch_size`, or why
  it was not measured."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    import input_pipeline  # pylint: disable=import-outside-toplevel
    from benchmarks import input_feed  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {'pipeline_images_per_s': None, 'pipeline_note': f'not measured: {e}'}
  input_pipeline.hide_accelerators_from_tf()
  config = importlib.import_module(f'configs.{config_name}').get_config()
  config.batch_size = batch_size
  examples = 4 * batch_size if dry_run else MOCK_EXAMPLES
  try:
    with tfds.testing.mock_data(num_examples=examples):
      results = input_feed.benchmark(
          config,
          batches=2 if dry_run else 20,
          model=False,
          warmup=1 if dry_run else 3,
          repeats=1 if dry_run else 3,
      )
  except Exception as e:  # pylint: disable=broad-except  (the steps' table still stands)
    return {'pipeline_images_per_s': None, 'pipeline_note': f'not measured: {e!r}'[:200]}
  return {
      'pipeline_images_per_s': results['pipeline_images_per_s'],
      'pipeline_note': (
          f'configs/{config_name}.py on {examples} mock examples, {results["tf_data"]["cpu_cores"]}'
          ' CPU cores'
      ),
  }


def measure(cases: tuple[tuple[Any, ...], ...] = CASES, dry_run: bool = False) -> list[dict]:
  """Every case's step row with the training loop's and its input pipeline's rates beside it."""
  rows = measure_steps(cases, dry_run)
  pipelines = {}
  for row, case in zip(rows, cases):
    loop_steps = 2 if dry_run else 2 * case[4]  # a log window: longer than the timed steps
    row['loop_images_per_s'] = measure_loop(
        case[0], row['image_shape'][0], case[2], row['batch_size'], loop_steps
    )
    key = (case[5], row['batch_size'])
    if key not in pipelines:
      pipelines[key] = measure_pipeline(case[5], row['batch_size'], dry_run)
    row.update(pipelines[key])
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """One markdown table: the steps' rates and fractions of peak, the loop's and the pipeline's
  rates beside."""
  lines = [
      f'device: {rows[0]["device_kind"]}',
      '',
      '| model | input | dtype | batch | compile s | train img/s | train % peak | eval img/s '
      '| loop img/s | loop / train | pipeline img/s | pipeline / train |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in rows:
    h, w, c = r['image_shape']
    pipeline = r['pipeline_images_per_s']
    lines.append(
        f'| {r["model"]} | {h}×{w}×{c} | {r["dtype"]} | {r["batch_size"]} | '
        f'{r["compile_s"]:.0f} | {harness.images_per_s(r["train_images_per_s"])} | '
        f'{100 * r["train_fraction_of_peak"]:.1f} | '
        f'{harness.images_per_s(r["eval_images_per_s"])} | '
        f'{harness.images_per_s(r["loop_images_per_s"])} | '
        f'{r["loop_images_per_s"] / r["train_images_per_s"]:.2f} | '
        + (
            f'{harness.images_per_s(pipeline)} | {pipeline / r["train_images_per_s"]:.2f} |'
            if pipeline
            else 'not measured | |'
        )
    )
  notes = sorted({r['pipeline_note'] for r in rows})
  return '\n'.join(lines + [''] + [f'pipeline: {note}' for note in notes])


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(
        f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value).'
    )
  logging.set_verbosity(logging.WARNING)  # tfds's per-split INFO lines would bury the table
  began = time.perf_counter()
  rows = measure(dry_run=FLAGS.dry_run)
  print(format_table(rows))
  print(f'({time.perf_counter() - began:.0f} s in all)')
  if FLAGS.json:
    files.write_json_atomic(FLAGS.json, rows)


if __name__ == '__main__':
  command_line.run(_main)
