"""The training loop in-process: outputs, resumption, and runs that must stop safely."""

import hashlib
import os
import signal

import numpy as np
import pytest
from conftest import read_json

from train_lib import checkpoint, preemption, reporting, sharding, train


class _Data:
  """Wraps a data source, letting a test act on the k-th training batch."""

  def __init__(self, inner, on_batch):
    self._inner, self._on_batch = inner, on_batch
    self.num_classes, self.image_shape = inner.num_classes, inner.image_shape
    self.steps_per_epoch = inner.steps_per_epoch

  def train_batches(self, start_step):
    for step, batch in enumerate(self._inner.train_batches(start_step), start=start_step):
      yield self._on_batch(step, batch)

  def eval_batches(self):
    return self._inner.eval_batches()


def _tree_digest(path):
  digest = hashlib.sha256()
  for root, _, names in sorted(os.walk(path)):
    for name in sorted(names):
      digest.update(os.path.join(root, name).encode())
      with open(os.path.join(root, name), 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def test_a_run_leaves_metrics_results_curves_events_and_config(tmp_path, small_config):
  results = train.train_and_evaluate(small_config, str(tmp_path))
  assert results['step'] == 12 and results['eval_count'] == 1000  # each test digit once
  saved = read_json(tmp_path / 'results.json')
  for key in ('eval_top1', 'eval_top5'):
    assert 0.0 <= saved[key] <= 1.0
  assert saved['eval_top1'] > 0.3  # 12 steps already beat chance (0.1) by far
  assert {'step', 'eval_loss', 'eval_top1', 'eval_top5', 'wall_time_s'} <= set(saved)
  rows = reporting.read_metrics(str(tmp_path))
  assert [r['step'] for r in rows if 'train_loss' in r] == [3, 6, 9, 12]
  assert [r['step'] for r in rows if 'eval_loss' in r] == [6, 12]
  assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(tmp_path / 'tensorboard'))
  written = read_json(tmp_path / 'config.json')
  assert written['config']['model']['name'] == 'lenet5'
  assert written['derived']['steps_per_epoch'] == 4000 // 64
  assert written['derived']['num_params'] == results['num_params']
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['12', '6']


def test_signal_stop_then_rerun_matches_an_uninterrupted_run(tmp_path, small_config):
  straight = train.train_and_evaluate(small_config, str(tmp_path / 'straight'))

  def send_sigterm_at_step_5(step, batch):
    if step == 4 + small_config.prefetch_to_device:  # the loop reads that many batches ahead
      os.kill(os.getpid(), signal.SIGTERM)
    return batch

  inner = train.make_data(small_config, sharding.make_mesh())
  workdir = str(tmp_path / 'stopped')
  with pytest.raises(preemption.StopRequested) as stop:
    train.train_and_evaluate(small_config, workdir, data=_Data(inner, send_sigterm_at_step_5))
  assert stop.value.step == 5 and stop.value.signum == signal.SIGTERM
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['5']
  resumed = train.train_and_evaluate(small_config, workdir)
  assert resumed['resumed_from_step'] == 5
  for key in ('step', 'eval_loss', 'eval_top1', 'eval_top5', 'train_loss'):
    assert resumed[key] == pytest.approx(straight[key], rel=1e-6, abs=1e-7), key
  rows = reporting.read_metrics(workdir)
  assert [r['step'] for r in rows if 'train_loss' in r] == [3, 6, 9, 12]  # each step once


def test_each_step_finds_its_batch_and_the_next_ones_already_on_the_devices(
    tmp_path, small_config, monkeypatch
):
  produced, seen = [], []

  def note(step, batch):
    produced.append(step)
    return batch

  def recording_jit_train_step(*args, **kwargs):
    step_fn = jit_train_step(*args, **kwargs)

    def step(state, batch):
      seen.append((len(produced), batch['image'].sharding))
      return step_fn(state, batch)

    return step

  jit_train_step = train.jit_train_step
  monkeypatch.setattr(train, 'jit_train_step', recording_jit_train_step)
  small_config.total_steps = 6
  mesh = sharding.make_mesh()
  train.train_and_evaluate(
      small_config, str(tmp_path), data=_Data(train.make_data(small_config, mesh), note)
  )
  ahead = small_config.prefetch_to_device
  assert [count for count, _ in seen] == [step + 1 + ahead for step in range(6)]
  assert all(s == sharding.batch_sharded(mesh) for _, s in seen)  # a global, sharded jax.Array


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, small_config):
  def poison_step_8(step, batch):
    if step == 7:
      batch = {**batch, 'image': np.full_like(batch['image'], np.nan)}
    return batch

  data = _Data(train.make_data(small_config, sharding.make_mesh()), poison_step_8)
  with pytest.raises(train.NonFiniteLossError, match='NaN/inf at step 8.*checkpoint \\(step 6\\)'):
    train.train_and_evaluate(small_config, str(tmp_path), data=data)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['6']
  assert not (tmp_path / 'results.json').exists()


