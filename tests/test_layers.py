"""Shared layers against naive references (LRN, PyTorch/Caffe pooling, ConvNormAct), and the
models' BatchNorm fields reaching every BatchNorm."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from common.errors import ConfigError
from models import layers


def _naive_lrn(x, size, k, alpha, beta):
  """The AlexNet paper's §3.3 formula, one channel at a time."""
  channels = x.shape[-1]
  out = np.empty_like(x)
  for c in range(channels):
    lo, hi = max(0, c - size // 2), min(channels - 1, c + size // 2)
    out[..., c] = x[..., c] / (k + alpha * np.sum(x[..., lo : hi + 1] ** 2, axis=-1)) ** beta
  return out


@pytest.mark.parametrize('alpha_over_size', [False, True])
def test_local_response_norm_matches_the_paper_formula(alpha_over_size):
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 3, 9))) * 30  # large: α matters
  got = layers.local_response_norm(jnp.asarray(x), alpha_over_size=alpha_over_size)
  alpha = 1e-4 / 5 if alpha_over_size else 1e-4
  want = _naive_lrn(x, 5, 2.0, alpha, 0.75)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert not np.allclose(want, x / 2.0**0.75, rtol=1e-3)  # the neighbours' sum does matter


def test_local_response_norm_gradient_matches_the_naive_one():
  x = jax.random.normal(jax.random.key(1), (1, 2, 2, 6)) * 30
  loss = lambda f: lambda v: jnp.sum(jnp.sin(f(v)))
  naive = lambda v: jnp.stack(
      [
          v[..., c] / (2.0 + 1e-4 * jnp.sum(v[..., max(0, c - 2) : c + 3] ** 2, -1)) ** 0.75
          for c in range(6)
      ],
      -1,
  )
  np.testing.assert_allclose(
      jax.grad(loss(layers.local_response_norm))(x), jax.grad(loss(naive))(x), rtol=1e-5, atol=1e-7
  )


@pytest.mark.parametrize(
    'size, window, stride, padding',
    [
        (112, 3, 2, 0),
        (56, 3, 2, 0),
        (14, 2, 2, 0),
        (13, 3, 2, 0),
        (55, 3, 2, 0),
        (7, 3, 1, 1),
        (28, 3, 2, 1),
    ],
)
def test_ceil_mode_pooling_has_pytorchs_output_size(size, window, stride, padding):
  out = math.ceil((size + 2 * padding - window) / stride) + 1
  if (out - 1) * stride >= size + padding:  # PyTorch drops a window that starts in the padding
    out -= 1
  x = jnp.ones((1, size, size, 1))
  assert layers.pool(x, 'max', window, stride, padding, ceil_mode=True).shape[1] == out
  floor = (size + 2 * padding - window) // stride + 1
  assert layers.pool(x, 'max', window, stride, padding).shape[1] == floor


def test_max_pool_padding_never_wins_and_avg_pool_counts_it():
  x = -jnp.ones((1, 2, 2, 1))
  np.testing.assert_array_equal(layers.pool(x, 'max', 3, 1, 1), -1.0)  # pads with -inf
  corner = layers.pool(jnp.ones((1, 2, 2, 1)), 'avg', 3, 1, 1)[0, 0, 0, 0]
  assert float(corner) == pytest.approx(4 / 9)  # PyTorch's count_include_pad=True


CONV_TOLERANCE = dict(rtol=1e-6, atol=1e-6)


def _conv(x, kernel, strides, padding):
  """A plain bias-free nn.Conv with the given kernel and explicit padding: the reference. Narrow
  convs through ConvNormAct are a matrix product on the CPU (models/fast_conv.py), summed in
  another order: compare with CONV_TOLERANCE."""
  conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], strides, padding=padding, use_bias=False)
  return conv.apply({'params': {'kernel': kernel}}, x)


