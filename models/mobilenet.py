"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

v1 factorises each 3×3 conv into a depthwise 3×3 and a pointwise 1×1 conv; v2 inverts the
residual block (1×1 expand ×t → depthwise 3×3 → linear 1×1 projection) and adds the shortcut
between the thin ends. Both take a width multiplier; the resolution multiplier ρ of v1 is just
the input size (224, 192, 160 or 128), which the config's image size sets.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import register

# Table 1 of Howard et al. 2017: (pointwise output channels, stride of the depthwise conv) for
# the 13 depthwise-separable blocks (TF-slim's `conv_defs`). The table lists the 13th depthwise
# conv as stride 2, a typo: its output stays 7×7, and TF-slim and Keras use stride 1.
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# Table 2 of Sandler et al. 2018 (torchvision's `inverted_residual_setting`): expansion t,
# output channels c, repeats n, stride s of the first repeat.
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV1(nn.Module):
  """MobileNet v1: 3×3/2 conv 32, 13 × (depthwise 3×3 + BN + act, pointwise 1×1 + BN + act),
  global average pool, dropout, fully connected classifier.

  Layer names (conv_dw_1 with its BN conv_dw_1_bn, …), widths `int(c · alpha)`, BN epsilon
  1e-3, TF 'SAME' padding, dropout 1e-3 and Glorot-uniform init follow Keras's
  `applications.MobileNet` (TF-slim's layout), whose 1×1-conv-with-bias head is this `fc`.
  The paper uses ReLU (`act='relu'`); Keras and TF-slim use ReLU6 (`act='relu6'`). BN momentum
  (flax's convention: the share of the running average kept) is 0.9 by default; Keras's is
  0.99 and TF-slim's decay 0.9997 (`bn_momentum`). Keras's `depth_multiplier` (depthwise
  channel multiplier) is not offered: it is always 1 in the paper.
  """

  num_classes: int = 1000
  alpha: float = 1.0
  conv_defs: Sequence[Sequence[int]] = MOBILENET_V1_BLOCKS
  act: str = 'relu'
  dropout_rate: float = 1e-3
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    init = nn.initializers.glorot_uniform()
    conv_bn = functools.partial(
        layers.conv_norm_act,
        train=train,
        padding='SAME',
        kernel_init=init,
        act=self.act,
        bn_epsilon=self.bn_epsilon,
        bn_momentum=self.bn_momentum,
        dtype=self.dtype,
    )
    x = conv_bn(x.astype(self.dtype), conv_name='conv1', features=int(32 * self.alpha), strides=2)
    for index, (features, strides) in enumerate(self.conv_defs, start=1):
      x = conv_bn(
          x, conv_name=f'conv_dw_{index}', features=x.shape[-1], strides=strides, groups=x.shape[-1]
      )
      x = conv_bn(
          x, conv_name=f'conv_pw_{index}', features=int(features * self.alpha), kernel_size=1
      )
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(x)
    x = nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
  """torchvision's (and TF-slim's) `_make_divisible`: round to the nearest multiple of
  `divisor`, at least `min_value`, and never more than 10 % below `value`."""
  min_value = divisor if min_value is None else min_value
  rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
  """1×1 expand to `round(in · t)` + BN + ReLU6 (skipped when t = 1), depthwise 3×3 + BN +
  ReLU6, 1×1 projection + BN with no activation (the linear bottleneck); the input is added
  when the stride is 1 and the width is kept."""

  features: int
  strides: int = 1
  expand_ratio: int = 6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    hidden = int(round(x.shape[-1] * self.expand_ratio))
    conv = functools.partial(layers.ConvNormAct, act='relu6', dtype=self.dtype)
    y = x
    if self.expand_ratio != 1:
      y = conv(hidden, 1, name='expand')(y, train)
    y = conv(hidden, 3, self.strides, groups=hidden, name='depthwise')(y, train)
    y = conv(self.features, 1, act=None, name='project')(y, train)
    if self.strides == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """MobileNet v2 as torchvision builds it: 3×3/2 conv 32 + BN + ReLU6, the 17 inverted
  residual blocks of `inverted_residual_setting`, 1×1 conv to 1280 + BN + ReLU6, global
  average pool, dropout 0.2, linear classifier.

  Widths are `make_divisible(c · width_mult, 8)`; the last conv is never narrowed below 1280.
  torchvision's init: kaiming normal (fan_out) convs, BN γ = 1, classifier N(0, 0.01), zero
  bias; BN epsilon 1e-5. Names follow torchvision's `features.i` (`features_i`) and
  `classifier`.
  """

  num_classes: int = 1000
  width_mult: float = 1.0
  inverted_residual_setting: Sequence[Sequence[int]] = MOBILENET_V2_SETTING
  round_nearest: int = 8
  last_channel: int = 1280
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    width = lambda c: make_divisible(c * self.width_mult, self.round_nearest)
    conv = functools.partial(layers.ConvNormAct, act='relu6', dtype=self.dtype)
    x = conv(width(32), 3, 2, name='features_0')(x.astype(self.dtype), train)
    index = 1
    for t, c, n, s in self.inverted_residual_setting:
      for i in range(n):
        x = InvertedResidual(
            width(c), s if i == 0 else 1, t, dtype=self.dtype, name=f'features_{index}'
        )(x, train)
        index += 1
    last = make_divisible(self.last_channel * max(1.0, self.width_mult), self.round_nearest)
    x = conv(last, 1, name=f'features_{index}')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(x)
    x = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.normal(0.01),
        dtype=self.dtype,
        name='classifier',
    )(x)
    return x.astype(jnp.float32)


register(
    'mobilenet_v1',
    MobileNetV1,
    reference='keras.applications.MobileNet (alpha=1.0)',
    params=4_231_976,
)
register('mobilenet_v2', MobileNetV2, reference='torchvision mobilenet_v2', params=3_504_872)