def test_checkpoint_of_another_architecture_is_refused_and_left_untouched(tmp_path, small_config):
  small_config.total_steps = 6
  train.train_and_evaluate(small_config, str(tmp_path))
  before = _tree_digest(tmp_path)
  small_config.model.batch_norm = False
  with pytest.raises(
      checkpoint.IncompatibleCheckpointError,
      match="(?s)different model.*only in checkpoint: \\['params'\\]\\['bn1'\\]",
  ):
    train.train_and_evaluate(small_config, str(tmp_path))
  assert _tree_digest(tmp_path) == before


def test_finished_run_rerun_returns_its_results_and_writes_nothing(tmp_path, small_config):
  small_config.total_steps = 6
  first = train.train_and_evaluate(small_config, str(tmp_path))
  listing = {p: os.path.getmtime(p) for p in tmp_path.rglob('*')}
  assert train.train_and_evaluate(small_config, str(tmp_path)) == first
  small_config.eval_batch_size = 250  # another config of the same length: still finished
  assert train.train_and_evaluate(small_config, str(tmp_path)) == first
  assert {p: os.path.getmtime(p) for p in tmp_path.rglob('*')} == listing


def test_resuming_with_a_changed_config_keeps_the_earlier_one(tmp_path, small_config):
  small_config.total_steps = 6
  train.train_and_evaluate(small_config, str(tmp_path))
  small_config.total_steps, small_config.optimizer.lr = 9, 0.01
  assert train.train_and_evaluate(small_config, str(tmp_path))['resumed_from_step'] == 6
  earlier = read_json(tmp_path / 'config.until_step_6.json')
  now = read_json(tmp_path / 'config.json')
  assert (earlier['config']['optimizer']['lr'], now['config']['optimizer']['lr']) == (0.05, 0.01)


@pytest.mark.parametrize(
    'field, value, error, message',
    [
        (
            'model.name',
            'resnet9000',
            'UnknownModelError',
            "Unknown model 'resnet9000'.*Known models: .*lenet5",
        ),
        ('dataset.name', 'mnits', 'DatasetError', "Unknown dataset 'mnits'.*Did you mean mnist"),
        ('optimizer.name', 'adagrad', 'ValueError', "Unknown optimizer 'adagrad'"),
        ('schedule.name', 'linear', 'ValueError', "Unknown schedule 'linear'"),
        (
            'schedule.metric',
            'eval_acc',
            'ValueError',
            'choose one of eval_loss, eval_top1, eval_top5',
        ),
        (
            'dataset.train_preprocess',
            'random_crop(28, pad=2)|flip',
            'ValueError',
            'Did you mean flip_lr',
        ),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(
    tmp_path, small_config, field, value, error, message
):
  import input_pipeline
  import models

  errors = {
      'UnknownModelError': models.UnknownModelError,
      'DatasetError': input_pipeline.DatasetError,
      'ValueError': ValueError,
  }
  small_config.update_from_flattened_dict(
      {field: value, 'schedule.name': 'plateau'} if field == 'schedule.metric' else {field: value}
  )
  with pytest.raises(errors[error], match=message):
    train.train_and_evaluate(small_config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_the_readme_config_learns_the_offline_digits(tmp_path, small_config):
  """A 6-epoch version of configs/lenet5_mnist.py (97.3 % here; the README's 30 epochs: 97.8 %)."""
  small_config.update_from_flattened_dict(
      {
          'total_steps': 0,
          'num_epochs': 6,
          'log_every_steps': 62,
          'eval_every_steps': 0,
          'checkpoint_every_steps': 0,
          'eval_batch_size': 500,
      }
  )
  results = train.train_and_evaluate(small_config, str(tmp_path))
  assert results['eval_count'] == 1000
  assert results['eval_top1'] >= 0.96, results  # margin for other CPUs' rounding


def test_plateau_schedule_cuts_the_lr_after_evals_without_improvement(tmp_path, small_config):
  # No eval can beat the last by min_delta=10, so every eval after the first is a plateau.
  small_config.update_from_flattened_dict(
      {
          'schedule.name': 'plateau',
          'schedule.warmup_epochs': 0.0,
          'schedule.metric': 'eval_loss',
          'schedule.patience': 1,
          'schedule.min_delta': 10.0,
          'schedule.max_reductions': 2,
          'eval_every_steps': 3,
          'optimizer.lr': 0.05,
      }
  )
  train.train_and_evaluate(small_config, str(tmp_path))
  lrs = {r['step']: r['lr'] for r in reporting.read_metrics(str(tmp_path)) if 'lr' in r}
  # Evals at steps 3, 6, 9, 12: the ones at 6 and 9 divide by 10, then max_reductions is hit.
  assert lrs == pytest.approx({3: 0.05, 6: 0.05, 9: 0.005, 12: 0.0005})
