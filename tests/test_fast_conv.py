"""models/fast_conv.py: its convs, max pools and their gradients equal lax's; it covers only what it
can."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from model_testing import equations, fast_jit, operand_dtypes

from models import create_model, fast_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _values_and_grads(conv, x, w, **kwargs):
  """(output, d/dx, d/dw) of sum(conv(x, w) · fixed cotangent), as one compiled program (run
  op by op, the rewrites' many slices compile one by one)."""

  @fast_jit
  def values_and_grads(x, w):
    out = conv(x, w, **kwargs)
    cotangent = jax.random.normal(jax.random.key(7), out.shape, jnp.float32).astype(out.dtype)
    loss = lambda x, w: jnp.sum(conv(x, w, **kwargs).astype(jnp.float32) * cotangent)
    return (out, *jax.grad(loss, argnums=(0, 1))(x, w))

  return values_and_grads(x, w)


def _operands(x_shape, w_shape, kwargs, dtype=jnp.float32):
  """A test case's seeded input and kernel, and its conv kwargs in NHWC (stride 1 unless given)."""
  x = jax.random.normal(jax.random.key(0), x_shape).astype(dtype)
  w = jax.random.normal(jax.random.key(1), w_shape).astype(dtype)
  return x, w, dict({'window_strides': (1, 1), 'dimension_numbers': NHWC}, **kwargs)


def _assert_close(actual, expected, rtol=1e-5):
  for a, e in zip(actual, expected, strict=True):
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * np.abs(e).max())


CASES = {  # name: (x shape, kernel shape, conv kwargs)
    'depthwise 3x3': (
        (2, 9, 9, 6),
        (3, 3, 1, 6),
        dict(window_strides=(1, 1), padding=((1, 1),) * 2),
    ),
    'depthwise stride 2': ((2, 9, 8, 6), (3, 3, 1, 6), dict(window_strides=(2, 2), padding='SAME')),
    'depthwise VALID 5x5': (
        (2, 9, 9, 4),
        (5, 5, 1, 4),
        dict(window_strides=(1, 1), padding='VALID'),
    ),
    'depthwise explicit': (
        (1, 7, 7, 4),
        (3, 3, 1, 4),
        dict(window_strides=(2, 1), padding=((0, 2), (1, 0))),
    ),
    'depthwise dilated': (
        (2, 9, 9, 4),
        (3, 3, 1, 4),
        dict(window_strides=(1, 1), padding=((2, 2),) * 2, rhs_dilation=(2, 2)),
    ),
    'depthwise multiplier 2': (
        (2, 8, 8, 3),
        (3, 3, 1, 6),
        dict(window_strides=(1, 1), padding='SAME'),
    ),
    'depthwise 1x7': (
        (2, 8, 8, 4),
        (1, 7, 1, 4),
        dict(window_strides=(1, 1), padding=((0, 0), (3, 3))),
    ),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_depthwise_values_and_gradients_equal_lax(case):
  x, w, kwargs = _operands(*CASES[case])
  kwargs = dict(kwargs, feature_group_count=x.shape[-1])
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  with jax.default_matmul_precision('highest'):
    actual = _values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs)
  _assert_close(actual, expected)


def test_bfloat16_depthwise_is_summed_in_float32():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8)).astype(jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (3, 3, 1, 8)).astype(jnp.bfloat16)
  kwargs = dict(
      window_strides=(1, 1), padding='SAME', dimension_numbers=NHWC, feature_group_count=8
  )
  out = fast_conv.conv_general_dilated(x, w, **kwargs)
  assert out.dtype == jnp.bfloat16
  exact = lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), **kwargs)
  _assert_close([out], [exact], rtol=1e-2)  # one bfloat16 rounding of a float32 sum
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  _assert_close(_values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs), expected, 2e-2)


def _conv_jaxpr(x, w, kwargs) -> str:
  """The jaxpr of `fast_conv.conv_general_dilated` on `x` and `w`, as text."""
  return str(jax.make_jaxpr(lambda x, w: fast_conv.conv_general_dilated(x, w, **kwargs))(x, w))


