"""VGG (Simonyan & Zisserman 2015) in torchvision's layout: configurations A, B, D, E, ± BN, and
the paper's A-LRN and C."""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import register

# Convs per stage (widths 64-128-256-512-512), each stage ending in a 2×2 max pool.
CONFIGS = {
    'A': (1, 1, 2, 2, 2),
    'B': (2, 2, 2, 2, 2),
    'C': (2, 2, 3, 3, 3),  # D's depths, with `conv1x1_stages=C_1X1_STAGES`
    'D': (2, 2, 3, 3, 3),
    'E': (2, 2, 4, 4, 4),
}
# Configuration C: the third conv of stages 3, 4 and 5 is 1×1 (conv1-256, conv1-512, conv1-512).
C_1X1_STAGES = (3, 4, 5)
# Krizhevsky et al. 2012's LRN constants (k=2, n=5, α=1e-4 on the raw sum, β=0.75), which the
# VGG paper's A-LRN takes over (§2.1): `layers.local_response_norm`'s defaults, as AlexNet's.
LRN = dict(size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_size=False)

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
  already).

  Table 1's other two columns: `lrn=True` adds one LRN after conv1_1's ReLU, before pool1
  (A-LRN, `vgg11_lrn`; Krizhevsky's constants, `LRN`; no parameters, so A's count), and
  `conv1x1_stages` makes the last conv of those stages (1-based) a 1×1 (C, `vgg16_c`: D's depths
  with a 1×1 third conv in stages 3–5, the 1×1s adding non-linearity but no receptive field).

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
  lrn: bool = False
  conv1x1_stages: Sequence[int] = ()
  dtype: Any = jnp.float32

  def _kernels(self, stage: int, n: int) -> list[int]:
    """Kernel sizes of `stage`'s convs: n 3×3s, the last a 1×1 in conv1x1_stages, or one
    (2n+1)×(2n+1) without stacked_3x3."""
    if not self.stacked_3x3:
      return [2 * n + 1]
    return [3] * (n - 1) + [1 if stage in self.conv1x1_stages else 3]

  def _check(self) -> None:
    stages = range(1, len(self.stage_sizes) + 1)
    if any(s not in stages for s in self.conv1x1_stages):
      raise ConfigError(
          f'VGG conv1x1_stages={tuple(self.conv1x1_stages)} names a stage that is not one of '
          f'1..{len(self.stage_sizes)}; list the (1-based) stages whose last conv is 1×1.'
      )
    if self.conv1x1_stages and not self.stacked_3x3:
      raise ConfigError(
          'VGG conv1x1_stages needs stacked_3x3=True (a stage that is one large conv has no last '
          '1×1); set one of them only.'
      )

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check()
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
      for i, kernel in enumerate(self._kernels(stage, n), start=1):
        x = conv(
            x,
            conv_name=f'conv{stage}_{i}',
            norm_name=f'bn{stage}_{i}',
            features=width,
            kernel_size=kernel,
        )
        if self.lrn and (stage, i) == (1, 1):
          x = layers.local_response_norm(x, **LRN)
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
# The paper's Table 1 columns torchvision lacks (Table 2 prints 133 M for A-LRN, 134 M for C).
register(
    'vgg11_lrn',
    VGG,
    reference='Simonyan & Zisserman 2015 Table 1 A-LRN (Table 2: 133 M)',
    params=132_863_336,
    stage_sizes=CONFIGS['A'],
    lrn=True,
)
register(
    'vgg16_c',
    VGG,
    reference='Simonyan & Zisserman 2015 Table 1 C (Table 2: 134 M)',
    params=133_638_952,
    stage_sizes=CONFIGS['C'],
    conv1x1_stages=C_1X1_STAGES,
)
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
