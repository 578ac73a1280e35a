"""Every family config, with every argument, trains its model the way main.py does.

The default run checks each (config, argument) down to the model's forward pass with
`jax.eval_shape` (no compute), and trains a few cheap ones for two steps; `pytest -m slow`
trains every one of them for two steps and evaluates it, on mock or offline data.
"""

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import REPO, load_config

import configs
import input_pipeline
import models
from configs import recipes
from train_lib import train

# configs/pretrained.py's 41 variants are registered models at their native inputs, which
# test_every_model traces and the conversion tests run: its default carries it through every
# dataset here.
ONE_VARIANT = ('pretrained',)
CASES = [
    (name, arg)
    for name, (variants, datasets) in configs.arguments().items()
    for arg in recipes.all_args(variants[:1] if name in ONE_VARIANT else variants, datasets)
]
CHEAP = {
    ('lenet5_mnist', 'lenet5_1998'),
    ('nin_cifar10', 'nin_cifar10'),
}  # offline and CIFAR data; ImageNet's ten-view eval is tested in test_steps.py and under -m slow


def _load(config_name, arg, *overrides):
  """The config as main.py sees it: the file, its argument and command-line overrides."""
  return load_config(
      f'--config={os.path.join(REPO, "configs", config_name + ".py")}:{arg}', *overrides
  )


def _smoke_config(config_name, arg, data_dir):
  """Two steps at batch 2 and one small eval, on the offline digits' first images or mock data."""
  overrides = [
      '--config.total_steps=2',
      '--config.batch_size=2',
      '--config.eval_batch_size=2',
      '--config.log_every_steps=1',
      '--config.dataset.shuffle_buffer=8',
  ]
  config = _load(config_name, arg, *overrides)
  if config.task == 'metric_learning':  # P = 2 classes of K = 2; 2-way 1-shot on what mocks hold
    config.update_from_flattened_dict(
        {
            'batch_size': 4,
            'metric.examples_per_class': 2,
            'metric.ways': 2,
            'metric.queries': 1,
            'metric.episodes': 10,
            'metric.verification_pairs': 10,
            'metric.projection': 'pca',
        }
    )
  if config.dataset.name == 'offline_digits':
    config.dataset.data_dir = data_dir
    config.dataset.train_split, config.dataset.eval_split = 'train[:8]', 'test[:4]'
  if config.compression.method:  # --mode=compress reads these runs, prunes while fine-tuning
    config.init_from, config.distill.teacher = '', ''
    config.pruning.sparsity, config.pruning.layer_sparsity = 0.0, ''
  return config


@functools.cache
def _pipeline_shape(dataset, train_preprocess, eval_preprocess, data_dir):
  """(train image shape, eval image shape, classes) that the config's input pipeline yields."""
  spec = _load('default', '').dataset
  spec.unlock()
  spec.update(
      name=dataset,
      train_preprocess=train_preprocess,
      eval_preprocess=eval_preprocess,
      data_dir=data_dir if dataset == 'offline_digits' else '',
  )
  with tfds.testing.mock_data(num_examples=4):
    data = input_pipeline.InputPipeline(spec, global_batch_size=2, eval_batch_size=2, seed=0)
    train_shape = next(data.train_batches(0))['image'].shape[1:]
    eval_shape = next(iter(data.eval_batches()))['image'].shape[1:]
  return train_shape, eval_shape, data.num_classes


def test_every_registered_model_is_reachable_from_a_config():
  reachable = {_load(name, arg).model.name for name, arg in CASES}
  assert reachable == set(models.list_models())


@pytest.mark.parametrize('config_name, arg', CASES, ids=[f'{n}:{a}' for n, a in CASES])
def test_config_model_takes_its_input_and_gives_one_logit_per_class(config_name, arg, data_dir):
  config = _load(config_name, arg)
  d = config.dataset
  train_shape, eval_shape, classes = _pipeline_shape(
      d.name, d.train_preprocess, d.eval_preprocess, data_dir
  )
  assert eval_shape[-3:] == train_shape, 'training and evaluation must feed the same image size'
  assert len(eval_shape) == 3 or 'ten_crop' in d.eval_preprocess  # [views, H, W, C]
  model = models.from_config(config.model, classes)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  logits, _ = jax.eval_shape(
      functools.partial(model.init_with_output, train=True), rngs, jnp.zeros((2, *train_shape))
  )
  width = config.model.get('embedding_dim') or classes  # metric learning: the embedding
  per_pixel = models.entry(config.model.name).per_pixel  # segmentation: a score map per class
  assert logits.shape == ((2, *train_shape[:2], width) if per_pixel else (2, width))
  assert logits.dtype == jnp.float32


def _train_two_steps(config_name, arg, data_dir, workdir):
  config = _smoke_config(config_name, arg, data_dir)
  metric = config.task == 'metric_learning'
  if metric and config.dataset.name == 'omniglot':
    pytest.skip('mock data draws 1,623 classes at random: too few examples per class for P×K')
  examples = 200 if metric else 4  # metric learning: enough per class for pairs and episodes
  try:
    with tfds.testing.mock_data(num_examples=examples):
      results = train.train_and_evaluate(config, str(workdir))
  finally:
    shutil.rmtree(workdir, ignore_errors=True)  # full-size checkpoints are large
  assert results['step'] == 2 and results['eval_count'] == examples
  score = 'eval_seen_recall_at_1' if metric else 'eval_loss'
  assert np.isfinite(results['train_loss']) and np.isfinite(results[score])


@pytest.mark.parametrize(
    'config_name, arg', sorted(CHEAP), ids=[f'{n}:{a}' for n, a in sorted(CHEAP)]
)
def test_cheap_configs_train_two_steps(config_name, arg, data_dir, tmp_path):
  _train_two_steps(config_name, arg, data_dir, tmp_path / 'run')


@pytest.mark.slow
@pytest.mark.parametrize('config_name, arg', CASES, ids=[f'{n}:{a}' for n, a in CASES])
def test_every_config_trains_two_steps(config_name, arg, data_dir, tmp_path):
  _train_two_steps(config_name, arg, data_dir, tmp_path / 'run')
