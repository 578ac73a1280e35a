"""Pre-activation ResNet (He et al. 2016b, "Identity Mappings in Deep Residual Networks").

Each residual unit computes BN → ReLU → conv, and nothing follows the addition, so the
identity path runs unchanged from the stem to the final BN → ReLU before pooling. Where the
shape changes, the shortcut is a 1×1 conv (no BN) of the pre-activated input, as in the
authors' Torch code (KaimingHe/resnet-1k-layers) and timm's ResNetV2. fb.resnet.torch's
`preresnet.lua` differs: BN → ReLU after the stem conv, no pre-activation in the first unit,
and conv + BN projections of the raw input.

Convs are bias-free with He fan_out init and PyTorch's padding k // 2, as in resnet.py.
BatchNorm: PyTorch's momentum 0.1 (0.9 here) and eps 1e-5, which the authors' Torch code and
timm share, so neither is a field.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import CIFAR10, register

# A bare conv (pre-activation puts its BN → ReLU before it): ConvNormAct without norm and
# activation, its variables flat in the calling module (conv1, downsample_conv).
conv = functools.partial(layers.conv_norm_act, norm=False, act=None)


def preact_shortcut(block: nn.Module, x: jax.Array, pre: jax.Array, features: int) -> jax.Array:
  """The raw input `x` where the shape is kept; else a 1×1 conv (`block.strides`) of the
  pre-activated `pre`, named downsample_conv (also the Wide ResNets' shortcut)."""

  def project() -> jax.Array:
    return conv(
        pre,
        conv_name='downsample_conv',
        features=features,
        kernel_size=1,
        strides=block.strides,
        dtype=block.dtype,
    )

  return layers.residual_shortcut(x, features, block.strides, 'B', project)


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
    shortcut = preact_shortcut(self, x, pre, self.features)
    y = conv(pre, conv_name='conv1', features=self.features, strides=self.strides, dtype=self.dtype)
    y = conv(
        nn.relu(bn(name='bn2')(y)), conv_name='conv2', features=self.features, dtype=self.dtype
    )
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
    shortcut = preact_shortcut(self, x, pre, self.features * self.expansion)
    y = conv(
        pre,
        conv_name='conv1',
        features=self.features,
        kernel_size=1,
        strides=stride_1x1,
        dtype=self.dtype,
    )
    y = conv(
        nn.relu(bn(name='bn2')(y)),
        conv_name='conv2',
        features=self.features,
        strides=stride_3x3,
        dtype=self.dtype,
    )
    y = conv(
        nn.relu(bn(name='bn3')(y)),
        conv_name='conv3',
        features=self.features * self.expansion,
        kernel_size=1,
        dtype=self.dtype,
    )
    return y + shortcut


BLOCKS = {'basic': PreActBasicBlock, 'bottleneck': PreActBottleneck}


def _head(x: jax.Array, num_classes: int, train: bool, dtype: Any) -> jax.Array:
  """Final BN → ReLU (the last unit ends with a bare addition), global average pool, fc
  (PyTorch's default U(±1/√fan_in) weights, zero bias); float32 logits."""
  x = nn.relu(layers.batch_norm(train, dtype, name='final_bn')(x))
  x = jnp.mean(x, axis=(1, 2))
  x = nn.Dense(num_classes, kernel_init=layers.torch_default_kernel, dtype=dtype, name='fc')(x)
  return x.astype(jnp.float32)


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
    block_cls = layers.choose('block', self.block, BLOCKS)
    extra = {'stride_on_3x3': self.stride_on_3x3} if block_cls is PreActBottleneck else {}
    x = x.astype(self.dtype)
    x = conv(x, conv_name='conv1', features=64, kernel_size=7, strides=2, dtype=self.dtype)
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
    return _head(x, self.num_classes, train, self.dtype)


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
    block_cls = layers.choose('block', self.block, BLOCKS)
    per_block = 3 if block_cls is PreActBottleneck else 2
    if (self.depth - 2) % (3 * per_block) or self.depth < 3 * per_block + 2:
      raise ConfigError(
          f'CIFAR pre-activation ResNet depth with {self.block} units must be '
          f'{3 * per_block}n + 2, got {self.depth}.'
      )
    n = (self.depth - 2) // (3 * per_block)
    extra = {'stride_on_3x3': self.stride_on_3x3} if block_cls is PreActBottleneck else {}
    x = x.astype(self.dtype)
    x = conv(x, conv_name='conv1', features=self.widths[0], dtype=self.dtype)
    for stage, width in enumerate(self.widths):
      for index in range(n):
        x = block_cls(
            width,
            strides=2 if stage > 0 and index == 0 else 1,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
            **extra,
        )(x, train)
    return _head(x, self.num_classes, train, self.dtype)


# timm's ResNetV2 layout; the counts are torchvision's plain ones with the BatchNorms moved
# (tests/test_preact_resnet.py derives them).
register(
    'preact_resnet18',
    PreActResNet,
    reference='timm ResNetV2 layout, basic units',
    params=11_687_720,
    stage_sizes=(2, 2, 2, 2),
    block='basic',
)
register(
    'preact_resnet34',
    PreActResNet,
    reference='timm ResNetV2 layout, basic units',
    params=21_795_880,
    stage_sizes=(3, 4, 6, 3),
    block='basic',
)
register(
    'preact_resnet50',
    PreActResNet,
    reference='timm ResNetV2 layout (resnetv2_50)',
    params=25_549_352,
    stage_sizes=(3, 4, 6, 3),
    block='bottleneck',
)
register(
    'preact_resnet101',
    PreActResNet,
    reference='timm ResNetV2 layout (resnetv2_101)',
    params=44_541_480,
    stage_sizes=(3, 4, 23, 3),
    block='bottleneck',
)
register(
    'preact_resnet152',
    PreActResNet,
    reference='timm ResNetV2 layout, bottlenecks',
    params=60_185_128,
    stage_sizes=(3, 8, 36, 3),
    block='bottleneck',
)
# He et al. 2016b round both to 1.7M.
register(
    'preact_resnet110',
    PreActCifarResNet,
    reference='He et al. 2016b CIFAR ResNet-110, basic units with 1×1 projections',
    params=1_730_522,
    native_input=CIFAR10,
    depth=110,
    block='basic',
)
register(
    'preact_resnet164',
    PreActCifarResNet,
    reference='He et al. 2016b CIFAR ResNet-164: KaimingHe/resnet-1k-layers',
    params=1_703_258,
    native_input=CIFAR10,
    depth=164,
    block='bottleneck',
)
