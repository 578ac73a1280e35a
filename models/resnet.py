"""ResNet (He et al. 2016): torchvision's ImageNet models and the paper's CIFAR models.

The blocks are shared with the families built on them (ResNeXt, Wide-ResNet, SE-ResNet):
`BottleneckBlock` takes torchvision's `groups` and `base_width`, and every block takes an
optional `block_hook`: a module factory, built as `block_hook()` inside each block and applied
to the residual branch before the addition (e.g. squeeze-and-excitation; name it with
`functools.partial(SE, name='se')`, else flax names it `SE_0`).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import CIFAR10, register

ModuleFactory = Callable[..., nn.Module]

# He et al. 2015 init on fan_out (torchvision's kaiming_normal_(mode='fan_out'), fb.resnet.torch).
conv_init = layers.he_fan_out
# PyTorch's nn.Linear weight init, U(±1/sqrt(fan_in)); the bias starts at zero (fb.resnet.torch).
dense_init = layers.torch_default_kernel


def conv(
    features: int, kernel: int, strides: int, dtype: Any, name: str, groups: int = 1
) -> nn.Conv:
  """Bias-free k×k conv with PyTorch padding k // 2 (so sizes match torchvision)."""
  return nn.Conv(
      features,
      (kernel, kernel),
      strides,
      padding=kernel // 2,
      feature_group_count=groups,
      use_bias=False,
      kernel_init=conv_init,
      dtype=dtype,
      name=name,
  )


def zero_pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
  """Option A shortcut: subsample by `strides`, append zero channels up to `features`.

  No parameters. akamaster/pytorch_resnet_cifar10 puts the zeros half before and half after
  the input channels; appending them gives an equivalent network (a fixed relabelling of the
  channels).
  """
  x = x[:, ::strides, ::strides, :]
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, features - x.shape[-1])))


class BasicBlock(nn.Module):
  """Two 3×3 conv + BN layers; ReLU after the addition.

  The shortcut is the identity, or, where the shape changes, a 1×1 conv + BN projection
  (`shortcut='B'`, torchvision) or a parameter-free zero-padding identity (`shortcut='A'`,
  the paper's CIFAR networks).
  """

  features: int
  strides: int = 1
  shortcut: str = 'B'
  zero_init_residual: bool = False
  block_hook: ModuleFactory | None = None
  dtype: Any = jnp.float32

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = conv(self.features, 3, self.strides, self.dtype, 'conv1')(x)
    y = nn.relu(bn(name='bn1')(y))
    y = conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = bn(scale_init=last_scale, name='bn2')(y)
    if self.block_hook is not None:
      y = self.block_hook()(y)
    return nn.relu(y + _shortcut(x, self.features, self.strides, self.shortcut, bn, self.dtype))


class BottleneckBlock(nn.Module):
  """1×1 reduce → 3×3 → 1×1 expand (×4), each with BN; ReLU after the addition.

  The inner width is `int(features * base_width / 64) * groups` with a grouped 3×3, as in
  torchvision (ResNeXt, Wide-ResNet). The stride sits on the 3×3 (`stride_on_3x3=True`,
  torchvision's "ResNet v1.5") or on the first 1×1 (the paper and its Caffe models).
  """

  features: int
  strides: int = 1
  groups: int = 1
  base_width: int = 64
  stride_on_3x3: bool = True
  shortcut: str = 'B'
  zero_init_residual: bool = False
  block_hook: ModuleFactory | None = None
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    last_scale = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    width = int(self.features * (self.base_width / 64.0)) * self.groups
    stride_1x1, stride_3x3 = (1, self.strides) if self.stride_on_3x3 else (self.strides, 1)
    y = conv(width, 1, stride_1x1, self.dtype, 'conv1')(x)
    y = nn.relu(bn(name='bn1')(y))
    y = conv(width, 3, stride_3x3, self.dtype, 'conv2', groups=self.groups)(y)
    y = nn.relu(bn(name='bn2')(y))
    y = conv(self.features * self.expansion, 1, 1, self.dtype, 'conv3')(y)
    y = bn(scale_init=last_scale, name='bn3')(y)
    if self.block_hook is not None:
      y = self.block_hook()(y)
    shortcut = _shortcut(
        x, self.features * self.expansion, self.strides, self.shortcut, bn, self.dtype
    )
    return nn.relu(y + shortcut)


