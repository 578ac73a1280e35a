"""Inception v3 (Szegedy et al. 2016) as torchvision builds it, and BN-Inception (Ioffe &
Szegedy 2015) as the Caffe port in Cadene's pretrainedmodels builds it."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import INPUT_299, register

# A block's `conv` field: its conv unit with the network's BatchNorm fields and dtype bound.
ConvUnit = Callable[..., nn.Module]

# ---------------------------------------------------------------------------------------------
# Inception v3
# ---------------------------------------------------------------------------------------------

# torchvision's BasicConv2d: conv (no bias) → BatchNorm (eps 1e-3) → ReLU. Every conv starts
# N(0, 0.1) (torchvision's trunc_normal_ at ±2 is ±20σ: a plain normal). Padding is k // 2 per
# axis unless a call says `padding=0`: the strided and stem convs torchvision leaves unpadded.
BasicConv2d = functools.partial(
    layers.ConvNormAct, kernel_init=nn.initializers.normal(0.1), bn_epsilon=1e-3
)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """F.avg_pool2d(x, 3, stride=1, padding=1): the padding counts as zeros in the average."""
  return layers.pool(x, 'avg', 3, 1, padding=1)


class InceptionA(nn.Module):
  """35×35 module: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1.

  The paper's Figure 5 replaces every 5×5 by two 3×3; the released model (TF-slim's, ported by
  torchvision and Keras) keeps a 5×5 branch beside the double 3×3.
  """

  pool_features: int
  conv: ConvUnit = BasicConv2d

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = self.conv
    b1 = conv(64, 1, name='branch1x1')(x, train)
    b5 = conv(48, 1, name='branch5x5_1')(x, train)
    b5 = conv(64, 5, name='branch5x5_2')(b5, train)
    b3 = conv(64, 1, name='branch3x3dbl_1')(x, train)
    b3 = conv(96, 3, name='branch3x3dbl_2')(b3, train)
    b3 = conv(96, 3, name='branch3x3dbl_3')(b3, train)
    bp = conv(self.pool_features, 1, name='branch_pool')(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35 → 17 grid reduction (the paper's Figure 10): stride-2 convs beside a 3×3/2 max pool."""

  conv: ConvUnit = BasicConv2d

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = self.conv
    b3 = conv(384, 3, strides=2, padding=0, name='branch3x3')(x, train)
    bd = conv(64, 1, name='branch3x3dbl_1')(x, train)
    bd = conv(96, 3, name='branch3x3dbl_2')(bd, train)
    bd = conv(96, 3, strides=2, padding=0, name='branch3x3dbl_3')(bd, train)
    bp = layers.pool(x, 'max', 3, 2)
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  """17×17 module (Figure 6, n = 7): 7×7 convs factorised into 1×7 and 7×1, `c7` channels."""

  c7: int
  conv: ConvUnit = BasicConv2d

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv, c7 = self.conv, self.c7
    b1 = conv(192, 1, name='branch1x1')(x, train)
    b7 = conv(c7, 1, name='branch7x7_1')(x, train)
    b7 = conv(c7, (1, 7), name='branch7x7_2')(b7, train)
    b7 = conv(192, (7, 1), name='branch7x7_3')(b7, train)
    bd = conv(c7, 1, name='branch7x7dbl_1')(x, train)
    bd = conv(c7, (7, 1), name='branch7x7dbl_2')(bd, train)
    bd = conv(c7, (1, 7), name='branch7x7dbl_3')(bd, train)
    bd = conv(c7, (7, 1), name='branch7x7dbl_4')(bd, train)
    bd = conv(192, (1, 7), name='branch7x7dbl_5')(bd, train)
    bp = conv(192, 1, name='branch_pool')(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17 → 8 grid reduction: 1×1→stride-2 3×3 | 1×1→1×7→7×1→stride-2 3×3 | 3×3/2 max pool."""

  conv: ConvUnit = BasicConv2d

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = self.conv
    b3 = conv(192, 1, name='branch3x3_1')(x, train)
    b3 = conv(320, 3, strides=2, padding=0, name='branch3x3_2')(b3, train)
    b7 = conv(192, 1, name='branch7x7x3_1')(x, train)
    b7 = conv(192, (1, 7), name='branch7x7x3_2')(b7, train)
    b7 = conv(192, (7, 1), name='branch7x7x3_3')(b7, train)
    b7 = conv(192, 3, strides=2, padding=0, name='branch7x7x3_4')(b7, train)
    bp = layers.pool(x, 'max', 3, 2)
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """8×8 module (Figure 7): the 3×3 outputs split into parallel 1×3 and 3×1 convolutions."""

  conv: ConvUnit = BasicConv2d

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = self.conv
    b1 = conv(320, 1, name='branch1x1')(x, train)
    b3 = conv(384, 1, name='branch3x3_1')(x, train)
    b3 = jnp.concatenate(
        [
            conv(384, (1, 3), name='branch3x3_2a')(b3, train),
            conv(384, (3, 1), name='branch3x3_2b')(b3, train),
        ],
        axis=-1,
    )
    bd = conv(448, 1, name='branch3x3dbl_1')(x, train)
    bd = conv(384, 3, name='branch3x3dbl_2')(bd, train)
    bd = jnp.concatenate(
        [
            conv(384, (1, 3), name='branch3x3dbl_3a')(bd, train),
            conv(384, (3, 1), name='branch3x3dbl_3b')(bd, train),
        ],
        axis=-1,
    )
    bp = conv(192, 1, name='branch_pool')(_avg_pool_3x3(x), train)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier on the last 17×17 map (Mixed_6e, the paper's Figure 8):
  5×5/3 avg pool → 1×1 conv 128 → 5×5 conv 768 → fc.

  The 5×5 conv (init N(0, 0.01)) needs 5×5 pooled maps, i.e. 17×17 inputs (a 299 px image);
  the fc is initialised N(0, 0.001). Publishes its logits with sow('intermediates', ...).
  """

  num_classes: int
  conv: ConvUnit = BasicConv2d
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if min(x.shape[1:3]) < 17:
      raise ConfigError(
          f"inception_v3's auxiliary head needs Mixed_6e maps of at least 17×17 (a 299 px "
          f'input) but got {x.shape[1]}×{x.shape[2]}; train smaller inputs with aux_logits=False.'
      )
    x = layers.pool(x, 'avg', 5, 3)
    x = self.conv(128, 1, name='conv0')(x, train)
    x = self.conv(768, 5, padding=0, kernel_init=nn.initializers.normal(0.01), name='conv1')(
        x, train
    )
    x = jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1×1
    logits = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.normal(0.001),
        bias_init=layers.torch_default_bias(x.shape[-1]),
        dtype=self.dtype,
        name='fc',
    )(x).astype(jnp.float32)
    self.sow('intermediates', 'aux_logits', logits)
    return logits


