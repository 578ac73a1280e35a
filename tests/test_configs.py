"""Configs load through the same flag machinery as main.py, with arguments and overrides."""

import os

import pytest
from conftest import REPO, load_config


def test_argument_and_overrides_reach_the_config():
  path = os.path.join(REPO, 'configs', 'lenet5_mnist.py')
  config = load_config(
      f'--config={path}:fashion_mnist',
      '--config.optimizer.lr=0.01',
      '--config.schedule.decay_epochs=(3,6)',
      '--config.model.activation=sigmoid',
  )
  assert config.dataset.name == 'fashion_mnist'
  assert "normalize('fashion_mnist')" in config.dataset.train_preprocess
  assert config.optimizer.lr == 0.01 and tuple(config.schedule.decay_epochs) == (3, 6)
  assert config.model.activation == 'sigmoid'
  assert load_config(f'--config={path}').dataset.name == 'offline_digits'


def test_configs_are_locked_against_new_fields():
  with pytest.raises(AttributeError, match='Did you mean'):
    load_config(
        f'--config={os.path.join(REPO, "configs", "lenet5_mnist.py")}', '--config.batch_sise=8'
    )


def _config_files():
  folder = os.path.join(REPO, 'configs')
  return sorted(
      n
      for n in os.listdir(folder)
      if n.endswith('.py')
      and 'def get_config' in open(os.path.join(folder, n), encoding='utf-8').read()
  )


@pytest.mark.parametrize('name', _config_files())
def test_every_config_names_fields_the_default_knows(name):
  """Experiment configs override defaults; a misspelt field would silently do nothing."""
  default = load_config(f'--config={os.path.join(REPO, "configs", "default.py")}')
  config = load_config(f'--config={os.path.join(REPO, "configs", name)}')
  known = set(default.to_dict()) | {'model'}
  assert set(config.to_dict()) <= known
  for section in ('dataset', 'optimizer', 'schedule'):
    assert set(config[section]) <= set(default[section]), section