def test_conv_norm_act_pads_as_pytorch_by_default_and_as_keras_with_same():
  # A 3×3 stride-2 conv on an even 8×8 map: PyTorch's padding=1 pads one row and column on
  # every side; Keras's 'SAME' needs one in all, and puts it at the bottom and right.
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2))
  torch_rule = layers.ConvNormAct(4, 3, 2, norm=False, act=None)
  keras_rule = layers.ConvNormAct(4, 3, 2, padding='SAME', norm=False, act=None)
  variables = torch_rule.init(jax.random.key(1), x)
  kernel = variables['params']['conv']['kernel']
  torch_out, keras_out = torch_rule.apply(variables, x), keras_rule.apply(variables, x)
  assert torch_out.shape == keras_out.shape == (1, 4, 4, 4)
  np.testing.assert_allclose(torch_out, _conv(x, kernel, 2, [(1, 1), (1, 1)]), **CONV_TOLERANCE)
  np.testing.assert_allclose(keras_out, _conv(x, kernel, 2, [(0, 1), (0, 1)]), **CONV_TOLERANCE)
  assert not np.allclose(torch_out, keras_out, atol=1e-3)  # the windows sit one pixel apart


def test_conv_norm_act_default_padding_keeps_factorised_kernels_same_size():
  # Inception's 1×7: k // 2 per axis pads 0 rows and 3 columns, as padding=(0, 3) does.
  x = jax.random.normal(jax.random.key(0), (1, 5, 9, 3))
  unit = layers.ConvNormAct(4, (1, 7), norm=False, act=None)
  variables = unit.init(jax.random.key(1), x)
  kernel = variables['params']['conv']['kernel']
  assert kernel.shape == (1, 7, 3, 4)
  out = unit.apply(variables, x)
  assert out.shape == (1, 5, 9, 4)
  np.testing.assert_allclose(out, _conv(x, kernel, 1, [(0, 0), (3, 3)]), **CONV_TOLERANCE)
  explicit = layers.ConvNormAct(4, (1, 7), padding=(0, 3), norm=False, act=None)
  np.testing.assert_array_equal(explicit.apply(variables, x), out)


def test_conv_norm_act_groups_split_the_kernel_and_stride_as_pytorch():
  x = jnp.zeros((2, 9, 9, 4))
  grouped = layers.ConvNormAct(8, 3, 2, groups=2)
  variables = grouped.init(jax.random.key(1), x)
  assert variables['params']['conv']['kernel'].shape == (3, 3, 2, 8)  # 4/2 inputs per group
  assert grouped.apply(variables, x).shape == (2, 5, 5, 8)  # (9 + 2 - 3) // 2 + 1
  depthwise = layers.ConvNormAct(4, 3, groups=4)
  assert depthwise.init(jax.random.key(1), x)['params']['conv']['kernel'].shape == (3, 3, 1, 4)


def test_conv_norm_act_bias_has_pytorchs_default_bound():
  # PyTorch: U(±1/sqrt(fan_in)), fan_in = k·k·in/groups = 3·3·8/2 = 36, so ±1/6.
  x = jnp.zeros((1, 5, 5, 8))
  unit = layers.ConvNormAct(256, 3, groups=2, use_bias=True, norm=False)
  bias = np.asarray(unit.init(jax.random.key(0), x)['params']['conv']['bias'])
  assert bias.shape == (256,)
  assert 0.95 / 6 < np.abs(bias).max() <= 1 / 6
  assert 'bias' not in layers.ConvNormAct(4).init(jax.random.key(0), x)['params']['conv']
  zero = layers.ConvNormAct(4, use_bias=True, bias_init=nn.initializers.zeros, norm=False)
  np.testing.assert_array_equal(zero.init(jax.random.key(0), x)['params']['conv']['bias'], 0.0)


def test_conv_norm_act_batch_norm_uses_its_momentum_and_epsilon():
  x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2)) * 3 + 1
  unit = layers.ConvNormAct(3, 1, bn_momentum=0.7, bn_epsilon=0.5, act=None)
  variables = unit.init(jax.random.key(1), x)
  np.testing.assert_array_equal(variables['batch_stats']['bn']['mean'], 0.0)
  out, updates = unit.apply(variables, x, train=True, mutable=['batch_stats'])
  conv = np.einsum('nhwc,co->nhwo', x, variables['params']['conv']['kernel'][0, 0])
  mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  # One step from the initial statistics (0, 1) keeps `momentum` of them.
  np.testing.assert_allclose(updates['batch_stats']['bn']['mean'], 0.3 * mean, rtol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['bn']['var'], 0.7 + 0.3 * var, rtol=1e-5)
  np.testing.assert_allclose(out, (conv - mean) / np.sqrt(var + 0.5), rtol=1e-4, atol=1e-5)
  no_scale = layers.ConvNormAct(3, 1, bn_scale=False)  # Keras's and TF-slim's BN: no γ
  assert set(no_scale.init(jax.random.key(1), x)['params']['bn']) == {'bias'}