class InceptionV3(nn.Module):
  """Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), torchvision's.

  Stem of five BasicConv2d and two 3×3/2 max pools (299 → 35×35×192), Mixed_5b–5d (35×35×288),
  Mixed_6a (17×17×768), Mixed_6b–6e (c7 = 128, 160, 160, 192), Mixed_7a (8×8×1280),
  Mixed_7b–7c (8×8×2048), global average pool, dropout 0.5, fc. The auxiliary head on Mixed_6e
  runs in training only (`aux_logits=True`). Init as torchvision: N(0, 0.1) convs and fc
  weights, N(0, 0.01) / N(0, 0.001) in the aux head, PyTorch's default fc biases.
  Differs from the paper: its best model ("BN-auxiliary") also batch-normalises the aux
  head's fully connected layer; its §6 counts 5 modules at 17×17 where the released model
  (TF-slim's, which torchvision ported) has 4 after the grid reduction.
  BatchNorm: torchvision's eps 1e-3 and momentum 0.1 (`bn_momentum=0.9`, flax's convention)
  are the defaults. Keras's InceptionV3 is `bn_scale=False` (no γ: its parameter count),
  `bn_momentum=0.99`, eps 1e-3; it also leaves the padding out of its 3×3 average pools, which
  this model does not reproduce. Inputs smaller than 299 px work down to 75 px with
  `aux_logits=False`.
  """

  num_classes: int = 1000
  aux_logits: bool = True
  dropout_rate: float = 0.5
  bn_scale: bool = True
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(
        BasicConv2d,
        bn_scale=self.bn_scale,
        bn_epsilon=self.bn_epsilon,
        bn_momentum=self.bn_momentum,
        dtype=self.dtype,
    )
    x = x.astype(self.dtype)
    x = conv(32, 3, strides=2, padding=0, name='conv2d_1a_3x3')(x, train)
    x = conv(32, 3, padding=0, name='conv2d_2a_3x3')(x, train)
    x = conv(64, 3, name='conv2d_2b_3x3')(x, train)
    x = layers.pool(x, 'max', 3, 2)
    x = conv(80, 1, name='conv2d_3b_1x1')(x, train)
    x = conv(192, 3, padding=0, name='conv2d_4a_3x3')(x, train)
    x = layers.pool(x, 'max', 3, 2)
    for name, pool_features in (('5b', 32), ('5c', 64), ('5d', 64)):
      x = InceptionA(pool_features, conv=conv, name=f'mixed_{name}')(x, train)
    x = InceptionB(conv=conv, name='mixed_6a')(x, train)
    for name, c7 in (('6b', 128), ('6c', 160), ('6d', 160), ('6e', 192)):
      x = InceptionC(c7, conv=conv, name=f'mixed_{name}')(x, train)
    if self.aux_logits and train:
      InceptionAux(self.num_classes, conv=conv, dtype=self.dtype, name='aux')(x, train)
    x = InceptionD(conv=conv, name='mixed_7a')(x, train)
    x = InceptionE(conv=conv, name='mixed_7b')(x, train)
    x = InceptionE(conv=conv, name='mixed_7c')(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.normal(0.1),
        bias_init=layers.torch_default_bias(x.shape[-1]),
        dtype=self.dtype,
        name='fc',
    )(x)
    return x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# BN-Inception
