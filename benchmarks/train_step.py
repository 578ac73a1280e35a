"""How fast is a train step? Times the project's own jitted steps over models of the zoo.

  python -m benchmarks.train_step --models=lenet5,resnet20,mobilenet_v2,densenet_bc_100_k12
      [--batch_size=128] [--image_size=N] [--dtype=bfloat16] [--steps=10] [--warmup=3]
      [--compare=torch] [--threads=1] [--json=out.json]

Per model, on synthetic arrays already on the devices (no TensorFlow needed): the train state
and the jitted train and eval steps built as train_lib/train.py builds them (benchmarks.harness),
on the model's native input (or `--image_size`). It reports the train step's compile time,
train and eval images/s (the best of `steps` steps after `warmup`, each waited for), MACs per
image from analysis.summary, the FLOP/s they achieve (train ≈ 3 × forward: 6·MACs·batch/t;
eval 2·MACs·batch/t) and that as a fraction of the device's dense-matmul peak, measured once
at the start (a jitted n×n matmul in `--dtype`, best of several, 2·n³/t).

`--compare=torch` (needs torch and torchvision, an optional extra) builds the same network in
PyTorch (torchvision's model where the zoo follows torchvision, benchmarks/torch_models.py's
otherwise; the parameter counts must agree) and times its eager train step (SGD momentum,
channels-last, the same batch) and eval step, alternating one JAX step with one torch step,
and reports JAX's images/s over torch's. `--threads=1` pins the process, and both frameworks,
to one core: set before jax starts its CPU client.
"""

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags

import models
from analysis import summary
from benchmarks import harness
from common import command_line, cpu_scratch, files
from common.errors import ConfigError, UserError
from configs import default
from train_lib import sharding
from train_lib.state import num_params

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that the benchmarks
  import one another as libraries."""
  flags.DEFINE_list('models', ['lenet5', 'resnet20'], 'Registered model names (--mode=list).')
  flags.DEFINE_integer('batch_size', 128, 'Images per step (global, over all devices).')
  flags.DEFINE_integer('image_size', 0, "Square input size; 0 = each model's native size.")
  flags.DEFINE_string('dtype', 'float32', "Compute dtype of the models (and the peak's matmul).")
  flags.DEFINE_integer('steps', 10, 'Timed steps of each kind; the best is reported.')
  flags.DEFINE_integer('warmup', 3, 'Steps of each kind run after compiling, before timing.')
  flags.DEFINE_enum('compare', '', ['', 'torch'], 'Also time the PyTorch eager step, interleaved.')
  flags.DEFINE_integer(
      'threads', 0, 'CPU threads for both frameworks: 1 pins to one core; 0 = all.'
  )
  flags.DEFINE_integer('matmul_size', 0, 'n of the peak-measuring n×n matmul; 0 = by platform.')
  flags.DEFINE_string('json', '', "Also write the figures (benchmark()'s dict) to this JSON file.")


# XLA CPU flags of the installed jaxlib (0.10; an unknown flag aborts XLA): Eigen's matmuls and
# convolutions on the calling thread. The affinity keeps XLA's own thread pool on one core.
ONE_THREAD_XLA_FLAGS = ('--xla_cpu_multi_thread_eigen=false',)
DTYPES = ('float32', 'bfloat16', 'float16')


def pin_to_one_core() -> int:
  """Pins this process to one of its cores and XLA's CPU client to one thread; returns the core.

  Must run before jax starts its backend (the first computation or jax.devices() call)."""
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel

  if xla_bridge.backends_are_initialized():
    raise UserError('--threads=1 must be set before jax starts; run it as a fresh process.')
  core = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {core})
  os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''), *ONE_THREAD_XLA_FLAGS])
  return core


def default_matmul_size(platform: str) -> int:
  """Large enough to reach the device's matmul peak, small enough to time in seconds."""
  return 1536 if platform == 'cpu' else 8192


