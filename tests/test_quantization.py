"""Quantization with qwix: quantization-aware training (models/quantized.py) and post-training
int8 quantization with calibrated activation scales (compression/quantization.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_testing import equations, operand_dtypes

import models
from common.errors import ConfigError
from compression import encoding, quantization
from models import convolutions, quantized


def fake_quantize(x: np.ndarray, bits: int, axis: int) -> np.ndarray:
  """x rounded symmetrically to `bits` with one absmax scale per index along `axis`, as qwix
  does it: scale = absmax / (2^(bits-1) - 0.5), values clipped to the int range."""
  reduce = tuple(a for a in range(x.ndim) if a != axis)
  scale = np.abs(x).max(axis=reduce, keepdims=True) / (2 ** (bits - 1) - 0.5)
  q = np.clip(np.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
  return q * scale


def positive_peaks(x: np.ndarray, axis: int) -> np.ndarray:
  """x with each slice along `axis` negated where its largest magnitude is negative.

  The absmax element lands on the rounding tie ±(2^(bits-1) - 0.5), and XLA's division may
  leave it a hair either side: a negative peak becomes -2^(bits-1) or -2^(bits-1) + 1 by
  chance, a positive one 2^(bits-1) - 1 either way. Positive peaks make the rounding exact.
  """
  flat = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
  signs = np.sign(flat[np.arange(len(flat)), np.abs(flat).argmax(1)])
  return x * np.expand_dims(signs, [a for a in range(x.ndim) if a != axis])


class ConvDense(nn.Module):
  """conv 4@3×3 → relu → dense 3: small enough to quantize by hand."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(4, (3, 3), padding='VALID', name='conv')(x))
    return nn.Dense(3, name='fc')(x.reshape(x.shape[0], -1))


