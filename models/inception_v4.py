"""Inception-v4 and Inception-ResNet-v1/v2 (Szegedy et al. 2017), sharing stem and reduction parts.

`inception_v4` and `inception_resnet_v2` are the TF-slim networks behind Google's released
checkpoints, in timm's port (Cadene's): every conv is conv (no bias) → BN (with γ) → ReLU;
input 299. With `bn_scale=False`, `inception_resnet_v2` is keras.applications'
InceptionResNetV2 layer for layer. `inception_resnet_v1` is the paper's Figures 14–15 network.
Layer names follow timm and TF-slim (conv2d_1a, mixed_5b, block35_0, mixed_6a, …).

BatchNorm constants are fields: eps 1e-3 everywhere; the momentum (flax's convention: the
share of the running average kept) is timm's 0.9 (PyTorch's 0.1) by default, TF-slim's
decay 0.9997 or Keras's 0.99 with `bn_momentum`.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import INPUT_299, register

# One conv of a tower: (features, kernel) or (features, kernel, strides, padding), the
# positional fields of BasicConv; padding V is the paper's "V" (valid: no padding).
ConvSpec = tuple
V = 'VALID'

# TF-slim's inception arg_scope: variance_scaling_initializer() (He, fan-in, truncated normal) on
# every conv; slim.fully_connected's default xavier (Glorot uniform) on the classifier.
_SLIM_KERNEL = nn.initializers.variance_scaling(2.0, 'fan_in', 'truncated_normal')
_SLIM_DENSE = nn.initializers.glorot_uniform()

# The valid-padded stem and grid reductions shrink 75 px to 1×1: the smallest input they accept.
MIN_SIZE = 75


# Conv (no bias) → BN (eps 1e-3) → ReLU, same-padded (k // 2 on each side of each axis, so 1×7
# pads 0 and 3) unless the padding is V. timm's port keeps BN's γ (the registered counts are
# timm's); `bn_scale=False` drops it as TF-slim and Keras do.
BasicConv = functools.partial(layers.ConvNormAct, kernel_init=_SLIM_KERNEL, bn_epsilon=1e-3)
SHARED_FIELDS = ('bn_scale', 'bn_epsilon', 'bn_momentum', 'dtype')


def _shared(module: nn.Module) -> dict[str, Any]:
  """The fields a network passes to its blocks and their convs: BatchNorm's and the dtype."""
  return {field: getattr(module, field) for field in SHARED_FIELDS}


def _tower_fn(module: nn.Module, train: bool) -> Callable[..., jax.Array]:
  """tower(x, name, *specs): a chain of BasicConvs named `name` (one conv) or name_0, name_1…,
  created inside `module`'s compact call."""
  conv = functools.partial(BasicConv, **_shared(module))

  def tower(x: jax.Array, name: str, *specs: ConvSpec) -> jax.Array:
    for i, spec in enumerate(specs):
      x = conv(*spec, name=name if len(specs) == 1 else f'{name}_{i}')(x, train)
    return x

  return tower


def max_pool(x: jax.Array) -> jax.Array:
  """3×3 max pool, stride 2, valid: every grid reduction of these networks."""
  return layers.pool(x, 'max', 3, 2)


def avg_pool_same(x: jax.Array) -> jax.Array:
  """3×3 average pool, stride 1, same padding that is not counted (TF's SAME, timm's
  count_include_pad=False): the pooling branch of the Inception blocks."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def stem_convs(x: jax.Array, tower: Callable[..., jax.Array]) -> jax.Array:
  """The three convolutions every network here starts with: 299 → 149 → 147 → 147 (×64)."""
  x = tower(x, 'conv2d_1a', (32, 3, 2, V))
  x = tower(x, 'conv2d_2a', (32, 3, 1, V))
  return tower(x, 'conv2d_2b', (64, 3))


class _Block(nn.Module):
  """Fields shared by every block (`SHARED_FIELDS`): BatchNorm's and the compute dtype."""

  bn_scale: bool = True
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32


class Mixed3a(_Block):
  """Inception-v4 stem (Fig. 3): 3×3/2 max pool ‖ 3×3/2 conv 96 → 73×73×160."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate([max_pool(x), tower(x, 'conv', (96, 3, 2, V))], axis=-1)


class Mixed4a(_Block):
  """Inception-v4 stem (Fig. 3): 1×1 64 → 3×3 96 V ‖ 1×1 64 → 1×7 → 7×1 → 3×3 96 V → 71×71×192."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    b0 = tower(x, 'branch0', (64, 1), (96, 3, 1, V))
    b1 = tower(x, 'branch1', (64, 1), (64, (1, 7)), (64, (7, 1)), (96, 3, 1, V))
    return jnp.concatenate([b0, b1], axis=-1)


