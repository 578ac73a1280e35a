"""ShuffleNet v1 (Zhang et al. 2018) and ShuffleNet v2 (Ma et al. 2018).

v1 follows megvii's official code (megvii-model/ShuffleNet-Series, ShuffleNetV1): its unit,
initialisation and bias-free classifier; v2 is torchvision's `shufflenet_v2_x*` (PyTorch's
default initialisation, classifier with a bias).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import register

# Table 1 of Zhang et al.: output channels of stages 2-4 of ShuffleNet 1× for each group count.
V1_STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
MEGVII_BN_BIAS = nn.initializers.constant(1e-4)  # megvii's BN bias init


def megvii_conv_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  """megvii's conv init: N(0, std = 1 / input channels per group), so std 1 for depthwise."""
  return jax.random.normal(key, shape, dtype) / shape[-2]


# Bias-free conv (padding k // 2) → BatchNorm (eps 1e-5) → ReLU (act=None: none), PyTorch's
# default conv init; megvii's v1 passes its own initialisers.
ConvNorm = functools.partial(layers.ConvNormAct, kernel_init=layers.torch_default_kernel)


class ShuffleUnitV1(nn.Module):
  """1×1 group conv → BN → ReLU → channel shuffle → 3×3 depthwise → BN → 1×1 group conv → BN.

  Stride 1 adds the input; stride 2 concatenates a 3×3/2 average-pooled input in front of the
  branch (whose width is therefore `features` minus the input's); ReLU after either.
  `first_groups` is the first conv's group count (1 for the first unit: 24 input channels).
  megvii's code shuffles with the inverse permutation (a (c/g, g) reshape); both spread each
  group's channels over the groups of the second conv.
  """

  features: int
  strides: int = 1
  groups: int = 3
  first_groups: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    inputs = x.shape[-1]
    mid = self.features // 4  # megvii: a quarter of the output, concatenated part included
    out = self.features - inputs if self.strides == 2 else self.features
    conv = functools.partial(
        ConvNorm, kernel_init=megvii_conv_init, bn_bias_init=MEGVII_BN_BIAS, dtype=self.dtype
    )
    y = conv(mid, 1, groups=self.first_groups, name='compress_conv')(x, train)
    y = layers.channel_shuffle(y, self.groups)
    y = conv(mid, 3, self.strides, groups=mid, act=None, name='dw_conv')(y, train)
    y = conv(out, 1, groups=self.groups, act=None, name='expand_conv')(y, train)
    if self.strides == 1:
      return nn.relu(y + x)
    shortcut = layers.pool(x, 'avg', 3, 2, padding=1)
    return nn.relu(jnp.concatenate([shortcut, y], axis=-1))


