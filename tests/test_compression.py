"""--mode=compress on a briefly trained Caffe LeNet-5: each method's report, the compressed
models it leaves, and the settings refused before any work. (The published-scale results, with
full training, are in test_compression_results.py behind -m slow.)"""

import os

import numpy as np
import pytest
from conftest import REPO, load_config, read_json, run_main

import models
from analysis import summary, workdirs
from common.errors import ConfigError
from compression import report, run
from models import binary
from train_lib import init_from, train


def _config(data_dir, method, *overrides):
  config = load_config(
      f'--config={os.path.join(REPO, "configs", "compression.py")}:{method}', *overrides
  )
  with config.unlocked():
    config.dataset.data_dir = data_dir
    config.log_every_steps = 4
  return config


@pytest.fixture(scope='module')
def source(data_dir, tmp_path_factory):
  """lenet_caffe after 40 steps on the offline digits."""
  workdir = str(tmp_path_factory.mktemp('lenet_caffe'))
  config = _config(data_dir, 'ptq')
  with config.unlocked():
    config.init_from = ''
    config.compression.method = ''
    config.total_steps = 40
  train.train_and_evaluate(config, workdir)
  return workdir


def _compress(data_dir, source, workdir, method, **fields):
  config = _config(data_dir, method)
  with config.unlocked():
    config.init_from = source
    config.compression.finetune_steps = 8
    config.compression.latency_batch = 16
    for key, value in fields.items():
      section, _, name = key.rpartition('__')
      (config[section] if section else config)[name] = value
  run.compress(config, workdir, model_facts=summary.model_facts)
  return read_json(os.path.join(workdir, report.JSON_FILE))['rows']


def test_ptq_from_the_command_line_writes_the_report(data_dir, source, tmp_path):
  done = run_main(
      f'--config={os.path.join(REPO, "configs", "compression.py")}:ptq',
      '--mode=compress',
      f'--workdir={tmp_path}',
      f'--config.init_from={source}',
      f'--config.dataset.data_dir={data_dir}',
      '--config.compression.latency_batch=16',
  )
  assert done.returncode == 0, done.stderr[-2000:]
  original, int8 = read_json(tmp_path / report.JSON_FILE)['rows']
  assert int8['params'] == original['params'] == 431_080
  assert 3.9 < int8['ratio'] < 4.0  # int8 kernels, float32 per-channel scales and biases
  assert abs(int8['top1'] - original['top1']) <= 0.02
  assert int8['macs'] == original['macs'] and int8['latency_ms'] > 0
  assert '| int8 PTQ |' in done.stdout and (tmp_path / report.TABLE_FILE).exists()
  assert (tmp_path / report.PICTURE_FILE).read_bytes()[:4] == b'\x89PNG'


def test_deep_compression_prunes_each_layer_then_shares_and_codes(data_dir, source, tmp_path):
  rows = _compress(
      data_dir,
      source,
      str(tmp_path),
      'deep_compression',
      pruning__end_step=4,
      pruning__frequency=2,
  )
  original, pruned, shared, coded = rows
  assert original['bytes'] > pruned['bytes'] > shared['bytes'] > coded['bytes']
  assert coded['ratio'] > 30
  params = init_from.read_run(str(tmp_path / 'share')).variables['params']
  pruned_stage = workdirs.load_trained(str(tmp_path / 'prune'))  # what --mode=filters reads
  assert np.count_nonzero(pruned_stage.variables['params']['fc1']['kernel']) == 32_000
  kept = {'conv1': 330, 'conv2': 3_000, 'fc1': 32_000, 'fc2': 950}  # the paper's fractions
  for layer, bits in (('conv1', 8), ('conv2', 8), ('fc1', 5), ('fc2', 5)):
    kernel = params[layer]['kernel']
    assert np.count_nonzero(kernel) == kept[layer]  # still after the centroids' fine-tuning
    assert np.unique(kernel).size <= 2**bits  # zero among them


def test_filter_pruning_leaves_a_narrower_model_that_trains(data_dir, source, tmp_path):
  rows = _compress(data_dir, source, str(tmp_path), 'filter_prune')
  original, pruned, tuned = rows
  assert pruned['params'] < original['params'] / 2 and pruned['macs'] < original['macs'] / 2
  stage = read_json(tmp_path / 'finetune' / 'config.json')
  widths = stage['config']['model']['pruned_widths']
  assert widths['conv1'] == 10 and widths['conv2'] == 25 and widths['fc1'] == 250
  model = models.from_config(stage['config']['model'], 10)
  assert summary.model_facts(model, (28, 28, 1))['macs'] == pruned['macs']
  assert stage['derived']['num_params'] == pruned['params'] == tuned['params']
  assert read_json(tmp_path / 'finetune' / 'results.json')['step'] == 8


def test_binary_weights_are_exactly_plus_minus_alpha(data_dir, source, tmp_path):
  _compress(data_dir, source, str(tmp_path), 'binary')
  trained = init_from.read_run(str(tmp_path / 'binary'))
  model = models.from_config(trained.config['model'], 10)
  used = binary.binary_weights(model, trained.variables, (28, 28, 1))
  assert sorted(used) == ['conv2', 'fc1']  # the first and last layer stay float
  for path, kernel in used.items():
    latent = trained.variables['params'][path]['kernel']
    filters = np.abs(kernel).reshape(-1, kernel.shape[-1])
    assert all(np.unique(filters[:, j]).size == 1 for j in range(filters.shape[1]))  # ±α exactly
    alpha = np.abs(latent).reshape(-1, latent.shape[-1]).mean(0)  # XNOR-Net's α = mean |W|
    np.testing.assert_allclose(filters[0], alpha, rtol=1e-5)
    np.testing.assert_array_equal(np.sign(kernel), np.where(latent >= 0, 1, -1))


@pytest.mark.parametrize(
    'method, fields, message',
    [
        ('ptq', {'compression__method': ''}, 'needs --config.compression.method'),
        ('ptq', {'compression__method': 'wavelets'}, 'Unknown compression.method'),
        ('prune', {'pruning__sparsity': 1.2}, r'outside \[0, 1\)'),
        ('ptq', {'compression__bits': 3}, '4 or 8 bits'),
        ('distill', {'distill__teacher': '/nonexistent'}, 'not a training workdir'),
        ('filter_prune', {'compression__fraction': 1.0}, r'outside \(0.0, 1.0\)'),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    data_dir, source, tmp_path, method, fields, message
):
  with pytest.raises(ConfigError, match=message):
    _compress(data_dir, source, str(tmp_path / 'out'), method, **fields)
  assert not os.path.exists(tmp_path / 'out')


def test_a_source_of_another_architecture_is_refused(data_dir, source, tmp_path):
  with pytest.raises(ConfigError, match='trained lenet_caffe'):
    config = _config(data_dir, 'ptq', '--config.model.name=lenet5')
    with config.unlocked():
      config.init_from = source
    run.compress(config, str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')
