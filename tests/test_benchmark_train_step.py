"""benchmarks.train_step: the zoo's train and eval steps timed, FLOP/s from the summary's MACs;
benchmarks.gpu_check's dry run; both without TensorFlow or torch."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from benchmarks import gpu_check, harness, train_step
from common.errors import UserError

FIELDS = {
    'model',
    'image_shape',
    'num_classes',
    'batch_size',
    'dtype',
    'params',
    'macs_per_image',
    'compile_s',
    'eval_compile_s',
    'train_step_s',
    'train_images_per_s',
    'train_flops_per_s',
    'train_fraction_of_peak',
    'eval_step_s',
    'eval_images_per_s',
    'eval_flops_per_s',
    'eval_fraction_of_peak',
    'page_faults_per_train_step',
}
# Runs the command line with TensorFlow and torch unimportable: the benchmark needs neither.
WITHOUT_TF = (
    'import runpy, sys; '
    'sys.modules.update(tensorflow=None, tensorflow_datasets=None, torch=None); '
    "sys.argv[0] = 'train_step'; "
    "runpy.run_module('benchmarks.train_step', run_name='__main__', alter_sys=True)"
)


def test_command_line_writes_the_table_and_consistent_json_without_tensorflow(tmp_path):
  out = tmp_path / 'out.json'
  run = subprocess.run(
      [
          sys.executable,
          '-c',
          WITHOUT_TF,
          '--models=lenet5,lenet_caffe',
          '--batch_size=8',
          '--steps=2',
          '--warmup=1',
          '--matmul_size=256',
          '--reuse_cpu_scratch',
          f'--json={out}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=240,
      check=False,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results['platform'] == 'cpu' and results['peak_flops_per_s'] > 0
  assert results['reuse_cpu_scratch']  # the shared command line applied the flag
  rows = results['models']
  assert [r['model'] for r in rows] == ['lenet5', 'lenet_caffe']
  lenet = rows[0]
  assert set(lenet) == FIELDS
  assert lenet['image_shape'] == [28, 28, 1] and lenet['batch_size'] == 8
  assert lenet['params'] == 61_706  # the registry's pinned count: the zoo's own model
  assert lenet['macs_per_image'] == 416_520  # analysis.summary's count for 28×28 LeNet-5
  for r in rows:
    assert all(r[k] > 0 for k in FIELDS if k.endswith(('_s', '_per_s', '_peak')))
    for kind, forward_passes in (('train', 3), ('eval', 1)):
      step_s = r[f'{kind}_step_s']
      assert r[f'{kind}_images_per_s'] == pytest.approx(8 / step_s)
      flops = 2 * forward_passes * r['macs_per_image'] * 8 / step_s
      assert r[f'{kind}_flops_per_s'] == pytest.approx(flops)
      assert r[f'{kind}_fraction_of_peak'] == pytest.approx(flops / results['peak_flops_per_s'])
  table = [line for line in run.stdout.splitlines() if line.startswith('| ')]
  assert len(table) == 1 + len(rows)  # the header and one row per model
  assert table[1].startswith('| lenet5 | 28×28×1 | 8 |')
  assert f'{lenet["train_images_per_s"]:,.0f}' in table[1]


def test_compare_torch_without_torch_is_one_line_saying_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(UserError, match='pip install torch') as raised:
    train_step.benchmark(['lenet5'], batch_size=8, steps=1, compare='torch')
  assert '\n' not in str(raised.value)


def test_an_unknown_model_or_dtype_fails_before_any_work():
  with pytest.raises(UserError, match='Unknown model'):
    train_step.benchmark(['lenet5', 'resnet_20'], batch_size=8)
  with pytest.raises(UserError, match='--dtype must be one of'):
    train_step.benchmark(['lenet5'], dtype='int8')


def test_gpu_check_dry_run_prints_one_table():
  case = ('lenet5', 28, 'float32', 128, 20, 'lenet5_mnist')
  rows = gpu_check.measure_steps((case,), dry_run=True)
  loop = gpu_check.measure_loop('lenet5', 32, 'float32', batch=2, steps=2)
  rows[0].update(
      loop_images_per_s=loop,
      pipeline_images_per_s=100.0,
      pipeline_note='configs/lenet5_mnist.py on mock',
  )
  assert rows[0]['batch_size'] == 2 and rows[0]['image_shape'] == (32, 32, 1)
  train = rows[0]['train_images_per_s']
  table = gpu_check.format_table(rows).splitlines()
  assert table[4].startswith('| lenet5 | 32×32×1 | float32 | 2 |')
  assert table[4].endswith(
      f'| {harness.images_per_s(loop)} | {loop / train:.2f} | 100 | {100 / train:.2f} |'
  )


def test_gpu_check_host_batches_alternate_like_a_pipeline():
  data = gpu_check._HostBatches(4, (8, 8, 1), num_classes=3)
  first, second, third = itertools.islice(data.train_batches(start_step=0), 3)
  assert first['image'].shape == (4, 8, 8, 1) and first['mask'].all()
  assert not np.array_equal(first['image'], second['image'])
  assert third is first
  assert next(data.train_batches(start_step=1)) is second


def test_slow_rates_keep_three_significant_figures():
  assert [harness.images_per_s(r) for r in (5.634, 99.96, 142.4, 35957.2)] == [
      '5.63',
      '100',
      '142',
      '35,957',
  ]
