"""Sweeps from config files: expansion, point workdirs, skipping and resuming, array indices,
bad overrides refused before any point runs, and the report with its failed points."""

import json
import os

import pytest
from conftest import REPO, read_json, run_main

import configs
from analysis import sweep_report
from common.errors import ConfigError
from configs import default, sweep
from train_lib import sweeps


def test_product_and_zip_expand_the_axes():
  lrs, bns = sweep.axis('optimizer.lr', [0.1, 0.01]), sweep.axis('model.batch_norm', [False, True])
  assert sweep.product(lrs, bns) == [
      {'optimizer.lr': 0.1, 'model.batch_norm': False},
      {'optimizer.lr': 0.1, 'model.batch_norm': True},
      {'optimizer.lr': 0.01, 'model.batch_norm': False},
      {'optimizer.lr': 0.01, 'model.batch_norm': True},
  ]
  assert sweep.zipped(lrs, bns) == [
      {'optimizer.lr': 0.1, 'model.batch_norm': False},
      {'optimizer.lr': 0.01, 'model.batch_norm': True},
  ]
  with pytest.raises(ValueError, match='one length'):
    sweep.zipped(lrs, sweep.axis('seed', [0, 1, 2]))


def test_a_point_is_named_from_its_overrides():
  assert sweeps.point_name({'optimizer.lr': 0.001, 'model.batch_norm': True}) == (
      'lr=0.001,batch_norm=True'
  )
  assert sweeps.point_name({'schedule.decay_epochs': (30, 60), 'model.name': 'a/b'}) == (
      'decay_epochs=30-60,name=a_b'
  )


def _fake_train(calls, fail=()):
  """Records each run; writes what a finished run leaves (or raises for the points in `fail`)."""

  def train(config, workdir):
    calls.append(os.path.basename(workdir))
    if config.optimizer.lr in fail:
      raise FloatingPointError('the loss became NaN at step 3')
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump({'config': config.to_dict(), 'derived': {'total_steps': 5}}, f)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'step': 5, 'eval_top1': config.optimizer.lr, 'eval_loss': 1.0}, f)

  return train


def test_finished_points_are_skipped_and_failures_recorded_and_reported(tmp_path):
  points = sweep.axis('optimizer.lr', [0.1, 0.2, 0.3])
  calls = []
  sweeps.run(default.get_config(), points, str(tmp_path), _fake_train(calls, fail=(0.2,)))
  assert calls == ['lr=0.1', 'lr=0.2', 'lr=0.3']  # the failure did not stop the sweep
  rows = sweep_report.read(str(tmp_path))
  assert [r['status'] for r in rows] == [
      'finished',
      'failed: the loss became NaN at step 3',
      'finished',
  ]
  assert [r['eval_top1'] for r in rows] == [0.1, None, 0.3]
  calls.clear()
  sweeps.run(default.get_config(), points, str(tmp_path), _fake_train(calls))
  assert calls == ['lr=0.2']  # only the unfinished point runs again, and now finishes
  table = sweep_report.write_report(str(tmp_path))
  assert table.count('| finished |') == 3
  assert read_json(tmp_path / 'sweep.json')['points'][1]['overrides'] == {'optimizer.lr': 0.2}
  for name in ('sweep.csv', 'sweep.md', 'sweep.png', 'sweep_curves.png'):
    assert (tmp_path / name).exists()


def test_points_that_set_different_fields_are_reported(tmp_path):
  points = [{'optimizer.lr': 0.1}] + sweep.axis('optimizer.momentum', [0.5, 0.9])
  sweeps.run(default.get_config(), points, str(tmp_path), _fake_train([]))
  table = sweep_report.write_report(str(tmp_path)).splitlines()
  assert table[0] == (
      '| index | optimizer.lr | optimizer.momentum | status | step | eval_top1 | eval_loss '
      '| train_loss |'
  )
  assert table[2].startswith('| 0 | 0.1000 |  | finished |')
  assert table[3].startswith('| 1 |  | 0.5000 | finished |')
  assert (tmp_path / 'sweep.png').exists()


def test_an_interrupted_point_is_run_again(tmp_path):
  interrupted = tmp_path / 'lr=0.1'
  interrupted.mkdir()
  (interrupted / 'config.json').write_text(json.dumps({'derived': {'total_steps': 5}}))
  (interrupted / 'metrics.jsonl').write_text('{"step": 2, "train_loss": 1.5}\n')
  (tmp_path / sweeps.SWEEP_FILE).write_text(
      json.dumps({'points': [{'name': 'lr=0.1', 'overrides': {'optimizer.lr': 0.1}}]})
  )
  assert sweep_report.read(str(tmp_path))[0]['status'] == 'stopped at step 2'
  calls = []
  sweeps.run(
      default.get_config(), sweep.axis('optimizer.lr', [0.1]), str(tmp_path), _fake_train(calls)
  )
  assert calls == ['lr=0.1']