# ---------------------------------------------------------------------------------------------

# Figure 5 of Ioffe & Szegedy 2015: #1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3,
# pool, pool projection. 3c and 4e (#1×1 = 0, "max + pass through") reduce the grid: their
# 3×3 convs and max pool have stride 2 and the pooled input is concatenated unprojected.
BN_INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, str, int]] = {
    '3a': (64, 64, 64, 64, 96, 'avg', 32),
    '3b': (64, 64, 96, 64, 96, 'avg', 64),
    '3c': (0, 128, 160, 64, 96, 'max', 0),
    '4a': (224, 64, 96, 96, 128, 'avg', 128),
    '4b': (192, 96, 128, 96, 128, 'avg', 128),
    '4c': (160, 128, 160, 128, 160, 'avg', 128),
    '4d': (96, 128, 192, 160, 192, 'avg', 128),
    '4e': (0, 128, 192, 192, 256, 'max', 0),
    '5a': (352, 192, 320, 160, 224, 'avg', 128),
    '5b': (352, 192, 320, 192, 224, 'max', 128),
}


# The Caffe port's unit: conv with bias → BatchNorm (eps 1e-5) → ReLU, PyTorch's default init
# (U(±1/sqrt(fan_in)) weights and biases); padding k // 2.
ConvBNReLU = functools.partial(
    layers.ConvNormAct, use_bias=True, kernel_init=layers.torch_default_kernel
)


class BNInceptionBlock(nn.Module):
  """1×1 | 1×1→3×3 | 1×1→3×3→3×3 (GoogLeNet's 5×5 as two 3×3) | pool→1×1, concatenated.

  A block with no 1×1 branch reduces the grid: stride 2 on the last conv of each 3×3 branch
  and a 3×3/2 max pool whose output is concatenated as it is (no projection).
  """

  widths: tuple[int, int, int, int, int, str, int]
  conv: ConvUnit = ConvBNReLU
  se_reduction: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c1, c3r, c3, d3r, d3, pool_kind, proj = self.widths
    conv = self.conv
    stride = 1 if c1 else 2
    outputs = [conv(c1, 1, name='1x1')(x, train)] if c1 else []
    b3 = conv(c3r, 1, name='3x3_reduce')(x, train)
    outputs.append(conv(c3, 3, stride, name='3x3')(b3, train))
    bd = conv(d3r, 1, name='double_3x3_reduce')(x, train)
    bd = conv(d3, 3, name='double_3x3_1')(bd, train)
    outputs.append(conv(d3, 3, stride, name='double_3x3_2')(bd, train))
    if stride == 2:
      outputs.append(layers.pool(x, 'max', 3, 2, padding=0, ceil_mode=True))
    else:
      pooled = layers.pool(x, pool_kind, 3, 1, padding=1, ceil_mode=True)
      outputs.append(conv(proj, 1, name='pool_proj')(pooled, train))
    x = jnp.concatenate(outputs, axis=-1)
    if self.se_reduction is not None:  # SE-Inception (Hu et al. Fig. 2): gate the concatenation
      x = layers.SqueezeExcite(self.se_reduction, dtype=x.dtype, name='se')(x)
    return x


