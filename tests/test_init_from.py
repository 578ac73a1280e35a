"""Starting from another run's weights (config.init_from) and distilling from a teacher run:
what is taken, what is left fresh, what is refused before any work, and that the source run is
only read."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_lenet5_config

from common.errors import ConfigError
from train_lib import init_from, losses, train


def _config(data_dir, **fields):
  config = small_lenet5_config(data_dir)
  config.model.batch_norm = False  # eval and train mode compute the same function
  for key, value in fields.items():
    config[key] = value
  return config


def _listing(path):
  return sorted(
      (os.path.relpath(os.path.join(root, n), path), os.path.getmtime(os.path.join(root, n)))
      for root, _, names in os.walk(path)
      for n in names
  )


@pytest.fixture(scope='module')
def source(data_dir, tmp_path_factory):
  """A trained 12-step lenet5 run."""
  workdir = str(tmp_path_factory.mktemp('source'))
  train.train_and_evaluate(_config(data_dir), workdir)
  return workdir


def _frozen(config):
  """No learning: the weights after one step are the weights the run started from."""
  config.optimizer.lr = 0.0
  config.optimizer.weight_decay = 0.0
  config.total_steps = 1
  return config


def test_a_run_starts_from_the_source_weights_except_the_excluded(data_dir, source, tmp_path):
  before = _listing(source)
  config = _frozen(_config(data_dir, init_from=source, init_from_exclude='head/.*'))
  train.train_and_evaluate(config, str(tmp_path / 'a'))
  theirs = init_from.read_run(source).variables['params']
  ours = init_from.read_run(str(tmp_path / 'a')).variables['params']
  for layer in ('conv1', 'conv2', 'fc1', 'fc2'):
    np.testing.assert_array_equal(ours[layer]['kernel'], theirs[layer]['kernel'])
  assert not np.allclose(ours['head']['kernel'], theirs['head']['kernel'])  # left fresh
  assert _listing(source) == before  # only read


def test_init_from_is_refused_before_any_work(data_dir, source, tmp_path):
  missing = _config(data_dir, init_from=str(tmp_path / 'nowhere'))
  with pytest.raises(ConfigError, match='not a training workdir'):
    train.train_and_evaluate(missing, str(tmp_path / 'b'))
  other = _config(data_dir, init_from=source)
  other.model = type(other.model)({'name': 'lenet_caffe'})
  with pytest.raises(ConfigError, match='other shapes'):
    train.train_and_evaluate(other, str(tmp_path / 'c'))
  assert not os.path.exists(tmp_path / 'b') and not os.path.exists(tmp_path / 'c')


def test_soft_target_loss_is_t2_kl_and_its_gradient_t_times_q_minus_p():
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, 5, 10)).astype(np.float32)
  t = 4.0
  p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
  q = np.exp(student / t) / np.exp(student / t).sum(-1, keepdims=True)
  loss = losses.soft_target_loss(jnp.asarray(student), jnp.asarray(teacher), t)
  np.testing.assert_allclose(loss, t * t * (p * np.log(p / q)).sum(-1), rtol=1e-5)
  assert float(losses.soft_target_loss(teacher, teacher, t).max()) == pytest.approx(0, abs=1e-6)
  grad = jax.grad(lambda s: losses.soft_target_loss(s, jnp.asarray(teacher), t).sum())(student)
  np.testing.assert_allclose(grad, t * (q - p), atol=1e-5)  # Hinton et al.'s ∂C/∂z, times T²


def test_a_student_equal_to_its_teacher_has_zero_soft_loss(data_dir, source, tmp_path):
  config = _frozen(_config(data_dir, init_from=source))
  config.distill.teacher = source
  config.distill.soft_weight = 1.0
  results = train.train_and_evaluate(config, str(tmp_path / 'd'))
  assert results['train_loss'] == pytest.approx(0.0, abs=1e-5)
  config.distill.soft_weight = 0.0  # the labels' loss alone: what the source reached
  results = train.train_and_evaluate(config, str(tmp_path / 'e'))
  assert results['train_loss'] > 0.05


def test_a_teacher_of_other_data_is_refused(data_dir, source, tmp_path):
  config = _config(data_dir)
  config.distill.teacher = source
  config.dataset.channels = 3  # RGB digits: the teacher saw grey ones
  with pytest.raises(ConfigError, match='same data'):
    train.train_and_evaluate(config, str(tmp_path / 'f'))
  config.distill.teacher = str(tmp_path / 'nowhere')
  with pytest.raises(ConfigError, match='distill.teacher'):
    train.train_and_evaluate(config, str(tmp_path / 'g'))
