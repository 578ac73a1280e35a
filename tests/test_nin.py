"""Network in Network: parameter counts, map sizes, Caffe pooling, and the CIFAR model run."""

import functools

import jax
import jax.numpy as jnp
import model_testing
import numpy as np
import pytest

import models
from train_lib.state import num_params


def _shapes(name, size, num_classes):
  return model_testing.shapes(name, size, batch=2, num_classes=num_classes)


def test_imagenet_nin_parameter_count():
  # Weights + biases of the Caffe nin_imagenet layers (k·k·in·out + out):
  #   conv1 11·11·3·96+96 = 34,944;        cccp1, cccp2 96·96+96 = 9,312 each
  #   conv2 5·5·96·256+256 = 614,656;      cccp3, cccp4 256·256+256 = 65,792 each
  #   conv3 3·3·256·384+384 = 885,120;     cccp5, cccp6 384·384+384 = 147,840 each
  #   conv4 3·3·384·1024+1024 = 3,539,968; cccp7 1024·1024+1024 = 1,049,600
  #   cccp8 (head) 1024·1000+1000 = 1,025,000
  # Sum 7,595,176: ×4 bytes = 29.0 MiB, the "29MB" snapshot on the model zoo page.
  variables, _ = _shapes('nin', 224, 1000)
  assert num_params(variables['params']) == 7_595_176


def test_cifar_nin_parameter_count():
  # conv1 5·5·3·192+192 = 14,592;   cccp1 192·160+160 = 30,880;  cccp2 160·96+96 = 15,456
  # conv2 5·5·96·192+192 = 460,992; cccp3, cccp4 192·192+192 = 37,056 each
  # conv3 3·3·192·192+192 = 331,968; cccp5 37,056;  cccp6 (head) 192·10+10 = 1,930
  # Sum 966,986: the ≈0.97 M usually quoted for this model.
  variables, _ = _shapes('nin_cifar10', 32, 10)
  assert num_params(variables['params']) == 966_986
  # Only the head depends on the classes: 192·90 + 90 more for CIFAR-100.
  variables, _ = _shapes('nin_cifar10', 32, 100)
  assert num_params(variables['params']) == 966_986 + 192 * 90 + 90


def test_imagenet_nin_map_sizes():
  # Caffe's ceil-mode pools: 54 → 27 → 13 → 6 (floor mode would give 26 → 12 → 5).
  _, outputs = _shapes('nin', 224, 1000)
  assert outputs['conv1'] == (2, 54, 54, 96) and outputs['cccp2'] == (2, 54, 54, 96)
  assert outputs['conv2'] == (2, 27, 27, 256)
  assert outputs['conv3'] == (2, 13, 13, 384)
  assert outputs['conv4'] == (2, 6, 6, 1024) and outputs['cccp7'] == (2, 6, 6, 1024)
  assert outputs['head'] == (2, 6, 6, 1000)  # one map per class, then global average pooling


def test_cifar_nin_map_sizes():
  _, outputs = _shapes('nin_cifar10', 32, 10)
  assert [outputs[k][1:] for k in ('conv1', 'cccp1', 'cccp2')] == [
      (32, 32, 192),
      (32, 32, 160),
      (32, 32, 96),
  ]
  assert outputs['conv2'] == (2, 16, 16, 192)
  assert outputs['conv3'] == (2, 8, 8, 192)
  assert outputs['head'] == (2, 8, 8, 10)
  assert outputs['Dropout_0'] == (2, 16, 16, 96) and outputs['Dropout_1'] == (2, 8, 8, 192)


def test_cifar_nin_runs_with_dropout_in_training_only():
  model = models.create_model('nin_cifar10', num_classes=10)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0, impl='rbg'), x)  # rbg compiles faster
  # He (fan_in) init: conv2 is 5·5·96 → 192.
  assert float(jnp.std(variables['params']['conv2']['kernel'])) == pytest.approx(
      (2 / (5 * 5 * 96)) ** 0.5, rel=0.05
  )
  assert 'batch_stats' not in variables

  apply = jax.jit(
      functools.partial(model.apply, capture_intermediates=True, mutable=['intermediates']),
      static_argnames='train',
  )
  logits, state = apply(variables, x)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  head = state['intermediates']['head']['__call__'][0]
  # Logits are the class maps averaged globally; ReLU on the maps (as Caffe) keeps them ≥ 0.
  np.testing.assert_allclose(logits, jnp.mean(jax.nn.relu(head), axis=(1, 2)), rtol=1e-5)
  assert float(logits.min()) >= 0.0 and float(logits.std()) > 0.0
  np.testing.assert_array_equal(apply(variables, x)[0], logits)
  a, _ = apply(variables, x, train=True, rngs={'dropout': jax.random.key(1, impl='rbg')})
  b, _ = apply(variables, x, train=True, rngs={'dropout': jax.random.key(2, impl='rbg')})
  assert not np.allclose(a, b) and not np.allclose(a, logits)