class BNInception(nn.Module):
  """BN-Inception, the Inception variant of the BatchNorm paper (Ioffe & Szegedy 2015), as
  Cadene's pretrainedmodels `bninception` (a port of a Caffe model) builds it.

  Differs from GoogLeNet (the paper's §4.2.1 and Figure 5): BatchNorm before every ReLU, no
  LRN, no dropout; each 5×5 conv replaced by two stacked 3×3 (the "double 3×3" branch); a
  third 28×28 module (3c); no pooling between stages but stride-2 modules 3c and 4e (3×3
  convs at stride 2 beside a max pool concatenated without projection); average or max
  pooling per module as Figure 5 says; other widths. Figure 5 prints 576 channels after 4c
  and 4d and 1024 after 4e, where its columns (and the port) give 608 and 1056. The Caffe
  port has no auxiliary heads, keeps conv biases, uses BN eps 1e-5 and PyTorch's momentum 0.1
  (`bn_epsilon`, `bn_momentum=0.9` in flax's convention; the paper gives neither) and a plain
  7×7 first conv; the paper's first conv is separable with depth multiplier 8
  (`separable_stem=True`: a 7×7 depthwise conv 3 → 24, then a 1×1 conv to 64). The port
  expects BGR 0–255 inputs minus (104, 117, 128); here inputs follow the pipeline's
  normalisation. PyTorch's default init (the port defines none). `dropout_rate` before the
  classifier is 0 as in BN-x30; the paper's ensemble used 0.05–0.1.

  `se_reduction` r makes it SE-BN-Inception (Hu et al. 2018, Fig. 2 and Table 2): each
  module's concatenated output is scaled by a squeeze-and-excitation gate (C → C/r → C, both
  with biases: 2·C²/r + C/r + C parameters), r = 16 as the paper. The authors' released
  SE-BN-Inception (their Caffe prototxt) has the port's layers, pools and widths but no conv
  biases (`conv_bias=False`; BatchNorm's shift takes their place), so `se_bninception` has both.
  """

  num_classes: int = 1000
  separable_stem: bool = False
  se_reduction: int | None = None
  conv_bias: bool = True
  dropout_rate: float = 0.0
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(
        ConvBNReLU,
        use_bias=self.conv_bias,
        bn_epsilon=self.bn_epsilon,
        bn_momentum=self.bn_momentum,
        dtype=self.dtype,
    )
    x = x.astype(self.dtype)
    if self.separable_stem:
      x = nn.Conv(
          3 * 8,
          (7, 7),
          2,
          padding=3,
          feature_group_count=3,
          use_bias=False,
          kernel_init=layers.torch_default_kernel,
          dtype=self.dtype,
          name='conv1_7x7_s2_depthwise',
      )(x)
      x = conv(64, 1, name='conv1_7x7_s2')(x, train)
    else:
      x = conv(64, 7, 2, name='conv1_7x7_s2')(x, train)
    x = layers.pool(x, 'max', 3, 2, padding=0, ceil_mode=True)
    x = conv(64, 1, name='conv2_3x3_reduce')(x, train)
    x = conv(192, 3, name='conv2_3x3')(x, train)
    x = layers.pool(x, 'max', 3, 2, padding=0, ceil_mode=True)
    for name, widths in BN_INCEPTION_BLOCKS.items():
      x = BNInceptionBlock(
          widths, conv=conv, se_reduction=self.se_reduction, name=f'inception_{name}'
      )(x, train)
    x = jnp.mean(x, axis=(1, 2))  # the port's 7×7 average pool at 224 px
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(
        self.num_classes,
        kernel_init=layers.torch_default_kernel,
        bias_init=layers.torch_default_bias(x.shape[-1]),
        dtype=self.dtype,
        name='fc',
    )(x)
    return x.astype(jnp.float32)


# inception_v3's count is in training mode, with the aux head (without: 23,834,568, timm's).
register(
    'inception_v3',
    InceptionV3,
    reference='torchvision inception_v3 (aux_logits=True)',
    params=27_161_264,
    native_input=INPUT_299,
)
register(
    'bninception',
    BNInception,
    reference="Cadene's pretrainedmodels bninception (imgclsmob's count)",
    params=11_295_240,
)
# The authors' SE-BN-Inception (their Caffe prototxt: 11,931,622 weights; Table 2: 2.04
# GFLOPs against BN-Inception's 2.03).
register(
    'se_bninception',
    BNInception,
    reference="Hu et al. 2018 SE-BN-Inception (the authors' Caffe prototxt)",
    params=11_931_622,
    se_reduction=16,
    conv_bias=False,
)