class ShuffleNetV1(nn.Module):
  """ShuffleNet v1: 3×3/2 conv + 3×3/2 max pool, three stages of shuffle units, global pool, fc.

  `width_multiplier` s scales the stage widths of Table 1 (int(c·s), as megvii's and
  imgclsmob's code); `stage_repeats` counts units per stage (0 drops the stage). The stem
  stays `stem_channels`: megvii's code uses 24 at 1× and 1.5×, 12 at 0.5× (16 for g=8) and 48
  at 2×; imgclsmob's int(24·s). `fc_bias=False` is megvii's classifier (imgclsmob's has a
  bias). Init (megvii): stem conv and fc N(0, 0.01), other convs `megvii_conv_init`, BN bias
  1e-4.
  """

  num_classes: int = 1000
  groups: int = 3
  width_multiplier: float = 1.0
  stage_repeats: Sequence[int] = (4, 8, 4)
  stem_channels: int = 24
  fc_bias: bool = False
  dtype: Any = jnp.float32

  def _channels(self) -> list[int]:
    if self.groups not in V1_STAGE_CHANNELS:
      raise ConfigError(
          f'ShuffleNet v1 has no groups={self.groups}; choose one of '
          f'{", ".join(map(str, V1_STAGE_CHANNELS))} (Table 1 of the paper).'
      )
    if len(self.stage_repeats) != 3:
      raise ConfigError(f'stage_repeats={self.stage_repeats}: ShuffleNet v1 has 3 stages.')
    channels = [int(c * self.width_multiplier) for c in V1_STAGE_CHANNELS[self.groups]]
    inputs = [self.stem_channels] + channels[:-1]
    for c, c_in, g_first in zip(channels, inputs, (1, self.groups, self.groups)):
      if (c // 4) % self.groups or (c - c_in) % self.groups or c_in % g_first:
        raise ConfigError(
            f'width_multiplier={self.width_multiplier} with groups={self.groups} and '
            f'stem_channels={self.stem_channels} gives {c} channels, which do not split into '
            f'{self.groups} groups (bottleneck {c // 4}, concatenated branch {c - c_in}).'
        )
    return channels

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    channels = self._channels()
    x = x.astype(self.dtype)
    x = ConvNorm(
        self.stem_channels,
        3,
        2,
        kernel_init=nn.initializers.normal(0.01),
        bn_bias_init=MEGVII_BN_BIAS,
        dtype=self.dtype,
        name='conv1',
    )(x, train)
    x = layers.pool(x, 'max', 3, 2, padding=1)
    for stage, (features, repeats) in enumerate(zip(channels, self.stage_repeats)):
      for i in range(repeats):
        x = ShuffleUnitV1(
            features,
            2 if i == 0 else 1,
            self.groups,
            1 if stage == 0 and i == 0 else self.groups,
            dtype=self.dtype,
            name=f'stage{stage + 2}_{i}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        use_bias=self.fc_bias,
        kernel_init=nn.initializers.normal(0.01),
        dtype=self.dtype,
        name='fc',
    )(x)
    return x.astype(jnp.float32)


class ShuffleUnitV2(nn.Module):
  """ShuffleNet v2 unit, torchvision's InvertedResidual.

  Stride 1: split the channels in half; the first half passes unchanged, the second goes
  through 1×1 + BN + ReLU → 3×3 depthwise + BN → 1×1 + BN + ReLU. Stride 2: the whole input
  feeds that branch (depthwise stride 2) and a second one, 3×3/2 depthwise + BN → 1×1 + BN +
  ReLU. Concatenate the halves, then shuffle with 2 groups.
  """

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    half = self.features // 2
    conv = functools.partial(ConvNorm, dtype=self.dtype)
    if self.strides == 1:
      if x.shape[-1] != 2 * half:
        raise ConfigError(
            f'A stride-1 ShuffleNet v2 unit needs {2 * half} input channels, got {x.shape[-1]}.'
        )
      left, x = jnp.split(x, 2, axis=-1)
    else:
      left = conv(x.shape[-1], 3, self.strides, groups=x.shape[-1], act=None, name='branch1_0')(
          x, train
      )
      left = conv(half, 1, name='branch1_1')(left, train)
    right = conv(half, 1, name='branch2_0')(x, train)
    right = conv(half, 3, self.strides, groups=half, act=None, name='branch2_1')(right, train)
    right = conv(half, 1, name='branch2_2')(right, train)
    return layers.channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nn.Module):
  """ShuffleNet v2, torchvision's layout: 3×3/2 conv 24 + 3×3/2 max pool, stages of
  `stage_repeats` units (the first of each stride 2; 0 drops the stage), 1×1 conv5 + BN + ReLU,
  global pool, fc.

  PyTorch's default init throughout, as torchvision. megvii's official code differs only in
  its init, a bias-free classifier and dropout 0.2 before it at 2×.
  """

  num_classes: int = 1000
  stage_channels: Sequence[int] = (116, 232, 464)
  stage_repeats: Sequence[int] = (4, 8, 4)
  stem_channels: int = 24
  last_channels: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if len(self.stage_repeats) != len(self.stage_channels):
      raise ConfigError(
          f'stage_repeats={self.stage_repeats} and stage_channels='
          f'{self.stage_channels} must have one entry per stage.'
      )
    conv = functools.partial(ConvNorm, dtype=self.dtype)
    x = conv(self.stem_channels, 3, 2, name='conv1')(x.astype(self.dtype), train)
    x = layers.pool(x, 'max', 3, 2, padding=1)
    for stage, (features, repeats) in enumerate(zip(self.stage_channels, self.stage_repeats)):
      for i in range(repeats):
        x = ShuffleUnitV2(
            features, 2 if i == 0 else 1, dtype=self.dtype, name=f'stage{stage + 2}_{i}'
        )(x, train)
    x = conv(self.last_channels, 1, name='conv5')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        kernel_init=layers.torch_default_kernel,
        bias_init=layers.torch_default_bias(x.shape[-1]),
        dtype=self.dtype,
        name='fc',
    )(x)
    return x.astype(jnp.float32)


# v1: megvii's ShuffleNetV1 1×; imgclsmob publishes its counts with a fc bias (1,000 more).
V1_REFERENCE = "megvii ShuffleNetV1 1x (imgclsmob's count less its fc bias)"
register('shufflenet_v1_g1', ShuffleNetV1, reference=V1_REFERENCE, params=1_530_936, groups=1)
register('shufflenet_v1_g2', ShuffleNetV1, reference=V1_REFERENCE, params=1_732_848, groups=2)
register('shufflenet_v1_g3', ShuffleNetV1, reference=V1_REFERENCE, params=1_864_728, groups=3)
register('shufflenet_v1_g4', ShuffleNetV1, reference=V1_REFERENCE, params=1_967_344, groups=4)
register('shufflenet_v1_g8', ShuffleNetV1, reference=V1_REFERENCE, params=2_433_768, groups=8)
register(
    'shufflenet_v2_x0_5',
    ShuffleNetV2,
    reference='torchvision shufflenet_v2_x0_5',
    params=1_366_792,
    stage_channels=(48, 96, 192),
)
register(
    'shufflenet_v2_x1_0',
    ShuffleNetV2,
    reference='torchvision shufflenet_v2_x1_0',
    params=2_278_604,
    stage_channels=(116, 232, 464),
)
register(
    'shufflenet_v2_x1_5',
    ShuffleNetV2,
    reference='torchvision shufflenet_v2_x1_5',
    params=3_503_624,
    stage_channels=(176, 352, 704),
)
register(
    'shufflenet_v2_x2_0',
    ShuffleNetV2,
    reference='torchvision shufflenet_v2_x2_0',
    params=7_393_996,
    stage_channels=(244, 488, 976),
    last_channels=2048,
)