FEW_CHANNELS = {  # name: (x shape, kernel shape, conv kwargs)
    'LeNet-5 conv1 5x5 pad 2': ((2, 12, 12, 1), (5, 5, 1, 6), dict(padding=((2, 2),) * 2)),
    'CIFAR ResNet stem 3x3 SAME': ((2, 9, 9, 3), (3, 3, 3, 16), dict(padding='SAME')),
    'VALID': ((2, 11, 10, 3), (5, 5, 3, 8), dict(padding='VALID')),
    'stride 2 7x7': ((2, 15, 15, 3), (7, 7, 3, 8), dict(window_strides=(2, 2), padding='SAME')),
    'dilated, uneven padding': (
        (1, 9, 9, 2),
        (3, 3, 2, 4),
        dict(padding=((2, 1), (0, 2)), rhs_dilation=(2, 2)),
    ),
}


@pytest.mark.parametrize('case', sorted(FEW_CHANNELS))
def test_few_channel_conv_values_and_input_gradient_equal_lax_and_weight_gradient_is_lax_own(case):
  x, w, kwargs = _operands(*FEW_CHANNELS[case])
  jaxpr = _conv_jaxpr(x, w, kwargs)
  assert 'conv_general_dilated' not in jaxpr.split('custom_vjp')[0]  # the forward is rewritten
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  actual = _values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs)
  _assert_close(actual[:2], expected[:2])  # the input gradient may be col2im's, in another order
  np.testing.assert_array_equal(actual[2], expected[2])  # the same cotangent through lax's VJP


def test_few_channel_conv_multiplies_patches_of_four_pixels_by_a_banded_matrix():
  x, w, kwargs = _operands(*FEW_CHANNELS['LeNet-5 conv1 5x5 pad 2'])
  jaxpr = _conv_jaxpr(x, w, kwargs)
  # 4 pixels × 6 outputs by 5 rows × 8 patch columns (im2col's would be 6 by 25 taps), over the
  # 2 images × 12 rows × 3 blocks of 4 pixels.
  assert 'f32[24,40]' in jaxpr and 'f32[40,2,12,3]' in jaxpr


def test_bfloat16_few_channel_conv_multiplies_bfloat16_and_sums_float32():
  x, w, kwargs = _operands(*FEW_CHANNELS['CIFAR ResNet stem 3x3 SAME'], jnp.bfloat16)
  conv = functools.partial(fast_conv.conv_general_dilated, **kwargs)
  assert operand_dtypes(jax.make_jaxpr(conv)(x, w).jaxpr) == {jnp.dtype(jnp.bfloat16)}
  out = conv(x, w)
  assert out.dtype == jnp.bfloat16
  exact = lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), **kwargs)
  # One rounding of a float32 sum: within half a bfloat16 step (≤ 2⁻⁸ of the value) of the exact
  # one. Summed in bfloat16, 1,554 of the 2,592 outputs miss this.
  np.testing.assert_allclose(out.astype(jnp.float32), exact, rtol=2**-8, atol=1e-6)


FALLBACKS = {  # convs the rewrite leaves to lax: (x shape, kernel shape, conv kwargs)
    '1x1': ((2, 8, 8, 4), (1, 1, 4, 5), dict(window_strides=(1, 1), padding='VALID')),
    '3 channels in, 17 out (YNNPACK runs it)': (
        (2, 8, 8, 3),
        (3, 3, 3, 17),
        dict(window_strides=(1, 1), padding='SAME'),
    ),
    '4 channels in, 17 out': (
        (2, 8, 8, 4),
        (3, 3, 4, 17),
        dict(window_strides=(1, 1), padding='SAME'),
    ),
    '3x3 stride 2': ((2, 9, 9, 4), (3, 3, 4, 6), dict(window_strides=(2, 2), padding='SAME')),
    'grouped (ResNeXt)': (
        (2, 8, 8, 8),
        (3, 3, 2, 8),
        dict(window_strides=(1, 1), padding=((1, 1),) * 2, feature_group_count=4),
    ),
    'input dilation': (
        (2, 5, 5, 4),
        (3, 3, 1, 4),
        dict(
            window_strides=(1, 1),
            padding=((1, 1),) * 2,
            lhs_dilation=(2, 2),
            feature_group_count=4,
        ),
    ),
}


