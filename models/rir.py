"""ResNet in ResNet (Targ, Almeida & Lyman 2016, "Resnet in Resnet: Generalizing Residual
Architectures"): residual blocks built from generalized residual blocks with two streams.

A generalized residual block (the paper's eq. 1) carries a residual stream r and a transient
stream t of equal width:

  r' = σ(conv(r, W_r→r) + conv(t, W_t→r) + shortcut(r))
  t' = σ(conv(r, W_r→t) + conv(t, W_t→t))

σ is BatchNorm then ReLU, applied after the sum, shortcut included ("same-stream and
cross-stream activations are summed, along with the shortcut connection for the residual
stream, before applying batch normalization and ReLU"). The four convs are one conv over the
concatenated streams, channels [:w] residual and [w:] transient, so its kernel's blocks are
W_r→r, W_t→r, W_r→t, W_t→t: the paper's "ResNet Init", with the identity kept out of the
weights so that weight decay does not pull it to zero. An RiR block is a two-layer ResNet block
whose layers are generalized residual blocks, with an outer shortcut across them.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import CIFAR10, register

# "MSR initialization" (He et al. 2015) for all weights: N(0, 2 / fan_in). The fused conv's fan_in
# counts both input streams, so each stream's sum of two convs starts with He variance.
msr_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# Every conv is bias-free with MSR init and PyTorch's padding k // 2: with its BN (and ReLU) as
# one unit in the stem and the head; alone in the blocks, where sums come before the BN.
unit = functools.partial(layers.conv_norm_act, kernel_init=msr_init)
conv = functools.partial(unit, norm=False, act=None)


def _shortcut(r: jax.Array, features: int, strides: int, kind: str, dtype: Any) -> jax.Array:
  """Identity; where the shape changes, a bias-free 1×1 projection ('B') or zero padding ('A')."""

  def project() -> jax.Array:
    return conv(
        r,
        conv_name='downsample_conv',
        features=features,
        kernel_size=1,
        strides=strides,
        dtype=dtype,
    )

  return layers.residual_shortcut(r, features, strides, kind, project)


class GeneralizedResidualBlock(nn.Module):
  """One layer of both streams (eq. 1). Input and output: r and t concatenated on channels."""

  features: int  # per stream
  strides: int = 1
  shortcut: str = 'B'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    width = x.shape[-1] // 2
    r = x[..., :width]
    y = conv(
        x, conv_name='conv', features=2 * self.features, strides=self.strides, dtype=self.dtype
    )
    skip = _shortcut(r, self.features, self.strides, self.shortcut, self.dtype)
    y = y + jnp.pad(skip, [(0, 0)] * 3 + [(0, self.features)])  # residual stream only
    return nn.relu(layers.batch_norm(train, self.dtype, name='bn')(y))


class RiRBlock(nn.Module):
  """`layers_per_block` generalized residual blocks (stride on the first), plus an outer
  shortcut added to the residual stream of the last one's output (`outer_shortcut`)."""

  features: int  # per stream
  strides: int = 1
  layers_per_block: int = 2
  shortcut: str = 'B'
  outer_shortcut: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = x
    for index in range(self.layers_per_block):
      y = GeneralizedResidualBlock(
          self.features,
          self.strides if index == 0 else 1,
          self.shortcut,
          self.dtype,
          name=f'unit{index}',
      )(y, train)
    if not self.outer_shortcut:
      return y
    r = x[..., : x.shape[-1] // 2]
    skip = _shortcut(r, self.features, self.strides, self.shortcut, self.dtype)
    return y + jnp.pad(skip, [(0, 0)] * 3 + [(0, self.features)])


class ResNetInResNet(nn.Module):
  """The paper's CIFAR "18-layer + wide" RiR, as public ports build it (osmr/imgclsmob's
  rir_cifar10, weiaicunzai/pytorch-cifar100, nutszebra/resnet_in_resnet): a 3×3 conv + BN + ReLU
  into each stream, 8 RiR blocks (2-3-3 per stage, 2 layers each: 16 layers) of 48-96-192
  channels per stream (96-192-384 in all), stride 2 on the first layer of stages 2 and 3, then
  the concatenated streams through a 1×1 conv to the classes + BN and global average pooling.

  The paper's own tables were not available here. Choices, and where the ports differ: the
  outer RiR shortcut (nutszebra has it after the last layer's σ, as here; osmr and weiaicunzai
  leave it out: `outer_shortcut=False`); projection shortcuts (osmr, weiaicunzai) or zero
  padding (nutszebra: `shortcut='A'`); bias-free convs (osmr; the others have biases that the
  following BN cancels); no ReLU on the logits (osmr; nutszebra has one; weiaicunzai ends with
  a 3×3/2 conv and two fc layers). With `outer_shortcut=False` this is osmr's rir_cifar10.
  BatchNorm: PyTorch's momentum 0.1 (0.9 here) and eps 1e-5, as the PyTorch ports (not fields).
  """

  num_classes: int = 10
  widths: Sequence[int] = (48, 96, 192)  # per stream
  stage_sizes: Sequence[int] = (2, 3, 3)  # RiR blocks per stage
  layers_per_block: int = 2
  shortcut: str = 'B'
  outer_shortcut: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    # Two stems (image → r, image → t) as one conv and one BN over both streams' channels.
    x = unit(
        x, train, conv_name='conv1', norm_name='bn1', features=2 * self.widths[0], dtype=self.dtype
    )
    for stage, (width, num_blocks) in enumerate(zip(self.widths, self.stage_sizes)):
      for index in range(num_blocks):
        x = RiRBlock(
            width,
            2 if stage > 0 and index == 0 else 1,
            self.layers_per_block,
            self.shortcut,
            self.outer_shortcut,
            self.dtype,
            name=f'layer{stage + 1}_{index}',
        )(x, train)
    x = unit(
        x,
        train,
        conv_name='final_conv',
        norm_name='final_bn',
        features=self.num_classes,
        kernel_size=1,
        act=None,
        dtype=self.dtype,
    )
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


# osmr/imgclsmob's rir_cifar10 has 9,492,980 parameters; the outer shortcuts' two 1×1
# projections add 48·96 + 96·192.
register(
    'rir',
    ResNetInResNet,
    reference="Targ et al. 2016 CIFAR '18-layer + wide'; "
    'osmr/imgclsmob rir_cifar10 with outer shortcuts',
    params=9_516_020,
    native_input=CIFAR10,
)
