"""Metric learning as a task of the trainer: its outputs, resume, devices, and refusals."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import read_bytes, read_json, run_main

import models
from analysis import workdirs
from common.errors import ConfigError
from configs import metric_learning
from train_lib import reporting, train

CONFIG = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs', 'metric_learning.py')


# Seconds of training at LeNet size (the same programs in every test, so compiled once).
SHORT = {
    'total_steps': 8,
    'log_every_steps': 2,
    'eval_every_steps': 4,
    'checkpoint_every_steps': 4,
    'schedule.name': 'constant',
    'schedule.warmup_epochs': 0.0,
    'metric.episodes': 100,
    'metric.verification_pairs': 300,
    'metric.projection': 'pca',
}
LENET = {'name': 'lenet5', 'batch_norm': True, 'embedding_dim': 32}


def _small(data_dir, variant='triplet', **fields):
  config = metric_learning.get_config(variant)
  config.model = ml_collections.ConfigDict({**LENET, 'embedding_classifier': variant == 'softmax'})
  config.dataset.data_dir = data_dir
  config.update_from_flattened_dict({**SHORT, **fields})
  return config


@pytest.mark.parametrize(
    'variant', ['siamese', 'triplet', pytest.param('softmax', marks=pytest.mark.slow)]
)
def test_a_run_leaves_the_scores_the_curves_and_the_embedding_picture(tmp_path, data_dir, variant):
  results = train.train_and_evaluate(_small(data_dir, variant), str(tmp_path))
  assert results['step'] == 8 and results['eval_count'] == 1000
  saved = read_json(tmp_path / 'results.json')
  for key in (
      'eval_heldout_auc',
      'eval_heldout_verification_accuracy',
      'eval_heldout_recall_at_1',
      'eval_heldout_3way_1shot_accuracy',
      'eval_seen_recall_at_1',
  ):
    assert 0.0 <= saved[key] <= 1.0, key
  # Eight steps on seven digit classes already embed the three unseen ones better than chance.
  assert saved['eval_heldout_3way_1shot_accuracy'] > 0.4
  assert saved['eval_heldout_auc'] > 0.55
  rows = reporting.read_metrics(str(tmp_path))
  assert [r['step'] for r in rows if 'eval_heldout_auc' in r] == [4, 8]
  assert ('train_top1' if variant == 'softmax' else 'train_active') in rows[0]
  for picture in ('embedding.png', 'curves.png'):
    assert read_bytes(tmp_path / picture)[:4] == b'\x89PNG'
  assert read_json(tmp_path / 'config.json')['config']['task'] == 'metric_learning'
  facts = workdirs.run_facts(str(tmp_path))  # what --mode=compare plots
  assert facts['metric'] == 'eval_heldout_3way_1shot_accuracy'
  assert facts['top1'] == saved['eval_heldout_3way_1shot_accuracy']


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, data_dir):
  straight = train.train_and_evaluate(_small(data_dir), str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'resumed')
  train.train_and_evaluate(_small(data_dir, total_steps=4), workdir)
  resumed = train.train_and_evaluate(_small(data_dir), workdir)
  assert resumed['resumed_from_step'] == 4
  for key, value in straight.items():
    if key.startswith('eval_') or key == 'train_loss':
      assert resumed[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_eight_devices_mine_the_global_batch_as_one_does(tmp_path, data_dir):
  fields = {**SHORT, 'total_steps': 4, 'log_every_steps': 1}
  one, eight = str(tmp_path / 'one'), str(tmp_path / 'eight')
  train.train_and_evaluate(_small(data_dir, **fields), one)
  done = run_main(
      f'--config={CONFIG}:triplet',
      f'--workdir={eight}',
      f'--config.dataset.data_dir={data_dir}',
      f'--config.model={LENET!r}',
      *[f'--config.{k}={v}' for k, v in fields.items()],
      devices=8,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert read_json(os.path.join(eight, 'config.json'))['derived']['num_devices'] == 8
  losses = lambda w: [r['train_loss'] for r in reporting.read_metrics(w) if 'train_loss' in r]
  np.testing.assert_allclose(losses(eight), losses(one), atol=1e-4)


def test_a_classification_workdir_is_refused_and_left_untouched(tmp_path, data_dir, small_config):
  train.train_and_evaluate(small_config, str(tmp_path))
  before = {n: read_bytes(tmp_path / n) for n in ('config.json', 'results.json', 'metrics.jsonl')}
  with pytest.raises(ConfigError, match='holds a classification run, and this config trains'):
    train.train_and_evaluate(_small(data_dir), str(tmp_path))
  assert before == {n: read_bytes(tmp_path / n) for n in before}


@pytest.mark.parametrize(
    'fields, message',
    [
        ({'model.embedding_dim': 0}, 'set config.model.embedding_dim'),
        ({'metric.loss': 'contrastive', 'metric.mining': 'semi_hard'}, 'does not mine'),
        ({'metric.ways': 4}, '4-way episodes need 4 heldout eval classes'),
        ({'dataset.holdout_classes': (10,)}, r'names \[10\]'),
        ({'task': 'clustering'}, 'Unknown task'),
        ({'schedule.name': 'plateau'}, "'eval_top1' is not an eval result; choose one of eval_"),
    ],
)
def test_bad_metric_configs_stop_before_anything_is_written(tmp_path, data_dir, fields, message):
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(_small(data_dir, **fields), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('name', ['lenet5', 'resnet18', 'googlenet', 'squeezenet1_1', 'xception'])
def test_registered_backbones_become_embedding_networks(name):
  """Any family: the classifier becomes the projection, the output is unit length."""
  native = models.native_input(name)
  model = models.from_config({'name': name, 'embedding_dim': 16}, num_classes=10)
  x = jnp.zeros((1, native.image_size, native.image_size, native.channels))
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  out, variables = jax.eval_shape(lambda: model.init_with_output(rngs, x, train=True))
  assert out.shape == (1, 16)
  assert set(variables['params']) == {'backbone'}
  small = models.from_config({'name': 'lenet5', 'embedding_dim': 16}, num_classes=10)
  y, _ = small.init_with_output(rngs, jnp.ones((3, 28, 28, 1)))
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), 1.0, rtol=1e-5)


def test_a_plateau_schedule_on_a_missing_score_names_the_ones_it_could_watch(tmp_path, data_dir):
  config = _small(data_dir, **{'schedule.name': 'plateau', 'schedule.metric': 'eval_heldout_aucc'})
  with pytest.raises(
      ConfigError, match="'eval_heldout_aucc' is not an eval result.*eval_heldout_auc,"
  ):
    train.train_and_evaluate(config, str(tmp_path))
