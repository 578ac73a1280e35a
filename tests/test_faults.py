"""Fault injection: damaged checkpoints fall back to the newest good one, two trainings in one
workdir, a write error, a changed batch size on resume, a finished run rerun, bad workdirs; each
answered by one line, with every good checkpoint byte-identical afterwards."""

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import REPO, main_args, read_bytes, read_json, small_lenet5_config

from common.errors import ConfigError, UserError
from train_lib import checkpoint, train, workdir_lock

SHORT = (  # small_lenet5_config's length and intervals, for the runs through main.py
    '--config.total_steps=12',
    '--config.checkpoint_every_steps=6',
    '--config.eval_every_steps=6',
    '--config.log_every_steps=3',
)


def _digest_tree(path) -> str:
  """One hash of every file under `path` (names and bytes)."""
  digest = hashlib.sha256()
  for root, dirs, names in os.walk(path):
    dirs.sort()
    for name in sorted(names):
      digest.update(os.path.join(os.path.relpath(root, path), name).encode())
      digest.update(read_bytes(os.path.join(root, name)))
  return digest.hexdigest()


def _config(data_dir, **fields):
  config = small_lenet5_config(data_dir)  # 12 steps, checkpoints at 6 and 12
  config.update_from_flattened_dict(fields)
  return config


@pytest.fixture(scope='module')
def finished_run(data_dir, tmp_path_factory):
  """A finished 12-step LeNet-5 run with checkpoints at steps 6 and 12 (copy it to change it)."""
  workdir = tmp_path_factory.mktemp('faults') / 'run'
  train.train_and_evaluate(_config(data_dir), str(workdir))
  assert checkpoint.saved_steps(workdir / 'checkpoints') == [6, 12]
  return workdir


def _copy(run, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(run, workdir)
  return workdir


def _data_files(step_dir):
  """The checkpoint's array data files, largest first."""
  found = [
      os.path.join(root, n)
      for root, _, names in os.walk(step_dir)
      for n in names
      if os.sep + 'd' + os.sep in os.path.join(root, n)
  ]
  return sorted(found, key=os.path.getsize, reverse=True)


def _overwrite_middle(path, count=200):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.seek(size // 2 - count // 2)
    f.write(bytes(range(count)))


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_data_folders(step_dir):
  os.remove(os.path.join(step_dir, checkpoint.DIGEST_FILE))  # unverified: the read itself fails
  for root, dirs, _ in os.walk(step_dir):
    for d in dirs:
      if d == 'd':
        shutil.rmtree(os.path.join(root, d))


@pytest.mark.parametrize(
    'damage, reason',
    [
        (lambda s: _overwrite_middle(_data_files(s)[0]), 'its files changed after it was saved'),
        pytest.param(
            lambda s: _truncate(_data_files(s)[0]),
            'its files changed after it was saved',
            marks=pytest.mark.slow,  # the same path as 'overwritten'
        ),
        (_delete_data_folders, 'it cannot be read'),
    ],
    ids=['overwritten', 'truncated', 'data folders deleted'],
)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    finished_run, data_dir, tmp_path, caplog, damage, reason
):
  workdir = _copy(finished_run, tmp_path)
  good = _digest_tree(workdir / 'checkpoints' / '6')
  damage(str(workdir / 'checkpoints' / '12'))
  os.remove(workdir / 'results.json')  # so the rerun trains steps 7-12 again
  with caplog.at_level(logging.INFO):
    results = train.train_and_evaluate(_config(data_dir), str(workdir))
  damaged = workdir / checkpoint.DAMAGED_DIR / '12'
  assert (
      f'The checkpoint of step 12 in {workdir / "checkpoints"} is damaged: {reason}' in caplog.text
  )
  assert f'moved it to {damaged}. Trying the next newest.' in caplog.text
  assert 'Restored checkpoint of step 6' in caplog.text
  assert damaged.is_dir()  # kept, not deleted
  assert _digest_tree(workdir / 'checkpoints' / '6') == good
  # Steps 7-12 trained again from step 6 give the original run's results, bit for bit.
  for key in ('eval_loss', 'eval_top1', 'train_loss'):
    assert results[key] == read_json(finished_run / 'results.json')[key]


@pytest.mark.slow
def test_every_checkpoint_damaged_starts_over_with_them_kept(
    finished_run, data_dir, tmp_path, caplog
):
  workdir = _copy(finished_run, tmp_path)
  for step in ('6', '12'):
    _overwrite_middle(_data_files(workdir / 'checkpoints' / step)[0])
  os.remove(workdir / 'results.json')
  results = train.train_and_evaluate(_config(data_dir), str(workdir))
  assert 'No good checkpoint is left' in caplog.text
  assert sorted(os.listdir(workdir / checkpoint.DAMAGED_DIR)) == ['12', '6']
  assert results['resumed_from_step'] == 0


def _lock(workdir, pid, host=None):
  record = {'pid': pid, 'host': host or socket.gethostname(), 'since': '2026-12-01 10:00:00'}
  (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(record))


def test_a_second_training_into_a_busy_workdir_is_refused_at_once(finished_run, data_dir, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])
  try:
    _lock(workdir, holder.pid)
    before = _digest_tree(workdir)
    with pytest.raises(workdir_lock.WorkdirBusyError) as refused:
      train.train_and_evaluate(_config(data_dir, total_steps=18), str(workdir))
  finally:
    holder.kill()
  assert str(refused.value) == (
      f'{workdir} is in use: pid {holder.pid} on {socket.gethostname()} has been training into '
      'it since 2026-12-01 10:00:00. Wait for it, or use another --workdir; if that process is '
      f'gone, delete {workdir / workdir_lock.LOCK_FILE}.'
  )
  assert _digest_tree(workdir) == before