def matmul_peak(dtype: str, n: int, repeats: int = 10) -> float:
  """The device's dense-matmul FLOP/s: a jitted n×n by n×n product, best of `repeats`."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
  product = jax.jit(jnp.matmul)
  jax.block_until_ready(product(a, b))
  best = min(harness.timed(lambda: product(a, b)) for _ in range(repeats))
  return 2 * n**3 / best


def model_config(name: str, batch_size: int, dtype: str) -> ml_collections.ConfigDict:
  """configs/default.py's trainer settings (SGD momentum 0.9, constant lr, softmax
  cross-entropy) for the registered model `name`."""
  config = default.get_config()
  config.model = ml_collections.ConfigDict({'name': name})
  if dtype in models.PRECISIONS:
    config.precision = dtype
  else:  # float16: not a training precision, but a model dtype
    config.model.dtype = dtype
  config.batch_size = batch_size
  return config


def input_shape(name: str, image_size: int) -> tuple[tuple[int, int, int], int]:
  """((height, width, channels), classes) of `name`: its native input, resized if asked."""
  native = models.native_input(name)
  size = image_size or native.image_size
  return (size, size, native.channels), native.num_classes


def _best(seconds: list[float]) -> float:
  return min(seconds)


def _interleaved(runs: Sequence[Callable[[], Any]], steps: int) -> list[list[float]]:
  """Seconds of `steps` calls of each of `runs`, alternating between them call by call, so a
  burst of load on a shared machine falls on all of them alike."""
  seconds = [[] for _ in runs]
  for _ in range(steps):
    for run, times in zip(runs, seconds):
      times.append(harness.timed(run))
  return seconds


def benchmark_model(
    name: str,
    *,
    batch_size: int,
    image_size: int = 0,
    dtype: str = 'float32',
    steps: int = 10,
    warmup: int = 3,
    peak: float,
    mesh: jax.sharding.Mesh,
    torch_twin: Any = None,
) -> dict[str, Any]:
  """One model's row: compile time, images/s, MACs, FLOP/s and fraction of `peak`, and (with
  `torch_twin`, a benchmarks.torch_models.TorchStep) torch's rates and the ratios."""
  shape, num_classes = input_shape(name, image_size)
  config = model_config(name, batch_size, dtype)
  model = models.from_config(config.model, num_classes, precision=config.precision)
  macs = summary.model_facts(model, shape)['macs']
  batch = harness.classification_batch(batch_size, shape, num_classes)
  jitted = harness.Steps(config, model, shape, num_classes, batch, mesh)
  compile_s = harness.timed(jitted.train)  # the first call compiles
  eval_compile_s = harness.timed(jitted.eval)
  for _ in range(warmup):
    jitted.train()
    if torch_twin is not None:
      torch_twin.train()
  jax.block_until_ready(jitted.state)
  train_runs = [jitted.train] + ([torch_twin.train] if torch_twin is not None else [])
  train_seconds = _interleaved(train_runs, steps)
  for _ in range(warmup):
    jitted.eval()
    if torch_twin is not None:
      torch_twin.eval()
  eval_runs = [jitted.eval] + ([torch_twin.eval] if torch_twin is not None else [])
  eval_seconds = _interleaved(eval_runs, steps)
  faults = harness.page_faults(jitted.train)
  train_s, eval_s = _best(train_seconds[0]), _best(eval_seconds[0])
  row = {
      'model': name,
      'image_shape': shape,
      'num_classes': num_classes,
      'batch_size': batch_size,
      'dtype': dtype,
      'params': num_params(jitted.state.params),
      'macs_per_image': macs,
      'compile_s': compile_s,
      'eval_compile_s': eval_compile_s,
      'train_step_s': train_s,
      'train_images_per_s': batch_size / train_s,
      'train_flops_per_s': 6 * macs * batch_size / train_s,
      'train_fraction_of_peak': 6 * macs * batch_size / train_s / peak,
      'eval_step_s': eval_s,
      'eval_images_per_s': batch_size / eval_s,
      'eval_flops_per_s': 2 * macs * batch_size / eval_s,
      'eval_fraction_of_peak': 2 * macs * batch_size / eval_s / peak,
      'page_faults_per_train_step': faults,
  }
  if torch_twin is not None:
    torch_train_s, torch_eval_s = _best(train_seconds[1]), _best(eval_seconds[1])
    row.update(
        torch_params=torch_twin.params,
        torch_reference=torch_twin.reference,
        torch_train_images_per_s=batch_size / torch_train_s,
        torch_eval_images_per_s=batch_size / torch_eval_s,
        train_ratio_to_torch=torch_train_s / train_s,
        eval_ratio_to_torch=torch_eval_s / eval_s,
    )
  return row


def torch_twins(
    names: Sequence[str], batch_size: int, image_size: int, dtype: str, threads: int
) -> dict[str, Any]:
  """The torch step of every model, built (and parameter counts checked) before any timing."""
  try:
    import torch  # pylint: disable=import-outside-toplevel  (an optional extra)
  except ImportError:
    torch = None
  if torch is None:
    raise UserError('--compare=torch needs PyTorch: pip install torch torchvision')
  from benchmarks import torch_models  # pylint: disable=import-outside-toplevel

  if threads:
    torch.set_num_threads(threads)
  twins = {}
  for name in names:
    shape, num_classes = input_shape(name, image_size)
    twins[name] = torch_models.TorchStep(name, batch_size, shape, num_classes, dtype)
  return twins


