"""AlexNet: the paper's two-tower net (`alexnet_paper`) and torchvision's one-tower `alexnet`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import alexnet_imagenet
from train_lib.state import num_params

# Small widths for the tests that compute; the layer structure is the full model's.
SMALL = {'features': (8, 16, 16, 16, 8), 'hidden_features': 32}
SMALL_INPUT = {'alexnet_paper': 67, 'alexnet': 64}  # both leave 1×1 maps after pool5


@functools.lru_cache
def _small(name):
  """A small-width model of `name`, its variables and a batch of two small images."""
  model = models.create_model(name, num_classes=10, **SMALL)
  size = SMALL_INPUT[name]
  x = jax.random.normal(jax.random.key(1), (2, size, size, 3))
  return model, jax.jit(model.init)(jax.random.key(0), x), x


def _abstract(name, size, **kwargs):
  """Parameter shapes and per-layer output shapes, without computing anything."""
  model = models.create_model(name, num_classes=1000, **kwargs)
  x = jnp.zeros((1, size, size, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  _, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=['intermediates']),
      variables,
      x,
  )
  outputs = {
      k: v['__call__'][0].shape for k, v in state['intermediates'].items() if k != '__call__'
  }
  return variables['params'], outputs


def test_paper_alexnet_has_caffes_parameter_count_maps_and_neurons():
  params, outputs = _abstract('alexnet_paper', 227)
  assert num_params(params) == 60_965_224  # Caffe's bvlc_alexnet (same layout)
  assert [outputs[f'conv{i}'][1] for i in range(1, 6)] == [55, 27, 13, 13, 13]
  # The neuron counts of conv1..conv5 in the paper's §3.5, whose first figure is misprinted
  # there as 253,440 (55 × 55 × 96 = 290,400).
  assert [int(np.prod(outputs[f'conv{i}'])) for i in range(1, 6)] == [
      290_400,
      186_624,
      64_896,
      64_896,
      43_264,
  ]
  assert params['fc6']['kernel'].shape == (6 * 6 * 256, 4096)  # pool5 is 6×6
  # Two towers: conv2, conv4, conv5 see half of the previous layer's maps; conv3 sees all.
  assert params['conv2']['kernel'].shape == (5, 5, 48, 256)
  assert params['conv3']['kernel'].shape == (3, 3, 256, 384)
  assert params['conv4']['kernel'].shape == (3, 3, 192, 384)
  assert params['conv5']['kernel'].shape == (3, 3, 192, 256)


def test_torchvision_alexnet_parameter_count_and_maps():
  params, outputs = _abstract('alexnet', 224)
  assert num_params(params) == 61_100_840  # torchvision (docs/published_figures.md)
  assert [outputs[f'conv{i}'][1:] for i in range(1, 6)] == [
      (55, 55, 64),
      (27, 27, 192),
      (13, 13, 384),
      (13, 13, 256),
      (13, 13, 256),
  ]
  assert params['conv2']['kernel'].shape == (5, 5, 64, 192)  # one tower
  assert params['fc6']['kernel'].shape == (6 * 6 * 256, 4096)
  # Adaptive pooling keeps fc6 at 9,216 inputs for any input size.
  assert _abstract('alexnet', 100)[0]['fc6']['kernel'].shape == (9216, 4096)


@pytest.mark.parametrize('name, smallest', [('alexnet_paper', 67), ('alexnet', 63)])
def test_smallest_input_works_and_smaller_ones_are_refused(name, smallest):
  assert _abstract(name, smallest)[1]['conv5'][1] == 3  # pool5 leaves 1×1
  with pytest.raises(ValueError, match=f'at least {smallest}×{smallest}'):
    _abstract(name, smallest - 1)


def test_paper_initialisation():
  params = _small('alexnet_paper')[1]['params']
  biases = {name: set(np.unique(p['bias']).tolist()) for name, p in params.items()}
  assert biases == {
      'conv1': {0.0},
      'conv2': {1.0},
      'conv3': {0.0},
      'conv4': {1.0},
      'conv5': {1.0},
      'fc6': {1.0},
      'fc7': {1.0},
      'fc8': {0.0},
  }
  assert float(jnp.std(params['conv1']['kernel'])) == pytest.approx(0.01, rel=0.1)


@pytest.mark.parametrize('name', ['alexnet_paper', 'alexnet'])
def test_small_inputs_compute_and_dropout_acts_in_training_only(name):
  model, variables, x = _small(name)
  fc6_inputs = 6 * 6 * 8 if name == 'alexnet' else 8  # adaptive 1×1 → 6×6 pooling, or none
  assert variables['params']['fc6']['kernel'].shape == (fc6_inputs, 32)
  apply = jax.jit(model.apply, static_argnames='train')
  train_a = apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)})
  train_b = apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  eval_out = apply(variables, x)
  assert eval_out.shape == (2, 10) and eval_out.dtype == jnp.float32
  assert np.all(np.isfinite(eval_out)) and not np.allclose(train_a, train_b)
  np.testing.assert_array_equal(eval_out, apply(variables, x))
  # With zero biases a ReLU/max/avg-pool net is positively homogeneous, f(2x) = 2 f(x);
  # the paper's LRN breaks that (at activations large enough for its α term to count),
  # torchvision's LRN-free net keeps it.
  no_bias = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.zeros_like(p) if path[-1].key == 'bias' else p, variables
  )
  big = 1000 * x
  ratio = np.asarray(apply(no_bias, 2 * big) / apply(no_bias, big))
  assert np.allclose(ratio, 2.0, rtol=1e-3) == (name == 'alexnet')


def test_config_variants_use_their_input_size_and_the_papers_recipe():
  paper, tv = alexnet_imagenet.get_config(), alexnet_imagenet.get_config('alexnet')
  assert (paper.model.name, tv.model.name) == ('alexnet_paper', 'alexnet')
  assert 'random_crop(227)' in paper.dataset.train_preprocess
  assert 'ten_crop(227)' in paper.dataset.eval_preprocess
  assert "pca_lighting(0.1, 'imagenet')" in paper.dataset.train_preprocess
  assert 'center_crop(224)' in tv.dataset.eval_preprocess
  assert (
      paper.optimizer.lr,
      paper.optimizer.momentum,
      paper.optimizer.weight_decay,
      paper.batch_size,
      paper.num_epochs,
  ) == (0.01, 0.9, 5e-4, 128, 90)
  assert (paper.schedule.name, paper.schedule.decay_factor, paper.schedule.max_reductions) == (
      'plateau',
      0.1,
      3,
  )