def test_the_lock_of_a_process_that_is_gone_is_taken_over(finished_run, data_dir, tmp_path, caplog):
  workdir = _copy(finished_run, tmp_path)
  gone = subprocess.Popen([sys.executable, '-c', 'pass'])
  gone.wait()
  _lock(workdir, gone.pid)
  results = train.train_and_evaluate(_config(data_dir, total_steps=18), str(workdir))
  assert f'Taking over the lock of {workdir} from pid {gone.pid}' in caplog.text
  assert results['step'] == 18
  assert not (workdir / workdir_lock.LOCK_FILE).exists()  # released at the end


def test_a_checkpoint_write_error_stops_in_one_line_and_claims_nothing(
    finished_run, data_dir, tmp_path, caplog
):
  workdir = _copy(finished_run, tmp_path)
  good = {s: _digest_tree(workdir / 'checkpoints' / s) for s in ('6', '12')}
  results = read_bytes(workdir / 'results.json')
  # Files may not grow past 100 kB (as on a full disk, writes fail): the next checkpoint fails.
  # bash sets the limit (a preexec_fn would fork this multithreaded process).
  args = main_args(data_dir, str(workdir), *SHORT[1:], '--config.total_steps=18')
  done = subprocess.run(
      ['bash', '-c', 'ulimit -f 98 && exec "$0" "$@"', sys.executable, 'main.py', *args],
      cwd=REPO,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'},
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == 1
  assert [line for line in done.stderr.splitlines() if line.startswith('error:')] == [
      (
          f'error: could not write the checkpoint of step 18 into {workdir / "checkpoints"}: File '
          'too large. The newest complete checkpoint: step 12. Free space (or fix the folder) and '
          'rerun the same command to resume from it.'
      )
  ]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert read_bytes(workdir / 'results.json') == results  # no claim of step 18
  assert {s: _digest_tree(workdir / 'checkpoints' / s) for s in ('6', '12')} == good
  with caplog.at_level(logging.INFO):
    again = train.train_and_evaluate(_config(data_dir, total_steps=18), str(workdir))
  assert 'Restored checkpoint of step 12' in caplog.text
  assert again['step'] == 18


def test_resuming_with_another_batch_size_is_refused(finished_run, data_dir, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  before = _digest_tree(workdir)
  with pytest.raises(ConfigError) as refused:
    train.train_and_evaluate(_config(data_dir, batch_size=32), str(workdir))
  assert str(refused.value).startswith(
      f'{workdir} was trained with batch_size=64; resuming it with batch_size=32 would see '
      'examples again or skip them and shift the schedule. Rerun with --config.batch_size=64, '
      'or use a new --workdir'
  )
  assert _digest_tree(workdir) == before


def test_a_finished_run_rerun_is_left_alone_and_evaluate_writes_its_own_file(
    finished_run, data_dir, tmp_path, caplog
):
  workdir = _copy(finished_run, tmp_path)
  before = _digest_tree(workdir)
  with caplog.at_level(logging.INFO):
    rerun = train.train_and_evaluate(_config(data_dir), str(workdir))
  assert rerun == read_json(finished_run / 'results.json')
  assert f'{workdir} finished at step 12: loss' in caplog.text
  assert _digest_tree(workdir) == before
  # Another eval setting (the training split) into evaluation.json; nothing else changes.
  train.evaluate_checkpoint(
      _config(data_dir, **{'dataset.eval_split': 'train[:500]'}), str(workdir)
  )
  result = read_json(workdir / train.EVALUATION_FILE)
  assert result['step'] == 12 and result['eval_count'] == 500
  assert result['split'] == 'train[:500]'
  assert 0 < result['eval_top1'] <= 1
  os.remove(workdir / train.EVALUATION_FILE)
  assert _digest_tree(workdir) == before


def test_a_workdir_that_is_a_file_is_refused_before_any_work(data_dir, tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('x')
  with pytest.raises(UserError) as refused:
    train.train_and_evaluate(_config(data_dir), str(path))
  assert str(refused.value) == (
      f'--workdir={path} is a file (or lies under one); give a folder (it is created if '
      'missing).'
  )


def test_divergence_in_a_fresh_workdir_says_no_checkpoint_was_written(data_dir, tmp_path):
  with pytest.raises(train.NonFiniteLossError, match='no checkpoint was written yet, so a rerun'):
    train.train_and_evaluate(_config(data_dir, **{'optimizer.lr': 1e30}), str(tmp_path / 'run'))


def test_a_read_only_filesystem_is_refused_before_any_work(monkeypatch, tmp_path):
  real = os.statvfs

  class ReadOnly:

    def __init__(self, path):
      self.f_flag = real(path).f_flag | os.ST_RDONLY

  monkeypatch.setattr(os, 'statvfs', ReadOnly)
  with pytest.raises(
      UserError, match='cannot write into --workdir=.*: the filesystem is read-only'
  ):
    workdir_lock.check_free(str(tmp_path / 'new' / 'run'))
  assert not (tmp_path / 'new').exists()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale():
  parent = os.getppid()
  holder = {'pid': parent, 'host': socket.gethostname(), 'since': '...'}
  assert workdir_lock._is_running({**holder, 'pid_start': workdir_lock._start_time(parent)})
  assert not workdir_lock._is_running({**holder, 'pid_start': '1'})  # a reused pid
  assert workdir_lock._is_running({**holder, 'host': 'elsewhere'})  # cannot tell: assume alive


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('batch_size', 0, 'batch_size=0 is out of range: it must be a positive integer.'),
        (
            'optimizer.lr',
            -1.0,
            'optimizer.lr=-1.0 is out of range: it must be >= 0 (0 freezes every weight).',
        ),
    ],
)
# The issue's own cases, end to end through the trainer (every range and op argument is in
# test_faults_config.py).
def test_a_value_out_of_range_is_refused_before_any_work(
    small_config, tmp_path, field, value, message
):
  small_config.update_from_flattened_dict({field: value})
  with pytest.raises(ConfigError) as refused:
    train.train_and_evaluate(small_config, str(tmp_path / 'run'))
  assert str(refused.value) == message
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
    'spec, message',
    [
        (
            "random_crop('a', pad=2)",
            'Bad arguments for preprocessing op "random_crop(\'a\', pad=2)": size must be a '
            "positive int or a (height, width) pair, got 'a'.",
        ),
        (
            "random_crop(28, pad='x')",
            'Bad arguments for preprocessing op "random_crop(28, pad=\'x\')": pad must be an int '
            ">= 0 (pixels per side), got 'x'.",
        ),
        (
            'normalize((0.5,), (0.0,))',
            "Bad arguments for preprocessing op 'normalize((0.5,), (0.0,))': std must be > 0 in "
            'every channel (it divides), got (0.0,).',
        ),
    ],
)
def test_a_bad_op_argument_names_the_op_before_any_work(small_config, tmp_path, spec, message):
  small_config.dataset.train_preprocess = spec
  with pytest.raises(ConfigError) as refused:
    train.train_and_evaluate(small_config, str(tmp_path / 'run'))
  assert str(refused.value) == message
  assert not (tmp_path / 'run').exists()
