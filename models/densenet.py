"""DenseNet (Huang et al. 2017): torchvision's ImageNet models and the paper's CIFAR models.

Every layer of a dense block sees the concatenation of all earlier feature maps in the block
and adds `growth_rate` (k) new ones; transitions (BN-ReLU-1×1 conv-2×2 avg pool) between
blocks shrink the channels by `compression` (θ) and halve the spatial size. The layers are
pre-activated (BN-ReLU-conv); only the ImageNet stem is a conv-BN-ReLU unit.

BatchNorm: PyTorch's momentum 0.1 (0.9 here) and eps 1e-5, as torchvision and the paper's Torch
code (liuzhuang13/DenseNet, Torch's defaults) both use, so neither is a field.
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import CIFAR10, register

STEMS = {'imagenet': '7×7/2 conv-BN-ReLU, 3×3/2 max pool', 'cifar': '3×3 conv'}
# Conv init, untruncated He normal: fan_in (torchvision's kaiming_normal_) or fan_out (the
# paper's Torch code).
INIT_MODES = {
    'fan_in': nn.initializers.variance_scaling(2.0, 'fan_in', 'normal'),
    'fan_out': layers.he_fan_out,
}


def cifar_block_config(depth: int, bottleneck: bool) -> tuple[int, int, int]:
  """Layers per block of the paper's 3-block CIFAR DenseNet of depth L.

  L counts the first conv, the dense layers' convs (2 per bottleneck layer), the two
  transition convs and the classifier: n = (L - 4) / 3, or (L - 4) / 6 with bottlenecks.
  """
  per_layer = 6 if bottleneck else 3
  if depth < 4 + per_layer or (depth - 4) % per_layer:
    raise ConfigError(f'DenseNet depth {depth} is not 4 + {per_layer}·n for a whole n ≥ 1.')
  n = (depth - 4) // per_layer
  return (n, n, n)


class DenseLayer(nn.Module):
  """[BN-ReLU-1×1 conv to bn_size·k] BN-ReLU-3×3 conv to k, each conv followed by dropout.

  Takes the list of earlier feature maps, concatenates them and returns only the k new maps,
  as torchvision's _DenseLayer does; the block appends them to the list.
  """

  growth_rate: int
  bn_size: int = 4
  bottleneck: bool = True
  drop_rate: float = 0.0
  init_mode: str = 'fan_in'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: Sequence[jax.Array], train: bool = False) -> jax.Array:
    conv_init = layers.choose('init mode', self.init_mode, INIT_MODES)
    y = jnp.concatenate(inputs, axis=-1)
    if self.bottleneck:
      y = nn.relu(layers.batch_norm(train, self.dtype, name='norm1')(y))
      y = nn.Conv(
          self.bn_size * self.growth_rate,
          (1, 1),
          use_bias=False,
          kernel_init=conv_init,
          dtype=self.dtype,
          name='conv1',
      )(y)
      y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    y = nn.relu(layers.batch_norm(train, self.dtype, name='norm2')(y))
    y = nn.Conv(
        self.growth_rate,
        (3, 3),
        padding=1,
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name='conv2',
    )(y)
    return nn.Dropout(self.drop_rate, deterministic=not train)(y)


class Transition(nn.Module):
  """BN-ReLU-1×1 conv to `features` channels, then 2×2 average pooling with stride 2."""

  features: int
  drop_rate: float = 0.0
  init_mode: str = 'fan_in'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.relu(layers.batch_norm(train, self.dtype, name='norm')(x))
    conv_init = layers.choose('init mode', self.init_mode, INIT_MODES)
    x = nn.Conv(
        self.features, (1, 1), use_bias=False, kernel_init=conv_init, dtype=self.dtype, name='conv'
    )(x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    return layers.pool(x, 'avg', 2, 2)


class DenseBlock(nn.Module):
  """`num_layers` dense layers; returns concat(input, new maps of layer 1, layer 2, ...)."""

  num_layers: int
  growth_rate: int
  bn_size: int = 4
  bottleneck: bool = True
  drop_rate: float = 0.0
  init_mode: str = 'fan_in'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features = [x]
    for i in range(self.num_layers):
      layer = DenseLayer(
          self.growth_rate,
          self.bn_size,
          self.bottleneck,
          self.drop_rate,
          self.init_mode,
          self.dtype,
          name=f'denselayer{i + 1}',
      )
      features.append(layer(tuple(features), train))
    return jnp.concatenate(features, axis=-1)


class DenseNet(nn.Module):
  """DenseNet with an ImageNet stem (7×7/2 conv-BN-ReLU-3×3/2 max pool) or a CIFAR one (3×3 conv).

  Then dense blocks joined by transitions that keep ⌊compression · C⌋ channels, and a final
  BN-ReLU-global average pool-fc. `drop_rate` follows the paper's Torch code: dropout after
  every conv but the first (torchvision drops only each dense layer's k new maps).
  `bottleneck=False, compression=1` is the plain DenseNet; the defaults are DenseNet-BC.
  Conv init: He normal over `init_mode` ('fan_in' as torchvision, 'fan_out' as the paper's
  Torch code); the fc has PyTorch's default uniform weights and a zero bias.
  """

  num_classes: int = 1000
  block_config: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  num_init_features: int = 64
  bn_size: int = 4
  bottleneck: bool = True
  compression: float = 0.5
  drop_rate: float = 0.0
  stem: str = 'imagenet'
  init_mode: str = 'fan_in'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    layers.choose('DenseNet stem', self.stem, STEMS)
    if not 0.0 < self.compression <= 1.0:
      raise ConfigError(f'DenseNet compression must be in (0, 1], got {self.compression}.')
    conv_init = layers.choose('init mode', self.init_mode, INIT_MODES)
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = layers.conv_norm_act(
          x,
          train,
          conv_name='conv0',
          norm_name='norm0',
          features=self.num_init_features,
          kernel_size=7,
          strides=2,
          kernel_init=conv_init,
          dtype=self.dtype,
      )
      x = layers.pool(x, 'max', 3, 2, padding=1)
    else:  # the paper's CIFAR/SVHN network: the first dense layer's BN-ReLU follows directly
      x = nn.Conv(
          self.num_init_features,
          (3, 3),
          padding=1,
          use_bias=False,
          kernel_init=conv_init,
          dtype=self.dtype,
          name='conv0',
      )(x)

    num_blocks = len(self.block_config)
    for b, num_layers in enumerate(self.block_config, start=1):
      x = DenseBlock(
          num_layers,
          self.growth_rate,
          self.bn_size,
          self.bottleneck,
          self.drop_rate,
          self.init_mode,
          self.dtype,
          name=f'denseblock{b}',
      )(x, train)
      if b < num_blocks:
        features = int(math.floor(self.compression * x.shape[-1]))
        x = Transition(features, self.drop_rate, self.init_mode, self.dtype, name=f'transition{b}')(
            x, train
        )

    x = nn.relu(layers.batch_norm(train, self.dtype, name=f'norm{num_blocks + 1}')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        self.num_classes,
        dtype=self.dtype,
        kernel_init=layers.torch_default_kernel,
        bias_init=nn.initializers.zeros,
        name='classifier',
    )(x)
    return x.astype(jnp.float32)


# torchvision's ImageNet models (k = 32, 64 stem channels; densenet161: k = 48, 96).
register(
    'densenet121',
    DenseNet,
    reference='torchvision densenet121',
    params=7_978_856,
    block_config=(6, 12, 24, 16),
)
register(
    'densenet169',
    DenseNet,
    reference='torchvision densenet169',
    params=14_149_480,
    block_config=(6, 12, 32, 32),
)
register(
    'densenet201',
    DenseNet,
    reference='torchvision densenet201',
    params=20_013_928,
    block_config=(6, 12, 48, 32),
)
register(
    'densenet161',
    DenseNet,
    reference='torchvision densenet161',
    params=28_681_000,
    block_config=(6, 12, 36, 24),
    growth_rate=48,
    num_init_features=96,
)
# The paper's CIFAR nets (Table 2, rounded there to 0.8M, 15.3M, 25.6M, 1.0M): 2k stem channels
# for DenseNet-BC, 16 for the plain DenseNet. 16 is the paper's text and gives Table 2's counts;
# the authors' released Torch code uses 2k stem channels for the plain DenseNet too. All four
# start with a 3×3 conv on the 32×32 image and draw He-normal weights over fan_out.
CIFAR = dict(native_input=CIFAR10, stem='cifar', init_mode='fan_out')
register(
    'densenet_bc_100_k12',
    DenseNet,
    reference='Huang et al. 2017 Table 2, DenseNet-BC (L=100, k=12)',
    params=769_162,
    block_config=cifar_block_config(100, bottleneck=True),
    growth_rate=12,
    num_init_features=24,
    **CIFAR,
)
register(
    'densenet_bc_250_k24',
    DenseNet,
    reference='Huang et al. 2017 Table 2, DenseNet-BC (L=250, k=24)',
    params=15_324_406,
    block_config=cifar_block_config(250, bottleneck=True),
    growth_rate=24,
    num_init_features=48,
    **CIFAR,
)
register(
    'densenet_bc_190_k40',
    DenseNet,
    reference='Huang et al. 2017 Table 2, DenseNet-BC (L=190, k=40)',
    params=25_624_430,
    block_config=cifar_block_config(190, bottleneck=True),
    growth_rate=40,
    num_init_features=80,
    **CIFAR,
)
register(
    'densenet40_k12',
    DenseNet,
    reference='Huang et al. 2017 Table 2, DenseNet (L=40, k=12)',
    params=1_019_722,
    block_config=cifar_block_config(40, bottleneck=False),
    growth_rate=12,
    num_init_features=16,
    bottleneck=False,
    compression=1.0,
    **CIFAR,
)
