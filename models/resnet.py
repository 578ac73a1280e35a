"""ResNet (He et al. 2016): torchvision's ImageNet models and the paper's CIFAR models.

The blocks are shared with the families built on them: `BottleneckBlock` takes torchvision's
`groups` and `base_width` (ResNeXt, Wide ResNet-50-2), and every block takes `se_reduction`,
squeeze-and-excitation on its residual branch (SE-ResNet, SE-ResNeXt: senet.py).

Each conv is bias-free with He fan_out init and PyTorch's padding k // 2, and with its BN (and
ReLU) forms one `layers.conv_norm_act` unit whose variables sit flat in the block (conv1, bn1,
downsample_conv, downsample_bn: torchvision's names). BatchNorm uses PyTorch's momentum 0.1
(0.9 here) and eps 1e-5, as torchvision, timm and fb.resnet.torch (Torch's defaults) all do,
so neither is a field.
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


def _last_scale(zero_init_residual: bool) -> layers.Initializer:
  """Init of a branch's last BN scale: zeros make the block start as its shortcut."""
  return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


def _check_plain(net: nn.Module) -> None:
  if not net.residual and net.zero_init_residual:
    raise ConfigError(
        'zero_init_residual=True zeroes the last BN of every block, which without shortcuts '
        '(residual=False) silences the network; set one of them.'
    )


def _join(block: nn.Module, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
  """The end of a block: squeeze-and-excitation of the branch `y` (if `block.se_reduction`),
  then ReLU of its sum with the shortcut of the block input `x` (of `y` alone in a plain net,
  `block.residual=False`)."""
  features = y.shape[-1]
  if block.se_reduction is not None:
    y = layers.SqueezeExcite(block.se_reduction, dtype=block.dtype, name='se')(y)
  if not block.residual:
    return nn.relu(y)

  def project() -> jax.Array:  # 'B': 1×1 conv + BN, created only where the shape changes
    return layers.conv_norm_act(
        x,
        train,
        conv_name='downsample_conv',
        norm_name='downsample_bn',
        features=features,
        kernel_size=1,
        strides=block.strides,
        act=None,
        dtype=block.dtype,
    )

  return nn.relu(y + layers.residual_shortcut(x, features, block.strides, block.shortcut, project))


class BasicBlock(nn.Module):
  """Two 3×3 conv + BN layers; ReLU after the addition.

  The shortcut is the identity, or, where the shape changes, a 1×1 conv + BN projection
  (`shortcut='B'`, torchvision) or a parameter-free zero-padding identity (`shortcut='A'`,
  the paper's CIFAR networks). `se_reduction` r scales the branch, after its last BN, by a
  squeeze-and-excitation gate with a C/r bottleneck (module 'se'). `residual=False` drops the
  shortcut: the paper's "plain" block, ReLU of the branch alone.
  """

  features: int
  strides: int = 1
  shortcut: str = 'B'
  zero_init_residual: bool = False
  se_reduction: int | None = None
  residual: bool = True
  dtype: Any = jnp.float32

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(
        layers.conv_norm_act, train=train, features=self.features, dtype=self.dtype
    )
    y = unit(x, conv_name='conv1', norm_name='bn1', strides=self.strides)
    y = unit(
        y,
        conv_name='conv2',
        norm_name='bn2',
        act=None,
        bn_scale_init=_last_scale(self.zero_init_residual),
    )
    return _join(self, x, y, train)


class BottleneckBlock(nn.Module):
  """1×1 reduce → 3×3 → 1×1 expand (×4), each with BN; ReLU after the addition.

  The inner width is `int(features * base_width / 64) * groups` with a grouped 3×3, as in
  torchvision (ResNeXt, Wide-ResNet). The stride sits on the 3×3 (`stride_on_3x3=True`,
  torchvision's "ResNet v1.5") or on the first 1×1 (the paper and its Caffe models).
  Shortcut and `se_reduction` as in `BasicBlock`.
  """

  features: int
  strides: int = 1
  groups: int = 1
  base_width: int = 64
  stride_on_3x3: bool = True
  shortcut: str = 'B'
  zero_init_residual: bool = False
  se_reduction: int | None = None
  residual: bool = True
  dtype: Any = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(layers.conv_norm_act, train=train, dtype=self.dtype)
    width = int(self.features * (self.base_width / 64.0)) * self.groups
    stride_1x1, stride_3x3 = (1, self.strides) if self.stride_on_3x3 else (self.strides, 1)
    y = unit(
        x, conv_name='conv1', norm_name='bn1', features=width, kernel_size=1, strides=stride_1x1
    )
    y = unit(
        y,
        conv_name='conv2',
        norm_name='bn2',
        features=width,
        strides=stride_3x3,
        groups=self.groups,
    )
    y = unit(
        y,
        conv_name='conv3',
        norm_name='bn3',
        features=self.features * self.expansion,
        kernel_size=1,
        act=None,
        bn_scale_init=_last_scale(self.zero_init_residual),
    )
    return _join(self, x, y, train)


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}


