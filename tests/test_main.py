"""main.py as a user runs it: in separate processes, on 1 or 8 (fake CPU) devices."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, main_args, read_json, run_main

from train_lib import reporting, train


def _train_losses(workdir):
  return {r['step']: r['train_loss'] for r in reporting.read_metrics(workdir) if 'train_loss' in r}


def test_eight_devices_match_one_and_checkpoints_move_between_them(
    tmp_path, data_dir, small_config
):
  # BatchNorm sees the global batch under jit + mesh, so the losses agree step by step.
  fields = {
      'total_steps': 16,
      'log_every_steps': 1,
      'eval_every_steps': 8,
      'checkpoint_every_steps': 8,
      'eval_batch_size': 300,
  }
  small_config.update_from_flattened_dict(fields)
  one, eight = str(tmp_path / 'one'), str(tmp_path / 'eight')
  train.train_and_evaluate(small_config, one)  # this process has 1 device
  done = run_main(
      *main_args(data_dir, eight, *[f'--config.{k}={v}' for k, v in fields.items()]), devices=8
  )
  assert done.returncode == 0, done.stderr[-3000:]
  derived = read_json(os.path.join(eight, 'config.json'))['derived']
  assert derived['num_devices'] == 8
  assert derived['macs'] == 416_520  # main.py hands the trainer the summary's MACs per image
  assert 'macs' not in read_json(os.path.join(one, 'config.json'))['derived']  # no hook
  losses_one, losses_eight = _train_losses(one), _train_losses(eight)
  assert sorted(losses_one) == list(range(1, 17))
  for step in losses_one:
    assert losses_eight[step] == pytest.approx(losses_one[step], abs=1e-4), step

  # Each checkpoint resumes on the other mesh: 1 → 8 in a new process, 8 → 1 in this one.
  fields['total_steps'] = 20
  done = run_main(
      *main_args(data_dir, one, *[f'--config.{k}={v}' for k, v in fields.items()]), devices=8
  )
  assert done.returncode == 0, done.stderr[-3000:]
  small_config.total_steps = 20
  assert train.train_and_evaluate(small_config, eight)['resumed_from_step'] == 16
  on_eight, on_one = _train_losses(one), _train_losses(eight)
  # The two runs' last-bit differences (1 vs 8 partial sums) can flip a near-tie in a max-pool
  # window, after which they drift apart (3.4e-4 apart by step 18 in one measured run).
  for step in range(17, 21):
    assert on_one[step] == pytest.approx(on_eight[step], abs=1e-3), step


def test_two_processes_train_together_and_their_checkpoint_resumes_in_one(
    tmp_path, data_dir, small_config
):
  """Multi-host data parallelism over loopback: 2 processes × 4 CPU devices."""
  import socket

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / 'run')
  args = main_args(
      data_dir,
      workdir,
      '--config.total_steps=16',
      '--config.log_every_steps=4',
      '--config.eval_every_steps=8',
      '--config.checkpoint_every_steps=8',
  )
  processes = []
  for index in range(2):
    env = {
        **os.environ,
        'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
        'JAX_NUM_PROCESSES': '2',
        'JAX_PROCESS_ID': str(index),
        'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
        'JAX_PLATFORMS': 'cpu',
        'TF_CPP_MIN_LOG_LEVEL': '2',
    }
    processes.append(
        subprocess.Popen(
            [sys.executable, os.path.join(REPO, 'main.py'), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
  derived = read_json(os.path.join(workdir, 'config.json'))['derived']
  assert (derived['num_processes'], derived['num_devices']) == (2, 8)
  results = read_json(os.path.join(workdir, 'results.json'))
  assert results['step'] == 16 and results['eval_count'] == 1000  # each host evaluated its half
  assert sorted(_train_losses(workdir)) == [4, 8, 12, 16]  # one writer
  # One lock for the workdir, held by the chief alone (the other process would be refused).
  assert not os.path.exists(os.path.join(workdir, 'training.lock'))
  small_config.update_from_flattened_dict({'total_steps': 20, 'checkpoint_every_steps': 8})
  assert train.train_and_evaluate(small_config, workdir)['resumed_from_step'] == 16


@pytest.mark.slow  # ~55 s: tests/test_train.py stops a run by the same signal handler in-process
def test_sigterm_saves_and_the_rerun_ends_like_an_uninterrupted_run(
    tmp_path, data_dir, small_config
):
  fields = {
      'total_steps': 60,
      'log_every_steps': 5,
      'eval_every_steps': 30,
      'checkpoint_every_steps': 1000,
      'eval_batch_size': 300,
  }
  steps = [f'--config.{k}={v}' for k, v in fields.items()]
  small_config.update_from_flattened_dict(fields)
  a = train.train_and_evaluate(small_config, str(tmp_path / 'straight'))  # the same program

  stopped = str(tmp_path / 'stopped')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  process = subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'main.py'), *main_args(data_dir, stopped, *steps)],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  deadline = time.time() + 240
  while not _train_losses(stopped) and time.time() < deadline and process.poll() is None:
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output = process.communicate(timeout=240)[0]
  assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
  assert 'Run the same command again to resume' in output
  saved = [int(s) for s in os.listdir(os.path.join(stopped, 'checkpoints'))]
  assert len(saved) == 1 and 5 <= saved[0] < 60  # saved where the signal caught it

  done = run_main(*main_args(data_dir, stopped, *steps))
  assert done.returncode == 0, done.stderr[-3000:]
  b = read_json(os.path.join(stopped, 'results.json'))
  assert b['resumed_from_step'] == saved[0]
  for key in ('step', 'eval_loss', 'eval_top1', 'eval_top5', 'train_loss'):
    assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize(
    'override, message',
    [
        (
            '--config.optimizer.lrr=0.1',
            "(?m)^error: --config.optimizer.lrr=0.1: the config has no field 'lrr'. "
            "Did you mean 'lr'?",
        ),
        (
            '--config.model.widht=2',
            "(?m)^error: --config.model.widht=2: the config has no field 'widht'.",
        ),
        (
            '--config.batch_size=100',
            'batch_size=100 must be a multiple of the number of devices \\(8\\)',
        ),
    ],
)
def test_user_errors_stop_with_a_clear_message(tmp_path, data_dir, override, message):
  done = run_main(*main_args(data_dir, str(tmp_path / 'run'), override), devices=8)
  assert done.returncode != 0
  assert 'Traceback' not in done.stderr
  assert re.search(message, done.stderr), done.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


@pytest.mark.parametrize('overrides', [(), ('--config.optimizer.lr=0.1',)])
def test_missing_config_file_is_named(overrides):
  done = run_main('--config=configs/no_such_experiment.py', '--workdir=unused', *overrides)
  assert done.returncode != 0 and 'Traceback' not in done.stderr
  assert "config file 'configs/no_such_experiment.py' does not exist" in done.stderr


def test_config_argument_typo_is_one_line_with_the_valid_arguments():
  done = run_main('--config=configs/lenet5_mnist.py:lenet6', '--workdir=unused')
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      "error: Unknown config argument 'lenet6': variants are lenet5, lenet5_1998, lenet_caffe; "
      'datasets are offline_digits, mnist, fashion_mnist.'
  ]


def test_a_missing_flag_is_one_line_and_help_exits_zero():
  done = run_main('--mode=train', '--workdir=unused')
  assert done.returncode == 1
  assert done.stderr.strip().splitlines() == [
      'error: --mode=train needs --config (e.g. --config=configs/lenet5_mnist.py).'
  ]
  done = run_main('--help')
  assert done.returncode == 0 and '--config' in done.stdout and '--mode' in done.stdout


def test_a_bug_keeps_its_traceback(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(arg=None):\n  return {}["missing"]\n')
  done = run_main(f'--config={broken}', '--workdir=unused')
  assert (
      done.returncode != 0 and 'Traceback' in done.stderr and "KeyError: 'missing'" in done.stderr
  )


def test_list_names_every_config_argument_and_every_model_with_its_count():
  import configs  # pylint: disable=import-outside-toplevel
  import models  # pylint: disable=import-outside-toplevel

  done = run_main('--mode=list')
  assert done.returncode == 0, done.stderr[-2000:]
  config_part, model_part = done.stdout.split('\nModels ')
  config_rows = {line.split()[0]: line for line in config_part.splitlines()[1:] if line}
  model_rows = {line.split()[0]: line for line in model_part.splitlines()[1:] if line}
  assert sorted(config_rows) == sorted(configs.arguments())
  for name, (variants, datasets) in configs.arguments().items():
    assert ' '.join(variants) in config_rows[name] and ' '.join(datasets) in config_rows[name]
  assert sorted(model_rows) == models.list_models()
  for name, row in model_rows.items():
    entry = models.entry(name)
    assert f'{entry.params:,}' in row and row.endswith(entry.reference), row