class Mixed5a(_Block):
  """Inception-v4 stem (Fig. 3): 3×3/2 conv 192 ‖ 3×3/2 max pool → 35×35×384."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate([tower(x, 'conv', (192, 3, 2, V)), max_pool(x)], axis=-1)


class InceptionA(_Block):
  """Inception-v4's 35×35 block (Fig. 4): four towers of 96 channels → 384."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate(
        [
            tower(x, 'branch0', (96, 1)),
            tower(x, 'branch1', (64, 1), (96, 3)),
            tower(x, 'branch2', (64, 1), (96, 3), (96, 3)),
            tower(avg_pool_same(x), 'branch3', (96, 1)),
        ],
        axis=-1,
    )


class InceptionB(_Block):
  """Inception-v4's 17×17 block (Fig. 5), factorised 7×7s: 384 + 256 + 256 + 128 → 1024."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate(
        [
            tower(x, 'branch0', (384, 1)),
            tower(x, 'branch1', (192, 1), (224, (1, 7)), (256, (7, 1))),
            tower(
                x, 'branch2', (192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))
            ),
            tower(avg_pool_same(x), 'branch3', (128, 1)),
        ],
        axis=-1,
    )


class InceptionC(_Block):
  """Inception-v4's 8×8 block (Fig. 6): two towers end in parallel 1×3 and 3×1 convs → 1536.
  The second tower runs 3×1 (448) then 1×3 (512) as TF-slim and timm do."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    b1 = tower(x, 'branch1_0', (384, 1))
    b2 = tower(x, 'branch2', (384, 1), (448, (3, 1)), (512, (1, 3)))
    return jnp.concatenate(
        [
            tower(x, 'branch0', (256, 1)),
            tower(b1, 'branch1_1a', (256, (1, 3))),
            tower(b1, 'branch1_1b', (256, (3, 1))),
            tower(b2, 'branch2_3a', (256, (1, 3))),
            tower(b2, 'branch2_3b', (256, (3, 1))),
            tower(avg_pool_same(x), 'branch3', (256, 1)),
        ],
        axis=-1,
    )


class ReductionA(_Block):
  """35×35 → 17×17 (Fig. 7, shared by all three networks): 3×3/2 conv n ‖ 1×1 k → 3×3 l →
  3×3/2 m ‖ 3×3/2 max pool. (k, l, m, n) from Table 1."""

  klmn: tuple[int, int, int, int] = (192, 224, 256, 384)

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    k, l, m, n = self.klmn
    return jnp.concatenate(
        [
            tower(x, 'branch0', (n, 3, 2, V)),
            tower(x, 'branch1', (k, 1), (l, 3), (m, 3, 2, V)),
            max_pool(x),
        ],
        axis=-1,
    )