def _classify(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
  """Global average pool and fc: PyTorch's default U(±1/√fan_in) weights, zero bias (as
  fb.resnet.torch); float32 logits."""
  x = jnp.mean(x, axis=(1, 2))
  x = nn.Dense(num_classes, kernel_init=layers.torch_default_kernel, dtype=dtype, name='fc')(x)
  return x.astype(jnp.float32)


class ResNet(nn.Module):
  """ImageNet ResNet as torchvision builds it: 7×7/2 conv + BN + ReLU, 3×3/2 max pool, four
  stages of 64-128-256-512 (×4 for bottlenecks) channels, global average pool, fc.

  Defaults are torchvision's: stride on the 3×3 ("v1.5"; `stride_on_3x3=False` is the paper's
  v1), projection shortcuts only where the shape changes, kaiming fan_out init, and BN scales
  of one (`zero_init_residual=True` zeroes each block's last BN scale, as Goyal et al. 2017
  and the flax ImageNet example do). `groups` and `width_per_group` widen or group the
  bottlenecks (resnext.py, wide_resnet.py); `se_reduction` adds squeeze-and-excitation to every
  block (senet.py). Blocks are named `layer{stage}_{index}` (torchvision's `layer2.0` is
  `layer2_0`). `residual=False` removes every shortcut: the paper's plain networks (Fig. 3).
  """

  num_classes: int = 1000
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = 'bottleneck'
  groups: int = 1
  width_per_group: int = 64
  stride_on_3x3: bool = True
  zero_init_residual: bool = False
  se_reduction: int | None = None
  residual: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_plain(self)
    block_cls = layers.choose('block', self.block, BLOCKS)
    extra = {}
    if block_cls is BottleneckBlock:
      extra = {
          'groups': self.groups,
          'base_width': self.width_per_group,
          'stride_on_3x3': self.stride_on_3x3,
      }
    elif self.groups != 1 or self.width_per_group != 64:
      raise ConfigError(
          'BasicBlock only supports groups=1 and width_per_group=64 (as '
          'torchvision); use block="bottleneck".'
      )
    x = x.astype(self.dtype)
    x = layers.conv_norm_act(
        x,
        train,
        conv_name='conv1',
        norm_name='bn1',
        features=64,
        kernel_size=7,
        strides=2,
        dtype=self.dtype,
    )
    x = layers.pool(x, 'max', 3, 2, padding=1)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        x = block_cls(
            64 * 2**stage,
            strides=2 if stage > 0 and index == 0 else 1,
            zero_init_residual=self.zero_init_residual,
            se_reduction=self.se_reduction,
            residual=self.residual,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
            **extra,
        )(x, train)
    return _classify(x, self.num_classes, self.dtype)


class CifarResNet(nn.Module):
  """The CIFAR ResNets of He et al. 2016 §4.2: 3×3 conv 16 + BN + ReLU, three stages of
  n = (depth − 2) / 6 basic blocks with 16-32-64 channels (stride 2 at the starts of stages 2
  and 3), global average pool, fc.

  `shortcut='A'` (the paper's choice for these models) pads with zeros where the shape
  changes; `'B'` projects with 1×1 conv + BN. Init as fb.resnet.torch's reproduction
  (kaiming fan_out); akamaster/pytorch_resnet_cifar10 uses fan_in, which differs only at the
  two convs that double the width. `residual=False` gives the plain nets of §4.2 (Fig. 6, left),
  the same layers without shortcuts, whose training error grows with depth (degradation).
  """

  num_classes: int = 10
  depth: int = 20
  shortcut: str = 'A'
  zero_init_residual: bool = False
  residual: bool = True
  widths: Sequence[int] = (16, 32, 64)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ConfigError(
          f'CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {self.depth}.'
      )
    _check_plain(self)
    n = (self.depth - 2) // 6
    x = x.astype(self.dtype)
    x = layers.conv_norm_act(
        x, train, conv_name='conv1', norm_name='bn1', features=self.widths[0], dtype=self.dtype
    )
    for stage, width in enumerate(self.widths):
      for index in range(n):
        x = BasicBlock(
            width,
            strides=2 if stage > 0 and index == 0 else 1,
            shortcut=self.shortcut,
            zero_init_residual=self.zero_init_residual,
            residual=self.residual,
            dtype=self.dtype,
            name=f'layer{stage + 1}_{index}',
        )(x, train)
    return _classify(x, self.num_classes, self.dtype)


register(
    'resnet18',
    ResNet,
    reference='torchvision resnet18',
    params=11_689_512,
    stage_sizes=(2, 2, 2, 2),
    block='basic',
)
register(
    'resnet34',
    ResNet,
    reference='torchvision resnet34',
    params=21_797_672,
    stage_sizes=(3, 4, 6, 3),
    block='basic',
)
register(
    'resnet50',
    ResNet,
    reference='torchvision resnet50',
    params=25_557_032,
    stage_sizes=(3, 4, 6, 3),
    block='bottleneck',
)
register(
    'resnet101',
    ResNet,
    reference='torchvision resnet101',
    params=44_549_160,
    stage_sizes=(3, 4, 23, 3),
    block='bottleneck',
)
register(
    'resnet152',
    ResNet,
    reference='torchvision resnet152',
    params=60_192_808,
    stage_sizes=(3, 8, 36, 3),
    block='bottleneck',
)
# He et al. 2016 Table 6 (0.27M ... 1.7M); exact counts as akamaster/pytorch_resnet_cifar10.
register(
    'resnet20',
    CifarResNet,
    reference='He et al. 2016 §4.2, Table 6: option A shortcuts',
    params=269_722,
    native_input=CIFAR10,
    depth=20,
)
register(
    'resnet32',
    CifarResNet,
    reference='He et al. 2016 §4.2, Table 6: option A shortcuts',
    params=464_154,
    native_input=CIFAR10,
    depth=32,
)
register(
    'resnet44',
    CifarResNet,
    reference='He et al. 2016 §4.2, Table 6: option A shortcuts',
    params=658_586,
    native_input=CIFAR10,
    depth=44,
)
register(
    'resnet56',
    CifarResNet,
    reference='He et al. 2016 §4.2, Table 6: option A shortcuts',
    params=853_018,
    native_input=CIFAR10,
    depth=56,
)
register(
    'resnet110',
    CifarResNet,
    reference='He et al. 2016 §4.2, Table 6: option A shortcuts',
    params=1_727_962,
    native_input=CIFAR10,
    depth=110,
)