def test_conv_norm_act_act_none_and_zero_scale_init():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  # γ = 0 (the last BN of a residual branch) leaves β: here -1, which only act=None keeps.
  fields = dict(bn_scale_init=nn.initializers.zeros, bn_bias_init=nn.initializers.constant(-1.0))
  linear = layers.ConvNormAct(8, **fields, act=None)
  variables = linear.init(jax.random.key(1), x)
  np.testing.assert_array_equal(linear.apply(variables, x), -1.0)
  np.testing.assert_array_equal(layers.ConvNormAct(8, **fields).apply(variables, x), 0.0)
  zero = layers.ConvNormAct(8, bn_scale_init=nn.initializers.zeros, act=None)
  np.testing.assert_array_equal(zero.apply(zero.init(jax.random.key(1), x), x), 0.0)


class _FlatParent(nn.Module):
  """A module whose units keep flat names (MobileNet v1's conv_dw_1, ResNet's conv1 and bn1)."""

  @nn.compact
  def __call__(self, x, train=False):
    x = layers.conv_norm_act(x, train, conv_name='conv_dw_1', features=4, groups=4)
    return layers.conv_norm_act(
        x, train, conv_name='conv1', norm_name='bn1', features=6, kernel_size=1, act=None
    )


def test_conv_norm_act_inline_creates_flat_variables_in_the_parent():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  variables = _FlatParent().init(jax.random.key(1), x)
  assert set(variables['params']) == {'conv_dw_1', 'conv_dw_1_bn', 'conv1', 'bn1'}
  assert set(variables['batch_stats']) == {'conv_dw_1_bn', 'bn1'}
  assert variables['params']['conv_dw_1']['kernel'].shape == (3, 3, 1, 4)
  # The same function as the nested units given the same variables.
  params, stats = variables['params'], variables['batch_stats']
  nested = [
      (layers.ConvNormAct(4, groups=4), 'conv_dw_1', 'conv_dw_1_bn'),
      (layers.ConvNormAct(6, 1, act=None), 'conv1', 'bn1'),
  ]
  y = x
  for unit, conv, bn in nested:
    y = unit.apply(
        {'params': {'conv': params[conv], 'bn': params[bn]}, 'batch_stats': {'bn': stats[bn]}}, y
    )
  np.testing.assert_array_equal(_FlatParent().apply(variables, x), y)


def _naive_avg_pool(x, window, stride, padding, out_size):
  """PyTorch's avg_pool2d (count_include_pad=True, ceil_mode), one window at a time."""
  size = x.shape[0]
  out = np.zeros((out_size, out_size))
  for i in range(out_size):
    for j in range(out_size):
      h0, w0 = i * stride - padding, j * stride - padding
      h1, w1 = min(h0 + window, size + padding), min(w0 + window, size + padding)
      count = (h1 - h0) * (w1 - w0)  # padding counts, the ceil-mode overhang does not
      out[i, j] = x[max(h0, 0) : min(h1, size), max(w0, 0) : min(w1, size)].sum() / count
  return out


