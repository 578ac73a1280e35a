"""Xception (Chollet 2017): Inception modules replaced by depthwise separable convolutions."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import fast_conv, layers
from models.convolutions import SeparableConv
from models.registry import INPUT_299, register

MIN_SIZE = 7  # two valid 3×3 convs (the first strided) leave 1×1; every later layer is 'same'

# Keras's glorot_uniform on every kernel. For a depthwise kernel Keras's (3, 3, C, 1) and flax's
# (3, 3, 1, C) have the same fan_in + fan_out (9C + 9), so the limits agree.
_GLOROT = nn.initializers.glorot_uniform()
# 3×3 depthwise then 1×1 pointwise, no bias and no activation in between (the paper's §4.7
# found none works best).
_separable = functools.partial(SeparableConv, kernel_init=_GLOROT)


class XceptionBlock(nn.Module):
  """`reps` × (ReLU → separable conv → BN), a 3×3/2 max pool if strided, plus a shortcut:
  identity, or 1×1 conv (stride) + BN where the width or size changes.

  `grow_first`: the first separable conv changes the width (else the last, as in the exit
  flow); `start_with_relu=False` for the first block, whose input is already a ReLU output.
  The ReLU is applied to the branch only; the shortcut takes the block's input as it came.
  """

  features: int
  reps: int
  strides: int = 1
  start_with_relu: bool = True
  grow_first: bool = True
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    inputs, in_features = x, x.shape[-1]
    for i in range(self.reps):
      features = self.features if self.grow_first or i == self.reps - 1 else in_features
      if i > 0 or self.start_with_relu:
        x = nn.relu(x)
      x = _separable(features, dtype=self.dtype, name=f'sepconv{i + 1}')(x)
      x = layers.batch_norm(
          train, self.dtype, self.bn_epsilon, self.bn_momentum, name=f'bn{i + 1}'
      )(x)
    if self.strides != 1:
      # Keras pools with padding 'same' (pads the bottom/right only on even sizes); timm's port
      # pads 1 all round, which moves the windows on even maps (74×74 at 299 px).
      x = fast_conv.max_pool(x, (3, 3), (self.strides, self.strides), 'SAME')
    if self.features != in_features or self.strides != 1:
      inputs = layers.conv_norm_act(
          inputs,
          train,
          conv_name='skip',
          norm_name='skipbn',
          features=self.features,
          kernel_size=1,
          strides=self.strides,
          act=None,
          kernel_init=_GLOROT,
          bn_epsilon=self.bn_epsilon,
          bn_momentum=self.bn_momentum,
          dtype=self.dtype,
      )
    return x + inputs


class Xception(nn.Module):
  """Xception (Fig. 5 of the paper): entry flow (two convs, three strided blocks to 19×19×728 at
  299 px), `middle_blocks` (8) residual blocks of three separable convs at 728, exit flow (a
  strided block to 1024, separable convs to 1536 and 2048 with ReLU), average pool, dropout, fc.

  Keras's `keras.applications.Xception` (the paper's reference code): BN eps 1e-3 with scale,
  'same' max pools, Glorot-uniform kernels; 22,855,952 trainable parameters, as timm's
  `legacy_xception` port, which differs in BN eps (1e-5) and max-pool padding. Keras's BN
  momentum is 0.99; the default `bn_momentum=0.9` is PyTorch's 0.1 (timm's), flax's convention
  being the share of the running average kept. Keras has no dropout; the paper trains ImageNet
  with dropout 0.5 before the classifier (`dropout_rate`).
  Layer names follow timm (conv1, bn1, block1…block12, conv3, bn3, conv4, bn4, fc).
  """

  num_classes: int = 1000
  middle_blocks: int = 8
  dropout_rate: float = 0.5
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn_fields = dict(bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum, dtype=self.dtype)
    bn = lambda name: layers.batch_norm(
        train, self.dtype, self.bn_epsilon, self.bn_momentum, name=name
    )
    stem = functools.partial(
        layers.conv_norm_act,
        train=train,
        kernel_size=3,
        padding=0,
        kernel_init=_GLOROT,
        **bn_fields,
    )
    block = functools.partial(XceptionBlock, **bn_fields)
    layers.check_input_size(x, MIN_SIZE, 'Xception')
    x = x.astype(self.dtype)
    # Entry flow.
    x = stem(x, conv_name='conv1', norm_name='bn1', features=32, strides=2)  # 299 → 149
    x = stem(x, conv_name='conv2', norm_name='bn2', features=64)  # → 147
    x = block(128, 2, 2, start_with_relu=False, name='block1')(x, train)
    x = block(256, 2, 2, name='block2')(x, train)
    x = block(728, 2, 2, name='block3')(x, train)
    # Middle flow.
    for i in range(self.middle_blocks):
      x = block(728, 3, name=f'block{4 + i}')(x, train)
    # Exit flow.
    x = block(1024, 2, 2, grow_first=False, name=f'block{4 + self.middle_blocks}')(x, train)
    x = nn.relu(bn('bn3')(_separable(1536, dtype=self.dtype, name='conv3')(x)))
    x = nn.relu(bn('bn4')(_separable(2048, dtype=self.dtype, name='conv4')(x)))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=_GLOROT, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


register(
    'xception',
    Xception,
    reference='keras.applications.Xception',
    params=22_855_952,
    native_input=INPUT_299,
)