def benchmark(
    names: Sequence[str],
    *,
    batch_size: int = 128,
    image_size: int = 0,
    dtype: str = 'float32',
    steps: int = 10,
    warmup: int = 3,
    compare: str = '',
    threads: int = 0,
    matmul_size: int = 0,
) -> dict[str, Any]:
  """The table's rows for `names` and what they were measured on."""
  if min(steps, batch_size) < 1 or warmup < 0:
    raise ConfigError(
        f'steps and batch_size must be at least 1 and warmup at least 0, got {steps}, '
        f'{batch_size}, {warmup}.'
    )
  if dtype not in DTYPES:
    raise ConfigError(f'--dtype must be one of {", ".join(DTYPES)}, got {dtype!r}.')
  for name in names:
    models.entry(name)  # an unknown name fails here, before any work
  devices = harness.devices()
  mesh = sharding.make_mesh()
  sharding.check_divisible(batch_size, mesh)
  twins = torch_twins(names, batch_size, image_size, dtype, threads) if compare else {}
  n = matmul_size or default_matmul_size(devices['platform'])
  peak = matmul_peak(dtype, n)
  rows = []
  for name in names:
    rows.append(
        benchmark_model(
            name,
            batch_size=batch_size,
            image_size=image_size,
            dtype=dtype,
            steps=steps,
            warmup=warmup,
            peak=peak,
            mesh=mesh,
            torch_twin=twins.get(name),
        )
    )
  return {
      **devices,
      'cpu_cores': harness.cpu_cores(),
      'threads': threads or 'all',
      'load_average': os.getloadavg(),
      'dtype': dtype,
      'peak_flops_per_s': peak,
      'peak_measure': f'jitted {n}x{n} {dtype} matmul, best of 10, 2·n³/t',
      'timing': (
          f'best of {steps} steps after compiling and {warmup} warm-up steps, each waited for'
          + ('; JAX and torch steps alternated' if compare else '')
      ),
      'compare': compare,
      'reuse_cpu_scratch': cpu_scratch.applied(),
      'models': rows,
  }


def format_table(results: dict[str, Any]) -> str:
  """A markdown table, one row per model, under a line saying what it was measured on."""
  compare = bool(results['compare'])
  header = [
      'model',
      'input',
      'batch',
      'compile s',
      'train img/s',
      'eval img/s',
      'MMACs/img',
      'train GFLOP/s',
      'train % peak',
      'eval GFLOP/s',
      'eval % peak',
      'faults/step',
  ]
  if compare:
    header += ['torch train img/s', 'JAX/torch train', 'torch eval img/s', 'JAX/torch eval']
  lines = [
      f'devices: {results["device_count"]} x {results["device_kind"]} ({results["platform"]}), '
      f'threads: {results["threads"]}, load average: '
      + ', '.join(f'{x:.2f}' for x in results['load_average'])
      + f'; peak {results["peak_flops_per_s"] / 1e9:,.1f} GFLOP/s ({results["peak_measure"]}); '
      f'{results["dtype"]}; {results["timing"]}'
      + ('; --reuse_cpu_scratch' if results['reuse_cpu_scratch'] else ''),
      '',
      '| ' + ' | '.join(header) + ' |',
      '|' + '|'.join('---' for _ in header) + '|',
  ]
  for r in results['models']:
    h, w, c = r['image_shape']
    cells = [
        r['model'],
        f'{h}×{w}×{c}',
        str(r['batch_size']),
        f'{r["compile_s"]:.1f}',
        harness.images_per_s(r['train_images_per_s']),
        harness.images_per_s(r['eval_images_per_s']),
        f'{r["macs_per_image"] / 1e6:,.2f}',
        f'{r["train_flops_per_s"] / 1e9:,.1f}',
        f'{100 * r["train_fraction_of_peak"]:.1f}',
        f'{r["eval_flops_per_s"] / 1e9:,.1f}',
        f'{100 * r["eval_fraction_of_peak"]:.1f}',
        f'{r["page_faults_per_train_step"]:,.0f}',
    ]
    if compare:
      cells += [
          harness.images_per_s(r['torch_train_images_per_s']),
          f'{r["train_ratio_to_torch"]:.2f}',
          harness.images_per_s(r['torch_eval_images_per_s']),
          f'{r["eval_ratio_to_torch"]:.2f}',
      ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(
        f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value).'
    )
  if FLAGS.threads not in (0, 1):
    raise UserError(f'--threads must be 1 (one core) or 0 (all), got {FLAGS.threads}.')
  if FLAGS.threads == 1:
    pin_to_one_core()
  began = time.perf_counter()
  results = benchmark(
      FLAGS.models,
      batch_size=FLAGS.batch_size,
      image_size=FLAGS.image_size,
      dtype=FLAGS.dtype,
      steps=FLAGS.steps,
      warmup=FLAGS.warmup,
      compare=FLAGS.compare,
      threads=FLAGS.threads,
      matmul_size=FLAGS.matmul_size,
  )
  print(format_table(results))
  print(f'({time.perf_counter() - began:.0f} s in all)')
  if FLAGS.json:
    files.write_json_atomic(FLAGS.json, results)


if __name__ == '__main__':
  define_flags()
  command_line.run(_main)
