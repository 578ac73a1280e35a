"""VGG (Simonyan & Zisserman 2015) in torchvision's layout: configurations A, B, D, E, ± BN."""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import register

# Convs per stage (widths 64-128-256-512-512), each stage ending in a 2×2 max pool.
CONFIGS = {'A': (1, 1, 2, 2, 2), 'B': (2, 2, 2, 2, 2), 'D': (2, 2, 3, 3, 3), 'E': (2, 2, 4, 4, 4)}

# torchvision's init: kaiming_normal_(mode='fan_out', nonlinearity='relu') (not truncated),
# N(0, 0.01) for linear layers, zero biases.
conv_init = layers.he_fan_out
dense_init = nn.initializers.normal(0.01)


class VGG(nn.Module):
  """3×3 pad-1 convs (`conv{stage}_{i}`, the paper's names) → 2×2 max pools → adaptive avg pool
  to 7×7 → fc6, fc7 (4096, ReLU, dropout 0.5) → head.

  As torchvision: `batch_norm` adds BN after every conv and keeps the conv biases; init is
  kaiming-normal fan_out. The paper instead initialised the deeper nets from a trained A (or,
  after submission, with Glorot init), had no BN and no adaptive pool (224 inputs give 7×7
  already); its A-LRN and C (with 1×1 convs) configurations are not built here.

  `stacked_3x3=False` replaces each stage's n stacked 3×3 convs by one (2n+1)×(2n+1) conv of
  the same receptive field and width (`conv{stage}_1`): §4.1's shallow net, B with 5×5 layers
  (7 % worse top-1 than B), and §2.3's 7×7 against three 3×3 (49C² against 27C² weights).
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = CONFIGS['D']
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  batch_norm: bool = False
  hidden_width: int = 4096
  pool_size: int = 7  # adaptive average pool output; 0 skips it (then the input size fixes fc6)
  dropout_rate: float = 0.5
  stacked_3x3: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(
        layers.conv_norm_act,
        train=train,
        use_bias=True,
        kernel_init=conv_init,
        bias_init=nn.initializers.zeros,
        norm=self.batch_norm,
        dtype=self.dtype,
    )
    x = x.astype(self.dtype)
    for stage, (n, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
      kernels = [3] * n if self.stacked_3x3 else [2 * n + 1]
      for i, kernel in enumerate(kernels, start=1):
        x = conv(
            x,
            conv_name=f'conv{stage}_{i}',
            norm_name=f'bn{stage}_{i}',
            features=width,
            kernel_size=kernel,
        )
      x = layers.pool(x, 'max', 2, 2)
    if self.pool_size:
      x = layers.adaptive_avg_pool(x, self.pool_size)
    x = x.reshape(x.shape[0], -1)
    for name in ('fc6', 'fc7'):
      x = nn.relu(
          nn.Dense(self.hidden_width, kernel_init=dense_init, dtype=self.dtype, name=name)(x)
      )
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)


register('vgg11', VGG, reference='torchvision vgg11', params=132_863_336, stage_sizes=CONFIGS['A'])
register('vgg13', VGG, reference='torchvision vgg13', params=133_047_848, stage_sizes=CONFIGS['B'])
register('vgg16', VGG, reference='torchvision vgg16', params=138_357_544, stage_sizes=CONFIGS['D'])
register('vgg19', VGG, reference='torchvision vgg19', params=143_667_240, stage_sizes=CONFIGS['E'])
register(
    'vgg11_bn',
    VGG,
    reference='torchvision vgg11_bn',
    params=132_868_840,
    stage_sizes=CONFIGS['A'],
    batch_norm=True,
)
register(
    'vgg13_bn',
    VGG,
    reference='torchvision vgg13_bn',
    params=133_053_736,
    stage_sizes=CONFIGS['B'],
    batch_norm=True,
)
register(
    'vgg16_bn',
    VGG,
    reference='torchvision vgg16_bn',
    params=138_365_992,
    stage_sizes=CONFIGS['D'],
    batch_norm=True,
)
register(
    'vgg19_bn',
    VGG,
    reference='torchvision vgg19_bn',
    params=143_678_248,
    stage_sizes=CONFIGS['E'],
    batch_norm=True,
)
