"""Wide Residual Networks (Zagoruyko & Komodakis 2016): WRN-d-k on CIFAR, WRN-50-2 on ImageNet.

CIFAR (`WideResNet`): pre-activation ResNets made shallower and k times wider: a 3×3 conv to
16 channels, three groups of n = (d − 4) / 6 basic blocks at 16k, 32k, 64k channels (stride 2
at the starts of groups 2 and 3), final BN → ReLU, global average pool, fc. As in the authors'
Torch code (szagoruyko/wide-residual-networks, models/wide-resnet.lua) and its PyTorch port
(xternalz/WideResNet-pytorch): convs without bias, and where the width changes the block's
BN → ReLU runs first and feeds both the residual branch and a bias-free 1×1 projection shortcut.
BatchNorm: Torch's and PyTorch's momentum 0.1 (0.9 here) and eps 1e-5 (not fields).

ImageNet (wide_resnet50_2, wide_resnet101_2): torchvision's ResNet (models/resnet.py) with
every bottleneck's inner width (1×1 → 3×3 → 1×1) doubled and its outputs kept. torchvision
expresses it as one group of twice the base width: `width_per_group=128` gives
int(64 · 128/64) · 1 = 128 channels in stage 1 (ResNet-50: 64). The parameter counts match
torchvision's model cards.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.preact_resnet import conv, preact_shortcut
from models.registry import CIFAR10, register
from models.resnet import ResNet


class WideBasicBlock(nn.Module):
  """BN → ReLU → 3×3 conv (stride) → BN → ReLU → dropout → 3×3 conv, plus the shortcut.

  Dropout sits between the two convs: right before the second conv as in the authors' Torch
  code (`dropout_before_bn=False`), or on the first conv's output, before the second BN, as in
  xternalz/WideResNet-pytorch (`dropout_before_bn=True`).
  """

  features: int
  strides: int = 1
  dropout_rate: float = 0.0
  dropout_before_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    block_conv = functools.partial(conv, features=self.features, dtype=self.dtype)
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    pre = nn.relu(bn(name='bn1')(x))
    # The authors' code: where the shape changes, a 1×1 conv of the pre-activated input.
    shortcut = preact_shortcut(self, x, pre, self.features)
    y = block_conv(pre, conv_name='conv1', strides=self.strides)
    if self.dropout_rate > 0 and self.dropout_before_bn:
      y = drop(y)
    y = nn.relu(bn(name='bn2')(y))
    if self.dropout_rate > 0 and not self.dropout_before_bn:
      y = drop(y)
    y = block_conv(y, conv_name='conv2')
    return y + shortcut


class WideResNet(nn.Module):
  """WRN-d-k on 32×32 images: depth d = 6n + 4, widths 16, 16k, 32k, 64k.

  Init as the authors' code: convs N(0, 2 / (3·3·out)) (He fan_out), fc weights PyTorch/Torch
  default U(±1/√fan_in) with zero bias. `dropout_rate` 0.3 gives the paper's "wide-dropout"
  runs (WRN-28-10-dropout 3.89 % on CIFAR-10 vs 4.00 % without).
  """

  num_classes: int = 10
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0
  dropout_before_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if (self.depth - 4) % 6 or self.depth < 10:
      raise ConfigError(
          f'Wide ResNet depth must be 6n + 4 (10, 16, 22, 28, 40, ...), got {self.depth}.'
      )
    n = (self.depth - 4) // 6
    x = x.astype(self.dtype)
    x = conv(x, conv_name='conv1', features=16, dtype=self.dtype)
    for stage, width in enumerate((16, 32, 64)):
      for index in range(n):
        x = WideBasicBlock(
            width * self.widen_factor,
            strides=2 if stage > 0 and index == 0 else 1,
            dropout_rate=self.dropout_rate,
            dropout_before_bn=self.dropout_before_bn,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
        )(x, train)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='final_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes, kernel_init=layers.torch_default_kernel, dtype=self.dtype, name='fc'
    )(x)
    return x.astype(jnp.float32)


# Exact counts of the authors' code (bias-free convs); the paper (Tables 4, 5) rounds them to
# 36.5M, 11.0M and 8.9M.
register(
    'wrn28_10',
    WideResNet,
    reference='Zagoruyko & Komodakis 2016 WRN-28-10; szagoruyko/wide-residual-networks',
    params=36_479_194,
    native_input=CIFAR10,
    depth=28,
    widen_factor=10,
)
register(
    'wrn16_8',
    WideResNet,
    reference='Zagoruyko & Komodakis 2016 WRN-16-8; szagoruyko/wide-residual-networks',
    params=10_961_370,
    native_input=CIFAR10,
    depth=16,
    widen_factor=8,
)
register(
    'wrn40_4',
    WideResNet,
    reference='Zagoruyko & Komodakis 2016 WRN-40-4; szagoruyko/wide-residual-networks',
    params=8_949_210,
    native_input=CIFAR10,
    depth=40,
    widen_factor=4,
)
register(
    'wide_resnet50_2',
    ResNet,
    reference='torchvision wide_resnet50_2',
    params=68_883_240,
    stage_sizes=(3, 4, 6, 3),
    width_per_group=128,
)
register(
    'wide_resnet101_2',
    ResNet,
    reference='torchvision wide_resnet101_2',
    params=126_886_696,
    stage_sizes=(3, 4, 23, 3),
    width_per_group=128,
)
