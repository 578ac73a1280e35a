"""Pre-activation ResNet (He et al. 2016b, "Identity Mappings in Deep Residual Networks").

Each residual unit computes BN → ReLU → conv, and nothing follows the addition, so the
identity path runs unchanged from the stem to the final BN → ReLU before pooling. Where the
shape changes, the shortcut is a 1×1 conv (no BN) of the pre-activated input, as in the
authors' Torch code (KaimingHe/resnet-1k-layers) and timm's ResNetV2. fb.resnet.torch's
`preresnet.lua` differs: BN → ReLU after the stem conv, no pre-activation in the first unit,
and conv + BN projections of the raw input.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import CIFAR10, register
from models.resnet import conv, conv_init, dense_init


class PreActBasicBlock(nn.Module):
  """BN → ReLU → 3×3 conv (stride) → BN → ReLU → 3×3 conv, plus the shortcut."""

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    pre = nn.relu(bn(name='bn1')(x))
    shortcut = _shortcut(x, pre, self.features, self.strides, self.dtype)
    y = conv(self.features, 3, self.strides, self.dtype, 'conv1')(pre)
    y = conv(self.features, 3, 1, self.dtype, 'conv2')(nn.relu(bn(name='bn2')(y)))
    return y + shortcut


class PreActBottleneck(nn.Module):
  """BN → ReLU → 1×1 → BN → ReLU → 3×3 → BN → ReLU → 1×1 (×4 channels), plus the shortcut.

  The stride sits on the 3×3 (`stride_on_3x3=True`, timm and fb.resnet.torch) or on the first
  1×1 (the authors' CIFAR code for ResNet-164/1001).
  """

  features: int
  strides: int = 1
  stride_on_3x3: bool = True
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    stride_1x1, stride_3x3 = (1, self.strides) if self.stride_on_3x3 else (self.strides, 1)
    pre = nn.relu(bn(name='bn1')(x))
    shortcut = _shortcut(x, pre, self.features * self.expansion, self.strides, self.dtype)
    y = conv(self.features, 1, stride_1x1, self.dtype, 'conv1')(pre)
    y = conv(self.features, 3, stride_3x3, self.dtype, 'conv2')(nn.relu(bn(name='bn2')(y)))
    y = conv(self.features * self.expansion, 1, 1, self.dtype, 'conv3')(nn.relu(bn(name='bn3')(y)))
    return y + shortcut


def _shortcut(x: jax.Array, pre: jax.Array, features: int, strides: int, dtype: Any) -> jax.Array:
  """The raw input when the shape is kept; else a 1×1 conv of the pre-activated input."""
  if strides == 1 and x.shape[-1] == features:
    return x
  return conv(features, 1, strides, dtype, 'downsample_conv')(pre)


BLOCKS = {'basic': PreActBasicBlock, 'bottleneck': PreActBottleneck}


def _block_class(kind: str) -> type[nn.Module]:
  if kind not in BLOCKS:
    raise ValueError(f'Unknown block {kind!r}; choose one of {", ".join(BLOCKS)}.')
  return BLOCKS[kind]


def _head(x: jax.Array, num_classes: int, train: bool, dtype: Any) -> jax.Array:
  """Final BN → ReLU (the last unit ends with a bare addition), global average pool, fc."""
  x = nn.relu(layers.batch_norm(train, dtype, name='final_bn')(x))
  x = jnp.mean(x, axis=(1, 2))
  return nn.Dense(num_classes, kernel_init=dense_init, dtype=dtype, name='fc')(x)


@register('preact_resnet18', stage_sizes=(2, 2, 2, 2), block='basic')
@register('preact_resnet34', stage_sizes=(3, 4, 6, 3), block='basic')
@register('preact_resnet50', stage_sizes=(3, 4, 6, 3), block='bottleneck')
@register('preact_resnet101', stage_sizes=(3, 4, 23, 3), block='bottleneck')
@register('preact_resnet152', stage_sizes=(3, 8, 36, 3), block='bottleneck')
class PreActResNet(nn.Module):
  """ImageNet pre-activation ResNet in timm's ResNetV2 layout: a bare 7×7/2 conv stem (the
  first unit's BN → ReLU normalises it) and 3×3/2 max pool, four stages of 64-128-256-512
  (×4 for bottlenecks) channels with the stride on the 3×3, final BN → ReLU, pool, fc.
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = 'bottleneck'
  stride_on_3x3: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    block_cls = _block_class(self.block)
    extra = {'stride_on_3x3': self.stride_on_3x3} if block_cls is PreActBottleneck else {}
    x = x.astype(self.dtype)
    x = nn.Conv(
        64,
        (7, 7),
        2,
        padding=3,
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name='conv1',
    )(x)
    x = layers.pool(x, 'max', 3, 2, padding=1)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        x = block_cls(
            64 * 2**stage,
            strides=2 if stage > 0 and index == 0 else 1,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
            **extra,
        )(x, train)
    return _head(x, self.num_classes, train, self.dtype).astype(jnp.float32)


@register('preact_resnet110', depth=110, block='basic', native_input=CIFAR10)
@register('preact_resnet164', depth=164, block='bottleneck', native_input=CIFAR10)
class PreActCifarResNet(nn.Module):
  """CIFAR pre-activation ResNet as in KaimingHe/resnet-1k-layers: a bare 3×3 conv 16, three
  stages of units at 16-32-64 inner channels (outputs ×4 = 64-128-256 for bottlenecks),
  stride 2 at the starts of stages 2 and 3, final BN → ReLU, pool, fc.

  depth = 6n + 2 for basic units, 9n + 2 for bottlenecks. The authors' Torch code has
  bottlenecks only (stride on the first 1×1, the default here); ResNet-110 with basic units
  uses the same projection shortcuts here.
  """

  num_classes: int = 10
  depth: int = 164
  block: str = 'bottleneck'
  widths: Sequence[int] = (16, 32, 64)
  stride_on_3x3: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    block_cls = _block_class(self.block)
    per_block = 3 if block_cls is PreActBottleneck else 2
    if (self.depth - 2) % (3 * per_block) or self.depth < 3 * per_block + 2:
      raise ValueError(
          f'CIFAR pre-activation ResNet depth with {self.block} units must be '
          f'{3 * per_block}n + 2, got {self.depth}.'
      )
    n = (self.depth - 2) // (3 * per_block)
    extra = {'stride_on_3x3': self.stride_on_3x3} if block_cls is PreActBottleneck else {}
    x = x.astype(self.dtype)
    x = conv(self.widths[0], 3, 1, self.dtype, 'conv1')(x)
    for stage, width in enumerate(self.widths):
      for index in range(n):
        x = block_cls(
            width,
            strides=2 if stage > 0 and index == 0 else 1,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
            **extra,
        )(x, train)
    return _head(x, self.num_classes, train, self.dtype).astype(jnp.float32)