def by_hand(params, x, bits, activations):
  """ConvDense with weights fake-quantized per output channel at `bits` and, if `activations`,
  each layer's input at int8 per example: the QAT forward pass, computed without qwix."""
  conv, fc = params['conv'], params['fc']

  def act(a):
    return fake_quantize(a, 8, axis=0) if activations else a

  xq = act(np.asarray(x))
  wq = fake_quantize(np.asarray(conv['kernel']), bits, axis=3)
  y = jax.lax.conv_general_dilated(
      xq, wq, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  y = np.maximum(np.asarray(y) + np.asarray(conv['bias']), 0).reshape(x.shape[0], -1)
  return act(y) @ fake_quantize(np.asarray(fc['kernel']), bits, axis=1) + fc['bias']


def with_positive_peaks(params):
  """Kernels (conv HWIO, dense [in, out]) with positive_peaks per output channel."""
  return {
      name: {
          **layer,
          'kernel': positive_peaks(np.asarray(layer['kernel']), -1 % layer['kernel'].ndim),
      }
      for name, layer in params.items()
  }


@pytest.fixture(scope='module')
def lenet():
  """A random lenet5, its variables and 48 random digits-sized images."""
  model = models.create_model('lenet5', num_classes=10)
  images = np.random.default_rng(0).normal(size=(48, 28, 28, 1)).astype(np.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images[:1])
  return model, {'params': with_positive_peaks(variables['params'])}, images


@pytest.fixture(scope='module')
def ptq8(lenet):
  model, variables, images = lenet
  return quantization.post_training_quantize(model, variables, [images[:16], images[16:32]])


def logits_error(model, variables, qmodel, qvariables, images):
  """(relative L2 error of the quantized logits, fraction of images whose argmax agrees)."""
  y = np.asarray(model.apply(variables, images, train=False))
  yq = np.asarray(jax.jit(lambda v, x: qmodel.apply(v, x, train=False))(qvariables, images))
  return np.linalg.norm(yq - y) / np.linalg.norm(y), np.mean(yq.argmax(-1) == y.argmax(-1))


# --- Quantization-aware training. ---------------------------------------------------------------


@pytest.mark.parametrize('bits,activations', [(8, True), (4, True), (8, False)])
def test_qat_forward_is_the_fake_quantized_network(bits, activations):
  model = ConvDense()
  x = positive_peaks(np.random.default_rng(1).normal(size=(5, 6, 6, 2)).astype(np.float32), 0)
  variables = {'params': with_positive_peaks(model.init(jax.random.key(0), x)['params'])}
  qat = quantized.quantization_aware(model, bits, activations=activations)
  got = jax.jit(qat.apply)(variables, x)
  expected = by_hand(variables['params'], x, bits, activations)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  float_out = model.apply(variables, x)
  assert not np.allclose(got, float_out, atol=1e-4)  # the rounding did change something


class NarrowThenDepthwise(nn.Module):
  """The two convs models/fast_conv.py rewrites on the CPU: 1 → 6 channels, then depthwise."""

  @nn.compact
  def __call__(self, x, train=False):
    x = convolutions.grouped_conv(6, 3, name='narrow')(x)
    return convolutions.grouped_conv(6, 3, groups=6, name='depthwise')(x)


def test_qat_quantizes_the_convs_fast_conv_rewrites():
  model = NarrowThenDepthwise()
  x = jnp.ones((2, 8, 8, 1))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  qat = quantized.quantization_aware(model, 8)
  jaxpr = jax.make_jaxpr(qat.apply)(variables, x)
  convs = [e for e in equations(jaxpr.jaxpr) if e.primitive.name == 'conv_general_dilated']
  assert len(convs) == 2  # qwix's, not the CPU rewrites' slices and products
  assert operand_dtypes(jaxpr.jaxpr) == {jnp.dtype(jnp.int8)}


@pytest.mark.parametrize('name,image', [('lenet5', 28), ('lenet5_1998', 32)])
def test_qat_keeps_the_float_variables(name, image):
  # lenet5_1998's connection-table conv is not an nn.Conv: it stays float instead of failing.
  model = models.create_model(name, num_classes=10)
  x = jnp.zeros((2, image, image, 1))
  float_tree = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  qat_tree = jax.eval_shape(
      lambda: quantized.quantization_aware(model, 8).init(jax.random.key(0), x, train=False)
  )
  assert jax.tree.map(lambda a: (a.shape, a.dtype), qat_tree) == jax.tree.map(
      lambda a: (a.shape, a.dtype), float_tree
  )


def test_qat_logits_are_float_logits_within_quantization_error(lenet):
  model, variables, images = lenet
  error, agree = logits_error(
      model, variables, quantized.quantization_aware(model, 8), variables, images
  )
  assert 0 < error < 0.08 and agree >= 0.8


def test_qat_trains_under_jit_with_batch_stats():
  model = models.create_model('lenet5', num_classes=10, batch_norm=True)
  qat = quantized.quantization_aware(model, 8)
  rng = np.random.default_rng(2)
  images = rng.normal(size=(16, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 10, 16)
  variables = model.init(jax.random.key(0), images, train=False)

  def loss_fn(params, batch_stats):
    logits, updates = qat.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True, mutable=['batch_stats']
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, updates['batch_stats']

  @jax.jit
  def step(params, batch_stats):
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), new_stats, loss, grads

  params, stats = variables['params'], variables['batch_stats']
  new_params, new_stats, loss, grads = step(params, stats)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(grad)) and np.any(grad != 0), jax.tree_util.keystr(path)
  assert not jax.tree.all(jax.tree.map(np.array_equal, new_stats, stats))  # BN stats moved
  assert loss_fn(new_params, stats)[0] < loss


def test_bad_bits_is_a_config_error(lenet):
  model, variables, images = lenet
  with pytest.raises(ConfigError, match='4, 8'):
    quantized.quantization_aware(model, 3)
  with pytest.raises(ConfigError, match='4, 8'):
    quantization.post_training_quantize(model, variables, [images], bits=16)
  with pytest.raises(ConfigError, match='calibration batch'):
    quantization.post_training_quantize(model, variables, [])