@pytest.mark.parametrize('case', sorted(FALLBACKS))
def test_other_convs_are_lax_own(case):
  x, w, kwargs = _operands(*FALLBACKS[case])
  jaxpr = _conv_jaxpr(x, w, kwargs)
  assert 'conv_general_dilated' in jaxpr
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  _assert_close(_values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs), expected)


SLICED = {  # convs whose weight gradient is summed over slices of the batch: (x, kernel, kwargs)
    'ResNet 3x3 16->16, 40 images (slices of 16, 16, 8)': (  # too large for col2im
        (40, 16, 16, 16),
        (3, 3, 16, 16),
        dict(window_strides=(1, 1), padding='SAME'),
    ),
    '1x7 (Inception), 33 images': (
        (33, 6, 7, 4),
        (1, 7, 4, 24),
        dict(window_strides=(1, 1), padding=((0, 0), (3, 3))),
    ),
    'dilated 3x3, uneven padding, 32 images': (
        (32, 7, 7, 5),
        (3, 3, 5, 20),
        dict(window_strides=(1, 1), padding=((2, 1), (0, 2)), rhs_dilation=(2, 2)),
    ),
}


def _gradient_convs(x, w, kwargs, like) -> int:
  """How many convs the gradient's jaxpr computes with the shape of `like` (`x` for the input
  gradient's, `w` for the weight gradient's; the cases give the output another shape)."""
  loss = lambda x, w: jnp.sum(fast_conv.conv_general_dilated(x, w, **kwargs))
  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w).jaxpr
  convs = [e for e in equations(jaxpr) if e.primitive.name == 'conv_general_dilated']
  return sum(e.outvars[0].aval.shape == like.shape for e in convs)


@pytest.mark.parametrize('case', sorted(SLICED))
def test_weight_gradient_summed_over_batch_slices_equals_lax(case):
  x, w, kwargs = _operands(*SLICED[case])
  slices = -(-x.shape[0] // fast_conv.WEIGHT_GRAD_BATCH)
  assert _gradient_convs(x, w, kwargs, like=w) == slices > 1
  _assert_lax_forward_and_input_grad_and_close_weight_grad(x, w, kwargs)


@pytest.mark.parametrize('strides, padding', [((1, 1), 'VALID'), ((2, 2), 'SAME')])
def test_pointwise_weight_gradient_is_a_matrix_product_equal_to_lax(strides, padding):
  x, w, kwargs = _operands(
      (33, 7, 7, 8), (1, 1, 8, 12), dict(window_strides=strides, padding=padding)
  )
  assert _gradient_convs(x, w, kwargs, like=w) == 0
  _assert_lax_forward_and_input_grad_and_close_weight_grad(x, w, kwargs)


NARROW = {  # convs whose input gradient is col2im's: (x shape, kernel shape, conv kwargs)
    'LeNet-5 conv2 6->16 5x5, 20 images': ((20, 14, 14, 6), (5, 5, 6, 16), dict(padding='VALID')),
    '4->16 3x3 SAME': ((2, 8, 8, 4), (3, 3, 4, 16), dict(padding='SAME')),
    '5->12 3x2, uneven padding': ((3, 7, 9, 5), (3, 2, 5, 12), dict(padding=((2, 0), (1, 1)))),
}
NOT_NARROW = {  # convs whose input gradient stays lax's
    'YNNPACK width (6->17)': ((2, 14, 14, 6), (5, 5, 6, 17), dict(padding='VALID')),
    'stride 2': ((2, 14, 14, 6), (5, 5, 6, 16), dict(padding='VALID', window_strides=(2, 2))),
    'dilated': ((2, 14, 14, 6), (3, 3, 6, 16), dict(padding='VALID', rhs_dilation=(2, 2))),
    '1x1': ((2, 14, 14, 6), (1, 1, 6, 16), dict(padding='VALID')),
    'over COL2IM_MAX_COLUMNS (6x32x32x9)': ((2, 32, 32, 6), (3, 3, 6, 16), dict(padding='SAME')),
}


@pytest.mark.parametrize('case', sorted(NARROW))
def test_narrow_input_gradient_is_col2im_equal_to_lax(case):
  x, w, kwargs = _operands(*NARROW[case])
  assert _gradient_convs(x, w, kwargs, like=x) == 0
  bf16 = jnp.bfloat16  # float32 only, as the weight-gradient slices
  assert _gradient_convs(x.astype(bf16), w.astype(bf16), kwargs, like=x) == 1
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  actual = _values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs)
  np.testing.assert_array_equal(actual[0], expected[0])  # lax's forward pass
  _assert_close(actual[1:], expected[1:])  # the same sums, in another order


