"""benchmarks.input_feed: images/s of the pipeline and of the train step, and the verdict."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, load_config

from benchmarks import harness
from benchmarks import input_feed as benchmark

LENET = os.path.join(REPO, 'configs', 'lenet5_mnist.py')
FEW = dict(batches=4, steps=3, warmup=2, repeats=2)


def test_verdict_takes_the_side_of_one_and_suggests_what_applies():
  config = load_config(f'--config={LENET}')
  assert benchmark.verdict(3.2, config) == (
      'the pipeline keeps the accelerator fed with 3.2x headroom'
  )
  slow = benchmark.verdict(0.4, config)
  assert slow.startswith('input-bound: the pipeline delivers 40% of what the step consumes; try ')
  assert 'cache=True' not in slow and 'decode_and_random_resized_crop' not in slow  # in place
  assert 'more CPU cores' in slow
  config = load_config(
      f'--config={os.path.join(REPO, "configs", "resnet_imagenet.py")}',
      '--config.dataset.cache=False',
      '--config.dataset.train_preprocess=random_resized_crop(224)|flip_lr',
  )
  slow = benchmark.verdict(0.4, config)
  assert 'cache=True' in slow and 'a fused decode_and_random_resized_crop' in slow


def test_synthetic_batch_has_the_pipeline_batch_layout():
  import numpy as np  # pylint: disable=import-outside-toplevel

  like = {
      'image': np.zeros((4, 8, 8, 3), np.float32),
      'label': np.zeros(4, np.int32),
      'mask': np.zeros(4, bool),
  }
  batch = harness.synthetic_batch(like, num_classes=5)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (v.shape, v.dtype) for k, v in like.items()
  }
  assert batch['mask'].all() and batch['label'].min() >= 0 and batch['label'].max() < 5


def test_lenet_on_the_offline_digits_measures_both_halves(data_dir):
  config = load_config(f'--config={LENET}', f'--config.dataset.data_dir={data_dir}')
  results = benchmark.benchmark(config, **FEW)
  assert results['pipeline_images_per_s'] > 0 and results['step_images_per_s'] > 0
  assert results['pipeline_images_per_s'] >= results['pipeline_images_per_s_mean'] > 0
  assert results['ratio'] == pytest.approx(
      results['pipeline_images_per_s'] / results['step_images_per_s']
  )
  fed = results['verdict'].startswith('the pipeline keeps the accelerator fed')
  assert fed == (results['ratio'] >= 1)
  assert (results['image_shape'], results['batch_size'], results['steps_per_epoch']) == (
      (28, 28, 1),
      64,
      62,
  )
  assert (results['platform'], results['model']) == ('cpu', 'lenet5')
  assert results['tf_data']['cache'] is True
  report = benchmark.format_report(results)
  assert f'ratio pipeline/step: {results["ratio"]:.2f}' in report
  assert f'verdict: {results["verdict"]}' in report


def test_command_line_times_a_mock_cifar10_pipeline(tmp_path):
  out_json = str(tmp_path / 'figures.json')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'benchmarks.input_feed',
          f'--config={os.path.join(REPO, "configs", "resnet_cifar10.py")}',
          '--config.batch_size=16',
          '--mock_examples=96',
          '--no_model',
          '--batches=4',
          '--warmup=2',
          '--repeats=2',
          f'--json={out_json}',
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=180,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  with open(out_json) as f:
    results = json.load(f)
  out = done.stdout
  assert results['image_shape'] == [32, 32, 3] and results['num_train_examples'] == 96
  pipeline = re.search(
      r'^pipeline: ([\d,]+) images/s \(best of 2 windows of 4 batches after 2 ', out, re.M
  ).group(1)
  assert int(pipeline.replace(',', '')) == round(results['pipeline_images_per_s']) > 0
  assert re.search(r'^dataset: cifar10 \(mock data: 96 random examples\)', out, re.M)
  assert re.search(r'^verdict: train step not measured \(--no_model\)$', out, re.M)
  assert results['step_images_per_s'] is None and 'train step' not in out.replace(
      'verdict: train step not measured', ''
  )