@pytest.mark.parametrize(
    'size, window, stride, padding', [(4, 3, 2, 0), (14, 5, 3, 0), (8, 3, 2, 1), (7, 3, 1, 1)]
)
def test_average_pooling_divides_as_pytorch_and_caffe_do(size, window, stride, padding):
  x = np.asarray(jax.random.normal(jax.random.key(2), (size, size)))
  got = layers.pool(
      jnp.asarray(x)[None, :, :, None], 'avg', window, stride, padding, ceil_mode=True
  )[0, :, :, 0]
  np.testing.assert_allclose(
      got, _naive_avg_pool(x, window, stride, padding, got.shape[0]), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('size, out', [(13, 6), (5, 3), (1, 7), (6, 6)])
def test_adaptive_average_pooling_uses_pytorchs_bins(size, out):
  x = np.asarray(jax.random.normal(jax.random.key(3), (size, size + 2)))
  want = np.zeros((out, out))
  for i in range(out):
    for j in range(out):
      rows = slice(i * size // out, -(-(i + 1) * size // out))
      cols = slice(j * (size + 2) // out, -(-(j + 1) * (size + 2) // out))
      want[i, j] = x[rows, cols].mean()
  got = layers.adaptive_avg_pool(jnp.asarray(x)[None, :, :, None], out)[0, :, :, 0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_average_pooling_gradient_splits_each_window_equally_under_jit():
  size, window, stride, padding = 8, 3, 2, 1
  out = 5  # ceil((8 + 2 - 3) / 2) + 1 = 5; the last window starts inside (8 + 1), so it stays
  weights = np.asarray(jax.random.normal(jax.random.key(4), (out, out)))
  loss = lambda v: jnp.sum(
      weights
      * layers.pool(v[None, :, :, None], 'avg', window, stride, padding, ceil_mode=True)[0, :, :, 0]
  )
  grad = jax.jit(jax.grad(loss))(jnp.zeros((size, size)))
  want = np.zeros((size, size))
  for i in range(out):
    for j in range(out):
      h0, w0 = i * stride - padding, j * stride - padding
      h1, w1 = min(h0 + window, size + padding), min(w0 + window, size + padding)
      area = (h1 - h0) * (w1 - w0)
      want[max(h0, 0) : min(h1, size), max(w0, 0) : min(w1, size)] += weights[i, j] / area
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    'name, size, fields, default',
    [
        ('googlenet', 64, {}, (0.9, 1e-3)),
        ('inception_v3', 299, {}, (0.9, 1e-3)),
        ('bninception', 64, {}, (0.9, 1e-5)),
        ('inception_v4', 75, dict(repeats=(1, 1, 1)), (0.9, 1e-3)),
        ('inception_resnet_v1', 75, dict(repeats=(1, 1, 1)), (0.9, 1e-3)),
        ('inception_resnet_v2', 75, dict(repeats=(1, 1, 1)), (0.9, 1e-3)),
        ('xception', 7, dict(middle_blocks=1), (0.9, 1e-3)),
        ('mobilenet_v1', 32, dict(conv_defs=((8, 2),)), (0.9, 1e-3)),
    ],
)
def test_models_pass_their_bn_fields_to_every_batch_norm(name, size, fields, default):
  """(momentum, epsilon) of every BatchNorm a model builds in training (aux heads included),
  traced without compute: the defaults are today's, and the fields reach every one."""

  def constants(**overrides):
    seen = set()

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, nn.BatchNorm):
        seen.add((context.module.momentum, context.module.epsilon))
      return next_fun(*args, **kwargs)

    model = models.create_model(name, num_classes=10, **fields, **overrides)
    with nn.intercept_methods(record):
      jax.eval_shape(
          functools.partial(model.init, train=True),
          {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
          jnp.zeros((1, size, size, 3)),
      )
    return seen

  assert constants() == {default}
  assert constants(bn_momentum=0.99, bn_epsilon=0.01) == {(0.99, 0.01)}


class _Dropped(nn.Module):
  rate: float
  scaling: str

  @nn.compact
  def __call__(self, x, train):
    return layers.dropout(x, self.rate, train, self.scaling)


@pytest.mark.parametrize('rate', [0.25, 0.5])
def test_both_dropout_rules_keep_the_same_units_and_the_expected_output(rate):
  x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (4000,)), jnp.float32)
  rngs = {'dropout': jax.random.key(3)}
  inverted = _Dropped(rate, 'train').apply({}, x, True, rngs=rngs)
  original = _Dropped(rate, 'test').apply({}, x, True, rngs=rngs)
  kept = np.asarray(original) != 0
  np.testing.assert_array_equal(np.asarray(inverted) != 0, kept)  # the same mask
  np.testing.assert_allclose(original[kept], x[kept], rtol=1e-6)  # kept units unscaled
  np.testing.assert_allclose(inverted[kept], x[kept] / (1 - rate), rtol=1e-6)
  np.testing.assert_array_equal(_Dropped(rate, 'train').apply({}, x, False), x)
  np.testing.assert_allclose(_Dropped(rate, 'test').apply({}, x, False), x * (1 - rate), rtol=1e-6)
  # Either rule's test output is its training output's expectation (4,000 units: within 3 %).
  for train_out, test_out in ((inverted, x), (original, x * (1 - rate))):
    assert abs(float(jnp.mean(train_out)) / float(jnp.mean(test_out)) - 1) < 0.03


def test_an_unknown_dropout_rule_is_refused():
  with pytest.raises(ConfigError, match="Unknown dropout scaling 'eval'; choose one of 'train'"):
    _Dropped(0.5, 'eval').apply({}, jnp.ones(3), False)