@pytest.mark.parametrize('case', sorted(NOT_NARROW))
def test_other_input_gradients_are_lax_own(case):
  x, w, kwargs = _operands(*NOT_NARROW[case])
  assert _gradient_convs(x, w, kwargs, like=x) == 1


def _assert_lax_forward_and_input_grad_and_close_weight_grad(x, w, kwargs):
  expected = _values_and_grads(lax.conv_general_dilated, x, w, **kwargs)
  actual = _values_and_grads(fast_conv.conv_general_dilated, x, w, **kwargs)
  for a, e in zip(actual[:2], expected[:2], strict=True):
    np.testing.assert_array_equal(a, e)
  _assert_close(actual[2:], expected[2:])  # the same sum, in another order


def test_weight_gradient_is_one_conv_for_small_batches_and_bfloat16():
  kwargs = dict(window_strides=(1, 1), padding='SAME', dimension_numbers=NHWC)
  w = jnp.ones((3, 3, 16, 16))
  assert _gradient_convs(jnp.ones((16, 6, 6, 16)), w, kwargs, like=w) == 1
  bf16 = jnp.bfloat16  # rounding each slice's sum to bfloat16 would lose what lax keeps
  assert _gradient_convs(jnp.ones((40, 6, 6, 16), bf16), w.astype(bf16), kwargs, like=w) == 1


def _depthwise_jaxpr(x, w):
  kwargs = dict(
      window_strides=(1, 1), padding='SAME', dimension_numbers=NHWC, feature_group_count=4
  )
  return _conv_jaxpr(x, w, kwargs)


def test_rewrite_only_on_cpu_and_env_switches_it_off(monkeypatch):
  x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 1, 4))
  assert 'conv_general_dilated' not in _depthwise_jaxpr(x, w)
  monkeypatch.setenv(fast_conv.FAST_CONV_ENV, '0')
  assert 'conv_general_dilated' in _depthwise_jaxpr(x, w)
  monkeypatch.setenv(fast_conv.FAST_CONV_ENV, '1')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert 'conv_general_dilated' in _depthwise_jaxpr(x, w)


def _sgd_step(name, monkeypatch, enabled, train, **fields):
  """Loss and SGD-updated params of one step of `name` at 32×32, batch 8."""
  monkeypatch.setenv(fast_conv.FAST_CONV_ENV, '1' if enabled else '0')
  model = create_model(name, num_classes=10, **fields)
  images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
  labels = jnp.arange(8) % 10
  variables = fast_jit(model.init)(jax.random.key(1), images)

  def loss_fn(params):
    logits, _ = model.apply(
        {**variables, 'params': params},
        images,
        train=train,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(2)},
    )
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

  loss, grads = fast_jit(jax.value_and_grad(loss_fn))(variables['params'])
  return loss, jax.tree.map(lambda p, g: p - 0.1 * g, variables['params'], grads)