def test_the_index_comes_from_the_flag_or_the_array_task(monkeypatch, tmp_path):
  monkeypatch.delenv('SLURM_ARRAY_TASK_ID', raising=False)
  monkeypatch.delenv('PBS_ARRAY_INDEX', raising=False)
  assert sweeps.sweep_index(None) is None
  monkeypatch.setenv('SLURM_ARRAY_TASK_ID', '2')
  assert sweeps.sweep_index(None) == 2 and sweeps.sweep_index(0) == 0
  calls = []
  points = sweep.axis('optimizer.lr', [0.1, 0.2, 0.3])
  sweeps.run(default.get_config(), points, str(tmp_path), _fake_train(calls), index=2)
  assert calls == ['lr=0.3']
  with pytest.raises(ConfigError, match='this sweep has 3 points'):
    sweeps.run(default.get_config(), points, str(tmp_path), _fake_train(calls), index=3)


def test_an_unknown_field_is_refused_before_any_point_runs(tmp_path):
  points = [{'optimizer.lr': 0.1}, {'optimizer.lrr': 0.2}]
  calls = []
  with pytest.raises(ConfigError, match="'optimizer.lrr'.*Did you mean lr"):
    sweeps.run(default.get_config(), points, str(tmp_path / 'root'), _fake_train(calls))
  assert calls == [] and not (tmp_path / 'root').exists()


SWEEP_CONFIG = """
from configs import lenet5_mnist, sweep


def get_config(arg=None):
  config = lenet5_mnist.get_config()
  config.dataset.data_dir = {data_dir!r}
  config.total_steps, config.log_every_steps, config.eval_every_steps = 2, 1, 2
  return config


def get_sweep(arg=None):
  return sweep.axis('optimizer.lr', [0.01, 0.02])
"""


def test_main_runs_a_sweep_and_reports_it(data_dir, tmp_path):
  config = tmp_path / 'two_lrs.py'
  config.write_text(SWEEP_CONFIG.format(data_dir=data_dir))
  done = run_main(f'--config={config}', f'--workdir={tmp_path / "root"}', '--sweep')
  assert done.returncode == 0, done.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / 'root' / 'lr=0.01' / 'checkpoints')) == ['2']
  assert (
      read_json(tmp_path / 'root' / 'lr=0.02' / 'config.json')['config']['optimizer']['lr'] == 0.02
  )
  assert done.stdout.count('| finished |') == 2
  again = run_main('--mode=sweep_report', f'--workdir={tmp_path / "root"}')
  assert again.returncode == 0 and again.stdout.count('| finished |') == 2
  bad = run_main(
      f'--config={config}', f'--workdir={tmp_path / "root"}', '--sweep', '--sweep_index=5'
  )
  assert bad.stderr.strip().splitlines()[-1] == (
      'error: --sweep_index=5 is out of range: this sweep has 2 points (0 to 1).'
  )


@pytest.mark.slow  # ~70 s: sweeps, devices and precision are each tested alone above
def test_mixed_precision_points_on_several_devices_run_as_single_runs_do(data_dir, tmp_path):
  config = tmp_path / 'precisions.py'
  config.write_text(
      SWEEP_CONFIG.format(data_dir=data_dir).replace(
          "sweep.axis('optimizer.lr', [0.01, 0.02])",
          "sweep.axis('precision', ['float32', 'bfloat16'])",
      )
  )
  swept = run_main(f'--config={config}', f'--workdir={tmp_path / "root"}', '--sweep', devices=4)
  assert swept.returncode == 0, swept.stderr[-2000:]
  alone = run_main(
      f'--config={config}', f'--workdir={tmp_path / "alone"}', '--config.precision=bfloat16',
      devices=4,
  )  # fmt: skip
  assert alone.returncode == 0, alone.stderr[-2000:]
  point = tmp_path / 'root' / 'precision=bfloat16'
  assert read_json(point / 'config.json')['derived']['num_devices'] == 4
  single, float32 = read_json(tmp_path / 'alone' / 'results.json'), read_json(
      tmp_path / 'root' / 'precision=float32' / 'results.json'
  )
  result = read_json(point / 'results.json')
  for key in ('train_loss', 'eval_loss', 'eval_top1'):
    assert result[key] == single[key]  # the point is the single run, bit for bit
  assert result['eval_loss'] != float32['eval_loss']  # and did compute in bfloat16


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


@pytest.mark.parametrize(
    'name', [n for n, m in configs.experiment_modules().items() if hasattr(m, 'get_sweep')]
)
def test_every_study_sweep_names_fields_its_config_has(name):
  points = sweeps.load_points(os.path.join(REPO, 'configs', f'{name}.py'))
  base = configs.experiment_modules()[name].get_config()
  names = [sweeps.point_name(p) for p in points]
  assert len(set(names)) == len(points) > 1
  for point in points:
    config = sweeps.apply(base, point)
    assert all(_get(config, k) == v for k, v in point.items())