class ReductionB(_Block):
  """Inception-v4's 17×17 → 8×8 (Fig. 8): 1×1 192 → 3×3/2 192 ‖ 1×1 256 → 1×7 256 → 7×1 320 →
  3×3/2 320 ‖ 3×3/2 max pool → 1536."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate(
        [
            tower(x, 'branch0', (192, 1), (192, 3, 2, V)),
            tower(x, 'branch1', (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, V)),
            max_pool(x),
        ],
        axis=-1,
    )


class InceptionV4(nn.Module):
  """Inception-v4 (Fig. 9): stem, 4 × A, Reduction-A, 7 × B, Reduction-B, 3 × C, average pool,
  dropout (keep 0.8 in TF-slim), fc. `repeats` sets the A/B/C counts.

  timm's layout and parameter count (42,679,816), without TF-slim's auxiliary head (on the last
  B block; timm and this model leave it out). Initialisation as TF-slim: He truncated-normal
  convs, Glorot-uniform classifier, BN γ = 1, β = 0. `bn_scale=False` is TF-slim's BN (no γ).
  """

  num_classes: int = 1000
  repeats: Sequence[int] = (4, 7, 3)
  dropout_rate: float = 0.2
  bn_scale: bool = True
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input_size(x, MIN_SIZE, 'Inception-v4')
    block = _shared(self)
    x = stem_convs(x.astype(self.dtype), _tower_fn(self, train))
    x = Mixed3a(**block, name='mixed_3a')(x, train)
    x = Mixed4a(**block, name='mixed_4a')(x, train)
    x = Mixed5a(**block, name='mixed_5a')(x, train)
    num_a, num_b, num_c = self.repeats
    for i in range(num_a):
      x = InceptionA(**block, name=f'inception_a_{i}')(x, train)
    x = ReductionA(klmn=(192, 224, 256, 384), **block, name='reduction_a')(x, train)
    for i in range(num_b):
      x = InceptionB(**block, name=f'inception_b_{i}')(x, train)
    x = ReductionB(**block, name='reduction_b')(x, train)
    for i in range(num_c):
      x = InceptionC(**block, name=f'inception_c_{i}')(x, train)
    return _classifier(x, self.num_classes, self.dropout_rate, train, self.dtype)


def _classifier(
    x: jax.Array, num_classes: int, dropout_rate: float, train: bool, dtype: Any
) -> jax.Array:
  x = jnp.mean(x, axis=(1, 2))  # 8×8 average pool at 299 px
  x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  x = nn.Dense(num_classes, kernel_init=_SLIM_DENSE, dtype=dtype, name='fc')(x)
  return x.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Inception-ResNet


class InceptionResNetBlock(_Block):
  """x + scale · up(concat(towers(x))), then ReLU if `activate` (paper §3.2–3.3, Fig. 20).

  `towers` lists each tower's convs as (features, kernel); `up` is a 1×1 conv with bias and no
  BN or activation (the paper puts BN on the traditional layers only) that restores x's width.
  Scaling the residual by 0.1–0.3 before the addition is what kept the wide networks training.
  """

  towers: Sequence[Sequence[ConvSpec]] = ()
  scale: float = 1.0
  activate: bool = True

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    mixed = jnp.concatenate(
        [tower(x, f'branch{i}', *specs) for i, specs in enumerate(self.towers)], axis=-1
    )
    up = nn.Conv(x.shape[-1], (1, 1), kernel_init=_SLIM_KERNEL, dtype=self.dtype, name='conv2d')(
        mixed
    )
    x = x + self.scale * up
    return nn.relu(x) if self.activate else x


class Mixed5b(_Block):
  """TF-slim Inception-ResNet-v2's stem ends like Inception-v3's 35×35 block: 96 ‖ 1×1 48 → 5×5
  64 ‖ 1×1 64 → 3×3 96 → 3×3 96 ‖ avg pool → 1×1 64 → 320."""

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    return jnp.concatenate(
        [
            tower(x, 'branch0', (96, 1)),
            tower(x, 'branch1', (48, 1), (64, 5)),
            tower(x, 'branch2', (64, 1), (96, 3), (96, 3)),
            tower(avg_pool_same(x), 'branch3', (64, 1)),
        ],
        axis=-1,
    )


class ResNetReductionB(_Block):
  """Inception-ResNet's 17×17 → 8×8 (Fig. 12 / Fig. 18): 1×1 256 → 3×3/2 w0 ‖ 1×1 256 → 3×3/2 w1
  ‖ 1×1 256 → 3×3 w2 → 3×3/2 w3 ‖ 3×3/2 max pool."""

  widths: tuple[int, int, int, int] = (384, 288, 288, 320)

  @nn.compact
  def __call__(self, x, train=False):
    tower = _tower_fn(self, train)
    w0, w1, w2, w3 = self.widths
    return jnp.concatenate(
        [
            tower(x, 'branch0', (256, 1), (w0, 3, 2, V)),
            tower(x, 'branch1', (256, 1), (w1, 3, 2, V)),
            tower(x, 'branch2', (256, 1), (w2, 3), (w3, 3, 2, V)),
            max_pool(x),
        ],
        axis=-1,
    )


# Block widths: towers of the A (35×35), B (17×17) and C (8×8) blocks, Reduction-A's (k, l, m, n)
# and Reduction-B's widths. v1: the paper's Figures 10–13 and Table 1 (the same as TF-slim-style
# facenet's inception_resnet_v1.py); v2: TF-slim's inception_resnet_v2.py, which timm ports.
INCEPTION_RESNET = {
    1: dict(
        block35=(((32, 1),), ((32, 1), (32, 3)), ((32, 1), (32, 3), (32, 3))),
        block17=(((128, 1),), ((128, 1), (128, (1, 7)), (128, (7, 1)))),
        block8=(((192, 1),), ((192, 1), (192, (1, 3)), (192, (3, 1)))),
        reduction_a=(192, 192, 256, 384),
        reduction_b=(384, 256, 256, 256),
    ),
    2: dict(
        block35=(((32, 1),), ((32, 1), (32, 3)), ((32, 1), (48, 3), (64, 3))),
        block17=(((192, 1),), ((128, 1), (160, (1, 7)), (192, (7, 1)))),
        block8=(((192, 1),), ((192, 1), (224, (1, 3)), (256, (3, 1)))),
        reduction_a=(256, 256, 384, 384),
        reduction_b=(384, 288, 288, 320),
    ),
}


class InceptionResNet(nn.Module):
  """Inception-ResNet (Fig. 15): stem, A blocks, Reduction-A, B blocks, Reduction-B, C blocks,
  average pool, dropout (keep 0.8), fc. Residuals scaled by `scales` (A, B, C) before the add.

  `inception_resnet_v2` is TF-slim's (timm's `inception_resnet_v2`, 55,843,464 parameters): an
  Inception-v3-like stem ending in Mixed_5b (320 channels) where the paper's Fig. 3 has the
  Inception-v4 stem, 10 / 20 / 9 scaled blocks (0.17 / 0.10 / 0.20), then one more C block
  with scale 1 and no ReLU (`final_block`), a 1×1 conv to 1536 channels; the paper's Fig. 15
  shows 5 / 10 / 5 blocks and its Figs. 16–19 other widths (e.g. 1154 channels at 17×17).
  TF-slim's auxiliary head is left out, as in timm and Keras.
  `inception_resnet_v1` is the paper's (Figs. 14, 10, 7, 11, 12, 13): 5 / 10 / 5 blocks on
  256 / 896 / 1792 channels, every block with its ReLU, 1792 features. The paper gives only the
  range 0.1–0.3 for the scales; the defaults are TF-slim's v2 values, as facenet's v1 also uses.
  facenet-pytorch's InceptionResnetV1 (a face-embedding net, Sandberg's facenet weights) is this
  network with the final unscaled C block (`final_block=True`) and a 512-d embedding (linear
  without bias, then BN) where the ImageNet classifier is.
  Initialisation as TF-slim: He truncated-normal convs, zero conv biases, Glorot classifier.
  """

  num_classes: int = 1000
  version: int = 2
  repeats: Sequence[int] = (10, 20, 9)
  scales: Sequence[float] = (0.17, 0.10, 0.20)
  final_block: bool = True
  dropout_rate: float = 0.2
  bn_scale: bool = True
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    spec = layers.choose('Inception-ResNet version', self.version, INCEPTION_RESNET)
    layers.check_input_size(x, MIN_SIZE, f'Inception-ResNet-v{self.version}')
    block = _shared(self)
    tower = _tower_fn(self, train)
    x = stem_convs(x.astype(self.dtype), tower)
    x = max_pool(x)
    x = tower(x, 'conv2d_3b', (80, 1))
    x = tower(x, 'conv2d_4a', (192, 3, 1, V))
    if self.version == 1:
      x = tower(x, 'conv2d_4b', (256, 3, 2, V))  # Fig. 14: 35×35×256
    else:
      x = Mixed5b(**block, name='mixed_5b')(max_pool(x), train)  # 35×35×320
    num_a, num_b, num_c = self.repeats
    scale_a, scale_b, scale_c = self.scales
    residual = functools.partial(InceptionResNetBlock, **block)
    for i in range(num_a):
      x = residual(towers=spec['block35'], scale=scale_a, name=f'block35_{i}')(x, train)
    x = ReductionA(klmn=spec['reduction_a'], **block, name='mixed_6a')(x, train)
    for i in range(num_b):
      x = residual(towers=spec['block17'], scale=scale_b, name=f'block17_{i}')(x, train)
    x = ResNetReductionB(widths=spec['reduction_b'], **block, name='mixed_7a')(x, train)
    for i in range(num_c):
      x = residual(towers=spec['block8'], scale=scale_c, name=f'block8_{i}')(x, train)
    if self.final_block:
      x = residual(towers=spec['block8'], scale=1.0, activate=False, name='block8')(x, train)
    if self.version == 2:
      x = tower(x, 'conv2d_7b', (1536, 1))
    return _classifier(x, self.num_classes, self.dropout_rate, train, self.dtype)


register(
    'inception_v4',
    InceptionV4,
    reference='timm inception_v4 (TF-slim layout)',
    params=42_679_816,
    native_input=INPUT_299,
)
register(
    'inception_resnet_v1',
    InceptionResNet,
    reference='Szegedy et al. 2017 Figs. 10-15 and Table 1 (count derived from them)',
    params=22_756_328,
    native_input=INPUT_299,
    version=1,
    repeats=(5, 10, 5),
    final_block=False,
)
register(
    'inception_resnet_v2',
    InceptionResNet,
    reference='timm inception_resnet_v2 (TF-slim)',
    params=55_843_464,
    native_input=INPUT_299,
    version=2,
    repeats=(10, 20, 9),
    final_block=True,
)
