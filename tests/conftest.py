"""Shared fixtures: one prepared copy of the offline digits, small configs, a main.py runner."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One XLA compilation cache for this process and the main.py runs it starts: the same
# programs are compiled many times over, and compiling dominates small runs on a CPU.
_CACHE = tempfile.mkdtemp(prefix='jax-compilation-cache-')
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A tfds data dir holding the prepared offline digits (prepared once per session)."""
  import tensorflow_datasets as tfds

  from input_pipeline import offline_digits  # defining the builder registers it with tfds

  path = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder(offline_digits.OfflineDigits.name, data_dir=path).download_and_prepare()
  return path


@pytest.fixture
def small_config(data_dir):
  """The LeNet-5 config, shortened to a few seconds of training on the offline digits."""
  return small_lenet5_config(data_dir)


def small_lenet5_config(data_dir: str):
  """`small_config` for fixtures of wider scope (same programs, so compiled ones are reused)."""
  from configs import lenet5_mnist

  config = lenet5_mnist.get_config()
  config.dataset.data_dir = data_dir
  config.total_steps = 12
  config.log_every_steps = 3
  config.eval_every_steps = 6
  config.checkpoint_every_steps = 6
  config.eval_batch_size = 300  # does not divide the 1,000 test digits
  return config


def read_json(path: str):
  """The JSON object in the file `path`."""
  with open(path) as f:
    return json.load(f)


def read_bytes(path: str) -> bytes:
  """The contents of the file `path`."""
  with open(path, 'rb') as f:
    return f.read()


def load_config(*args: str):
  """The config as main.py's flags give it: `--config=path[:arg]` and `--config.x=y` overrides."""
  from absl import flags
  from ml_collections import config_flags

  argv = ['main.py', *args]
  values = flags.FlagValues()  # override flags are declared from argv, as main.py's are
  config_flags.DEFINE_config_file('config', flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


def run_main(
    *args: str, devices: int = 1, timeout: float = 300, **popen
) -> subprocess.CompletedProcess:
  """Runs `python main.py ARGS` on `devices` fake CPU devices and returns the finished process."""
  env = {
      **os.environ,
      'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
      'JAX_PLATFORMS': 'cpu',
      'TF_CPP_MIN_LOG_LEVEL': '2',
  }
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'main.py'), *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      **popen,
  )


def main_args(data_dir: str, workdir: str, *overrides: str) -> list[str]:
  """Arguments for a short LeNet-5 run on the offline digits."""
  return [
      f'--config={os.path.join(REPO, "configs", "lenet5_mnist.py")}',
      f'--workdir={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      *overrides,
  ]
