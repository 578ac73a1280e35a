"""SqueezeNet (Iandola et al. 2016): Fire modules, as torchvision builds v1.0 and v1.1.

A Fire module squeezes to a few channels with 1×1 convs, then expands with 1×1 and 3×3 convs
whose outputs are concatenated. Every conv has a bias and there is no BatchNorm; the classifier
is a 1×1 conv to the classes + ReLU, averaged over the whole map.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import register

# torchvision's kaiming_uniform_ (a = 0): U(±sqrt(6 / fan_in)); biases start at zero.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'uniform')

# (squeeze, expand 1×1, expand 3×3) of fire2 … fire9, the same in both versions.
FIRES = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)
# conv1 of each version: (features, kernel), stride 2, no padding.
CONV1 = {'1_0': (96, 7), '1_1': (64, 3)}
# The paper's §6 shortcuts.
BYPASSES = {
    'none': 'no shortcuts',
    'simple': 'identity where the widths agree',
    'complex': 'identity where the widths agree, else a 1×1 conv',
}


def output_side(size: int, kernel: int, num_pools: int) -> int:
  """Side of the last map: conv1 (k×k/2, no padding), then 3×3/2 ceil-mode max pools."""
  size = (size - kernel) // 2 + 1
  for _ in range(num_pools):
    size = -(-(size - 3) // 2) + 1 if size >= 1 else 0
  return size


def min_input_size(kernel: int, num_pools: int) -> int:
  """The smallest input that leaves the last pool at least 1×1 (torchvision: 21 for v1.0, 17
  for v1.1)."""
  return next(n for n in range(kernel, 10_000) if output_side(n, kernel, num_pools) >= 1)


class Fire(nn.Module):
  """squeeze 1×1 + ReLU → [expand 1×1 + ReLU, expand 3×3 (pad 1) + ReLU], concatenated.

  `bypass`: 'identity' adds the input (the paper's simple bypass, where the widths agree),
  'conv' adds a 1×1 conv (with bias) of the input (its complex bypass), 'none' adds nothing.
  """

  squeeze: int
  expand1x1: int
  expand3x3: int
  bypass: str = 'none'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda features, kernel, name, padding=0: nn.Conv(
        features,
        (kernel, kernel),
        padding=padding,
        kernel_init=conv_init,
        dtype=self.dtype,
        name=name,
    )
    s = nn.relu(conv(self.squeeze, 1, 'squeeze')(x))
    y = jnp.concatenate(
        [
            nn.relu(conv(self.expand1x1, 1, 'expand1x1')(s)),
            nn.relu(conv(self.expand3x3, 3, 'expand3x3', padding=1)(s)),
        ],
        axis=-1,
    )
    if self.bypass == 'identity':
      return x + y
    if self.bypass == 'conv':
      return conv(y.shape[-1], 1, 'bypass')(x) + y
    return y


class SqueezeNet(nn.Module):
  """torchvision's SqueezeNet: conv1 + ReLU, Fire modules fire2 … fire9 in `stage_sizes` groups
  with a 3×3/2 ceil-mode max pool before each group, dropout, 1×1 conv10 to the classes + ReLU,
  global average pool.

  v1.0 (the paper's Table 1): conv1 96 × 7×7/2, pools after conv1, fire4 and fire8 (stage_sizes
  3, 4, 1). v1.1 (the authors' repository): conv1 64 × 3×3/2, pools after conv1, fire3 and fire5
  (2, 2, 4); 2.35× fewer mult-adds at 224 ("2.4x less computation", its README), nearly the
  same parameters. The i-th Fire module has the
  widths of fire(i+1) in both. `bypass` adds the paper's §6 shortcuts: 'simple' around every
  Fire module whose input and output widths agree (fire3, 5, 7 and 9; no parameters), 'complex'
  also 1×1 convs around the others (fire2, 4, 6 and 8). Init as torchvision: kaiming uniform,
  conv10 N(0, 0.01), zero biases (the authors' Caffe model uses Xavier init).
  """

  num_classes: int = 1000
  version: str = '1_0'
  stage_sizes: Sequence[int] = (3, 4, 1)
  bypass: str = 'none'
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    features, kernel = layers.choose('SqueezeNet version', self.version, CONV1)
    layers.choose('bypass', self.bypass, BYPASSES)
    if sum(self.stage_sizes) > len(FIRES):
      raise ConfigError(
          f'SqueezeNet has at most {len(FIRES)} Fire modules; stage_sizes='
          f'{tuple(self.stage_sizes)} asks for {sum(self.stage_sizes)}.'
      )
    min_size = min_input_size(kernel, len(self.stage_sizes))
    if min(x.shape[1:3]) < min_size:
      raise ConfigError(
          f'SqueezeNet {self.version} with {len(self.stage_sizes)} max pools needs '
          f'inputs of at least {min_size}×{min_size} pixels, got '
          f'{x.shape[1]}×{x.shape[2]}.'
      )
    x = nn.Conv(
        features,
        (kernel, kernel),
        2,
        padding=0,
        kernel_init=conv_init,
        dtype=self.dtype,
        name='conv1',
    )(x.astype(self.dtype))
    x = nn.relu(x)
    widths = iter(FIRES)
    number = 2
    for num_fires in self.stage_sizes:
      x = layers.pool(x, 'max', 3, 2, padding=0, ceil_mode=True)
      for _ in range(num_fires):
        squeeze, expand1x1, expand3x3 = next(widths)
        bypass = 'none'
        if self.bypass != 'none' and x.shape[-1] == expand1x1 + expand3x3:
          bypass = 'identity'
        elif self.bypass == 'complex':
          bypass = 'conv'
        x = Fire(
            squeeze, expand1x1, expand3x3, bypass=bypass, dtype=self.dtype, name=f'fire{number}'
        )(x)
        number += 1
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name='dropout')(x)
    x = nn.Conv(
        self.num_classes,
        (1, 1),
        kernel_init=nn.initializers.normal(0.01),
        dtype=self.dtype,
        name='conv10',
    )(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return x.astype(jnp.float32)


register(
    'squeezenet1_0',
    SqueezeNet,
    reference='torchvision squeezenet1_0',
    params=1_248_424,
    version='1_0',
    stage_sizes=(3, 4, 1),
)
register(
    'squeezenet1_1',
    SqueezeNet,
    reference='torchvision squeezenet1_1',
    params=1_235_496,
    version='1_1',
    stage_sizes=(2, 2, 4),
)
