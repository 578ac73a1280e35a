"""The compression results docs/compression.md reports, reproduced at full length on the offline
digits (5.2 minutes on 2 CPU cores): `pytest -m slow tests/test_compression_results.py`.

Tolerances are targets, not our measured values (docs/compression.md has those): Deep
Compression's LeNet-5 at least 35× smaller with at most 0.5 point of top-1 lost, 90 % sparsity
for at most 1 point, int8 for at most 0.5 point at a quarter of the size, a distilled student
3 points above the same student alone, binary weights within a point.
"""

import os

import pytest
from conftest import REPO, load_config, read_json

from analysis import summary
from compression import report, run
from train_lib import train

pytestmark = pytest.mark.slow


def _config(data_dir, method, **sections):
  config = load_config(f'--config={os.path.join(REPO, "configs", "compression.py")}:{method}')
  with config.unlocked():
    config.dataset.data_dir = data_dir
    for section, values in sections.items():
      config[section].update(values)
  return config


@pytest.fixture(scope='module')
def original(data_dir, tmp_path_factory):
  """Caffe's LeNet-5 trained as configs/lenet5_mnist.py:lenet_caffe trains it (30 epochs)."""
  workdir = str(tmp_path_factory.mktemp('lenet_caffe'))
  config = load_config(f'--config={os.path.join(REPO, "configs", "lenet5_mnist.py")}:lenet_caffe')
  with config.unlocked():
    config.dataset.data_dir = data_dir
  train.train_and_evaluate(config, workdir)
  return workdir


def _rows(data_dir, original, workdir, method, **sections):
  config = _config(data_dir, method, **sections)
  with config.unlocked():
    if method == 'distill':
      config.distill.teacher = original
    else:
      config.init_from = original
  run.compress(config, str(workdir), model_facts=summary.model_facts)
  return read_json(os.path.join(workdir, report.JSON_FILE))['rows']


def test_deep_compression_lenet5_is_35_times_smaller_within_half_a_point(
    data_dir, original, tmp_path
):
  first, pruned, shared, coded = _rows(data_dir, original, tmp_path, 'deep_compression')
  assert first['bytes'] == 431_080 * 4
  assert pruned['nonzero'] / first['params'] < 0.09  # the paper keeps 8 % (biases here too)
  assert coded['ratio'] >= 35 and shared['ratio'] < coded['ratio']
  assert coded['top1'] >= first['top1'] - 0.005


def test_ninety_percent_sparsity_costs_at_most_one_point(data_dir, original, tmp_path):
  first, pruned = _rows(data_dir, original, tmp_path, 'prune')
  sparsity = read_json(tmp_path / report.JSON_FILE)['layer_sparsity']
  assert all(s == pytest.approx(0.9, abs=1e-3) for s in sparsity.values())
  assert pruned['top1'] >= first['top1'] - 0.01


def test_int8_costs_at_most_half_a_point_at_a_quarter_of_the_size(data_dir, original, tmp_path):
  first, int8 = _rows(data_dir, original, tmp_path, 'ptq')
  assert int8['ratio'] > 3.9 and int8['top1'] >= first['top1'] - 0.005


def test_a_distilled_student_beats_the_same_student_alone(data_dir, original, tmp_path):
  teacher, alone, distilled = _rows(data_dir, original, tmp_path, 'distill')
  assert teacher['params'] / alone['params'] > 80
  assert distilled['top1'] > alone['top1'] + 0.03  # measured: +6 to +12.5 points (3 seeds)


def test_the_binary_network_trains_to_within_a_point(data_dir, original, tmp_path):
  first, binary = _rows(data_dir, original, tmp_path, 'binary')
  assert binary['ratio'] > 20 and binary['top1'] >= first['top1'] - 0.01  # measured: −0.6 pt