def _shortcut(
    x: jax.Array, features: int, strides: int, kind: str, bn: ModuleFactory, dtype: Any
) -> jax.Array:
  """Identity when the shape is kept; else projection ('B') or zero padding ('A')."""
  if kind not in ('A', 'B'):
    raise ValueError(f"Unknown shortcut {kind!r}; choose 'A' (zero padding) or 'B' (projection).")
  if strides == 1 and x.shape[-1] == features:
    return x
  if kind == 'A':
    return zero_pad_shortcut(x, features, strides)
  x = conv(features, 1, strides, dtype, 'downsample_conv')(x)
  return bn(name='downsample_bn')(x)


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}


def _block_class(kind: str) -> type[nn.Module]:
  if kind not in BLOCKS:
    raise ValueError(f'Unknown block {kind!r}; choose one of {", ".join(BLOCKS)}.')
  return BLOCKS[kind]


@register('resnet18', stage_sizes=(2, 2, 2, 2), block='basic')
@register('resnet34', stage_sizes=(3, 4, 6, 3), block='basic')
@register('resnet50', stage_sizes=(3, 4, 6, 3), block='bottleneck')
@register('resnet101', stage_sizes=(3, 4, 23, 3), block='bottleneck')
@register('resnet152', stage_sizes=(3, 8, 36, 3), block='bottleneck')
class ResNet(nn.Module):
  """ImageNet ResNet as torchvision builds it: 7×7/2 conv + BN + ReLU, 3×3/2 max pool, four
  stages of 64-128-256-512 (×4 for bottlenecks) channels, global average pool, fc.

  Defaults are torchvision's: stride on the 3×3 ("v1.5"; `stride_on_3x3=False` is the paper's
  v1), projection shortcuts only where the shape changes, kaiming fan_out init, and BN scales
  of one (`zero_init_residual=True` zeroes each block's last BN scale, as Goyal et al. 2017
  and the flax ImageNet example do). Blocks are named `layer{stage}_{index}` (torchvision's
  `layer2.0` is `layer2_0`).
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = 'bottleneck'
  groups: int = 1
  width_per_group: int = 64
  stride_on_3x3: bool = True
  zero_init_residual: bool = False
  block_hook: ModuleFactory | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    block_cls = _block_class(self.block)
    extra = {}
    if block_cls is BottleneckBlock:
      extra = {
          'groups': self.groups,
          'base_width': self.width_per_group,
          'stride_on_3x3': self.stride_on_3x3,
      }
    elif self.groups != 1 or self.width_per_group != 64:
      raise ValueError('BasicBlock only supports groups=1 and width_per_group=64 (as torchvision).')
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
    x = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(x))
    x = layers.pool(x, 'max', 3, 2, padding=1)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        x = block_cls(
            64 * 2**stage,
            strides=2 if stage > 0 and index == 0 else 1,
            zero_init_residual=self.zero_init_residual,
            block_hook=self.block_hook,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
            **extra,
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


@register('resnet20', depth=20, native_input=CIFAR10)
@register('resnet32', depth=32, native_input=CIFAR10)
@register('resnet44', depth=44, native_input=CIFAR10)
@register('resnet56', depth=56, native_input=CIFAR10)
@register('resnet110', depth=110, native_input=CIFAR10)
class CifarResNet(nn.Module):
  """The CIFAR ResNets of He et al. 2016 §4.2: 3×3 conv 16 + BN + ReLU, three stages of
  n = (depth − 2) / 6 basic blocks with 16-32-64 channels (stride 2 at the starts of stages 2
  and 3), global average pool, fc.

  `shortcut='A'` (the paper's choice for these models) pads with zeros where the shape
  changes; `'B'` projects with 1×1 conv + BN. Init as fb.resnet.torch's reproduction
  (kaiming fan_out); akamaster/pytorch_resnet_cifar10 uses fan_in, which differs only at the
  two convs that double the width.
  """

  num_classes: int = 10
  depth: int = 20
  shortcut: str = 'A'
  zero_init_residual: bool = False
  widths: Sequence[int] = (16, 32, 64)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(
          f'CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), ' f'got {self.depth}.'
      )
    n = (self.depth - 2) // 6
    x = x.astype(self.dtype)
    x = conv(self.widths[0], 3, 1, self.dtype, 'conv1')(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name='bn1')(x))
    for stage, width in enumerate(self.widths):
      for index in range(n):
        x = BasicBlock(
            width,
            strides=2 if stage > 0 and index == 0 else 1,
            shortcut=self.shortcut,
            zero_init_residual=self.zero_init_residual,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)