# MobileNet v2 is compared with BatchNorm's running statistics: in training mode the batch
# statistics of its 1×1 late stages amplify float32 rounding (either conv's) to ~1e-3.
# LeNet-5's conv1 and ResNet-20's stem take the few-channel rewrite.
@pytest.mark.parametrize(
    'name, train, fields',
    [
        ('mobilenet_v2', False, {'width_mult': 0.35, 'dropout_rate': 0.0}),
        ('lenet5', True, {}),
        ('resnet20', True, {}),
    ],
)
def test_step_same_with_rewrite_on_and_off(monkeypatch, name, train, fields):
  loss_on, params_on = _sgd_step(name, monkeypatch, True, train, **fields)
  loss_off, params_off = _sgd_step(name, monkeypatch, False, train, **fields)
  np.testing.assert_allclose(loss_on, loss_off, rtol=1e-5)
  for on, off in zip(jax.tree.leaves(params_on), jax.tree.leaves(params_off), strict=True):
    np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-5)


MAX_POOLS = {  # name: (x shape, window, strides, padding)
    'LeNet 2x2/2': ((2, 8, 8, 3), (2, 2), (2, 2), 'VALID'),
    'AlexNet 3x3/2': ((2, 13, 13, 3), (3, 3), (2, 2), 'VALID'),
    'ResNet stem 3x3/2 pad 1': ((2, 12, 12, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    'GoogLeNet 3x3/1 same': ((2, 7, 7, 3), (3, 3), (1, 1), 'SAME'),
    'ceil mode (extra bottom/right)': ((1, 8, 8, 2), (3, 3), (2, 2), ((0, 1), (0, 1))),
}


@pytest.mark.parametrize('case', sorted(MAX_POOLS))
def test_max_pool_values_and_gradients_are_lax_bit_for_bit(case):
  """Small integers make many windows tie: the gradient must go to the first maximum of each
  window, as lax's select-and-scatter sends it, not be split."""
  shape, window, strides, padding = MAX_POOLS[case]
  x = jax.random.randint(jax.random.key(0), shape, 0, 3).astype(jnp.float32)

  def values_and_grad(pool):
    out, vjp = jax.vjp(lambda x: pool(x, window, strides, padding), x)
    cotangent = jax.random.normal(jax.random.key(1), out.shape)
    return out, vjp(cotangent)[0]

  jaxpr = str(jax.make_jaxpr(lambda x: fast_conv.max_pool(x, window, strides, padding))(x))
  assert 'reduce_window' not in jaxpr
  expected = values_and_grad(nn.max_pool)
  actual = values_and_grad(fast_conv.max_pool)
  assert np.count_nonzero(expected[1]) < x.size  # ties: some inputs get no gradient
  for a, e in zip(actual, expected, strict=True):
    np.testing.assert_array_equal(a, e)


def test_max_pool_propagates_nan_and_keeps_bfloat16():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1).at[0, 1, 1, 0].set(jnp.nan)
  out = fast_conv.max_pool(x, (2, 2), (2, 2))
  np.testing.assert_array_equal(out, nn.max_pool(x, (2, 2), (2, 2)))
  assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 1, 1, 0])
  assert fast_conv.max_pool(x.astype(jnp.bfloat16), (2, 2), (2, 2)).dtype == jnp.bfloat16


def test_max_pool_is_lax_own_when_switched_off(monkeypatch):
  x = jnp.ones((1, 4, 4, 1))
  pooled_jaxpr = lambda: str(jax.make_jaxpr(lambda x: fast_conv.max_pool(x, (2, 2)))(x))
  with fast_conv.plain():
    assert 'reduce_window_max' in pooled_jaxpr()
  monkeypatch.setenv(fast_conv.FAST_CONV_ENV, '0')
  assert 'reduce_window_max' in pooled_jaxpr()