# --- Post-training quantization. ----------------------------------------------------------------


def test_ptq_kernels_are_int8_per_output_channel(lenet, ptq8):
  _, variables, _ = lenet
  _, qvariables = ptq8
  for layer, axis in [('conv1', 3), ('conv2', 3), ('fc1', 1), ('head', 1)]:
    kernel = qvariables['params'][layer]['kernel'].array
    assert kernel.qvalue.dtype == jnp.int8
    w = np.asarray(variables['params'][layer]['kernel'])
    deq = np.asarray(kernel.qvalue, np.float32) * np.asarray(kernel.scale)
    np.testing.assert_allclose(deq, fake_quantize(w, 8, axis=axis), rtol=1e-6, atol=1e-7)


def test_ptq_input_scale_is_the_calibration_mean_absmax(lenet, ptq8):
  # conv1 reads the images: its scale is the mean over batches of each batch's mean per-image
  # absmax, over int8's 127.5.
  _, _, images = lenet
  _, qvariables = ptq8
  scale = qvariables['params']['conv1']['conv_general_dilated0_lhs_scale'].array
  per_batch = [np.abs(b).max(axis=(1, 2, 3)).mean() for b in (images[:16], images[16:32])]
  np.testing.assert_allclose(np.asarray(scale).ravel(), [np.mean(per_batch) / 127.5], rtol=1e-5)


def test_ptq_logits_are_close_and_int4_is_worse(lenet, ptq8):
  model, variables, images = lenet
  error8, agree8 = logits_error(model, variables, *ptq8, images[32:])
  assert 0 < error8 < 0.1 and agree8 >= 0.8
  qmodel4, qvariables4 = quantization.post_training_quantize(model, variables, [images[:16]], 4)
  fc1 = qvariables4['params']['fc1']['kernel']
  assert fc1.array.qvalue.dtype == jnp.int4
  assert encoding.stored_bytes(fc1) == 400 * 120 // 2 + 120 * 4  # packed, two per byte
  error4, _ = logits_error(model, variables, qmodel4, qvariables4, images[32:])
  assert error4 > 2 * error8


def test_ptq_program_contracts_int8_operands(lenet, ptq8):
  _, _, images = lenet
  qmodel, qvariables = ptq8
  lowered = jax.jit(lambda v, x: qmodel.apply(v, x, train=False)).lower(qvariables, images)
  text = lowered.as_text()
  contractions = [
      line for line in text.splitlines() if 'stablehlo.convolution' in line or 'dot_general' in line
  ]
  assert len(contractions) == 5  # conv1, conv2, fc1, fc2, head
  assert all('xi8>' in line and 'xi32>' in line for line in contractions)


def test_quantized_bytes_count_int8_kernels_and_float_scales(lenet, ptq8):
  _, variables, _ = lenet
  _, qvariables = ptq8
  conv2 = qvariables['params']['conv2']
  # 5·5·6·16 int8 weights + 16 float32 scales, against 4 bytes per float weight.
  assert encoding.stored_bytes(conv2['kernel']) == 2400 + 16 * 4
  assert encoding.stored_bytes(variables['params']['conv2']['kernel']) == 2400 * 4
  kernels = [qvariables['params'][k]['kernel'] for k in ('conv1', 'conv2', 'fc1', 'fc2', 'head')]
  float_kernels = [
      variables['params'][k]['kernel'] for k in ('conv1', 'conv2', 'fc1', 'fc2', 'head')
  ]
  ratio = encoding.stored_bytes(kernels) / encoding.stored_bytes(float_kernels)
  assert 0.25 < ratio < 0.26
  # Everything else (biases, five activation scales) stays float32.
  biases = sum(np.asarray(variables['params'][k]['bias']).nbytes for k in variables['params'])
  assert encoding.stored_bytes(qvariables) == encoding.stored_bytes(kernels) + biases + 5 * 4
