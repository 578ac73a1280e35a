"""GoogLeNet / Inception v1 (Szegedy et al. 2015): torchvision's layout and the paper's."""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError
from models import layers
from models.registry import register

# Table 1 of the paper: (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj) per block.
INCEPTION_BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    '3a': (64, 96, 128, 16, 32, 32),
    '3b': (128, 128, 192, 32, 96, 64),
    '4a': (192, 96, 208, 16, 48, 64),
    '4b': (160, 112, 224, 24, 64, 64),
    '4c': (128, 128, 256, 24, 64, 64),
    '4d': (112, 144, 288, 32, 64, 64),
    '4e': (256, 160, 320, 32, 128, 128),
    '5a': (256, 160, 320, 32, 128, 128),
    '5b': (384, 192, 384, 48, 128, 128),
}
STYLES = ('torchvision', 'paper')

# torchvision: trunc_normal_(std=0.01, a=-2, b=2) on conv and linear weights; the bounds are
# absolute (±200 σ), so this is a plain normal. Caffe's "xavier" filler is U(±sqrt(3 / fan_in)).
_TORCHVISION_KERNEL = nn.initializers.normal(0.01)
_CAFFE_XAVIER = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


def conv_unit(module: nn.Module) -> Callable[..., layers.ConvNormAct]:
  """`module`'s conv unit (padding k // 2): its style, BN constants and dtype.

  torchvision's BasicConv2d is conv without bias → BN → ReLU, N(0, 0.01) weights; the paper's
  (Caffe bvlc_googlenet) conv with bias (init 0.2) → ReLU, Caffe "xavier" weights, no BN.
  """
  paper = module.style == 'paper'
  return functools.partial(
      layers.ConvNormAct,
      use_bias=paper,
      norm=not paper,
      kernel_init=_CAFFE_XAVIER if paper else _TORCHVISION_KERNEL,
      bias_init=nn.initializers.constant(0.2),
      bn_epsilon=module.bn_epsilon,
      bn_momentum=module.bn_momentum,
      dtype=module.dtype,
  )


class Inception(nn.Module):
  """Four branches concatenated: 1×1; 1×1 → 3×3; 1×1 → "5×5"; 3×3 max pool → 1×1.

  torchvision's "5×5" branch is a 3×3 conv (a bug kept for compatibility with its weights);
  `style='paper'` uses the true 5×5. Names follow torchvision (branch2_0 = branch2.0).
  `naive=True` is the paper's Fig. 2a: no 1×1 reductions (branch2_0, branch3_0) and no pool
  projection (branch4_1), so the 3×3 and 5×5 convs see every input channel and the pooled input
  passes whole: the output has c1 + c3 + c5 + input channels.
  """

  widths: tuple[int, int, int, int, int, int]
  style: str = 'torchvision'
  naive: bool = False
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    c1, c3r, c3, c5r, c5, proj = self.widths
    conv = conv_unit(self)
    k5 = 5 if self.style == 'paper' else 3

    def reduced(x: jax.Array, width: int, name: str) -> jax.Array:
      """`x` through the 1×1 reduction (or pool projection) `name`; `x` itself when naive."""
      return x if self.naive else conv(width, 1, name=name)(x, train)

    b1 = conv(c1, 1, name='branch1')(x, train)
    b2 = conv(c3, 3, name='branch2_1')(reduced(x, c3r, 'branch2_0'), train)
    b3 = conv(c5, k5, name='branch3_1')(reduced(x, c5r, 'branch3_0'), train)
    b4 = reduced(layers.pool(x, 'max', 3, 1, padding=1, ceil_mode=True), proj, 'branch4_1')
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier: 4×4 avg pool → 1×1 conv 128 → fc 1024 → dropout 0.7 → fc classes.

  The paper (Caffe) pools 5×5 stride 3, which gives 4×4 from 4a/4d's 14×14 maps at 224 px;
  torchvision pools adaptively to 4×4, so any input size works. It publishes its logits with
  `sow('intermediates', 'aux_logits', ...)` for the train step to weigh in.
  """

  num_classes: int
  dropout_rate: float = 0.7
  style: str = 'torchvision'
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    paper = self.style == 'paper'
    if paper:
      if min(x.shape[1:3]) < 5:
        raise ConfigError(
            f"googlenet_paper's auxiliary heads pool 5×5 but got {x.shape[1]}×{x.shape[2]} maps "
            'at 4a/4d; use inputs of at least 79 px, aux_logits=False, or model googlenet.'
        )
      x = layers.pool(x, 'avg', 5, 3, padding=0, ceil_mode=True)
    else:
      x = layers.adaptive_avg_pool(x, 4)
    x = conv_unit(self)(128, 1, name='conv')(x, train)
    x = x.reshape(x.shape[0], -1)
    kernel_init = _CAFFE_XAVIER if paper else _TORCHVISION_KERNEL
    fc1_bias = nn.initializers.constant(0.2) if paper else layers.torch_default_bias(x.shape[-1])
    x = nn.relu(
        nn.Dense(1024, kernel_init=kernel_init, bias_init=fc1_bias, dtype=self.dtype, name='fc1')(x)
    )
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    fc2_bias = nn.initializers.zeros if paper else layers.torch_default_bias(1024)
    logits = nn.Dense(
        self.num_classes, kernel_init=kernel_init, bias_init=fc2_bias, dtype=self.dtype, name='fc2'
    )(x).astype(jnp.float32)
    self.sow('intermediates', 'aux_logits', logits)
    return logits


class GoogLeNet(nn.Module):
  """GoogLeNet: stem, nine inception blocks (3a–5b), global average pool, dropout, fc.

  `googlenet` is torchvision's: BN after every conv and no conv biases, no LRN, 3×3 convs in
  the "5×5" branches, a 2×2 max pool before 5a, dropout 0.2, aux heads with BN and adaptive
  4×4 pooling, N(0, 0.01) weights. Its BatchNorm has eps 1e-3 and PyTorch's momentum 0.1
  (`bn_epsilon`, `bn_momentum` = 0.9 here, flax's convention). `googlenet_paper` is the
  paper's (Caffe bvlc_googlenet): LRN after the first max pool and after conv3 (the paper's
  3×3 "conv2"), true 5×5 convs, conv biases (init 0.2), no BN, a 3×3 max pool before 5a,
  dropout 0.4, Caffe "xavier" weights. Max pools round up (ceil_mode) in both. The auxiliary
  heads after 4a and 4d run in training only (`aux_logits=True`); eval returns the main head's
  logits. Layer names follow torchvision (conv1–conv3, inception3a…, aux1/aux2, fc).

  `naive=True` builds every block as the paper's naive module (Fig. 2a, `Inception`), keeping
  Table 1's branch widths: each block passes its whole input on through the pool branch, so the
  widths grow block by block (3a 416 … 5b 4,944 channels instead of 256 … 1,024) and with them
  the next block's 3×3 and 5×5 convs: the blow-up §4 gives as the reason for the reductions.
  `googlenet_naive` is `googlenet_paper` so built; its summary beside googlenet_paper's shows
  what the 1×1 reductions save.
  """

  num_classes: int = 1000
  style: str = 'torchvision'  # 'torchvision' | 'paper'
  naive: bool = False  # Fig. 2a blocks: no 1×1 reductions, no pool projections
  aux_logits: bool = True
  dropout_rate: float = 0.2
  aux_dropout_rate: float = 0.7
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.style not in STYLES:
      raise ConfigError(
          f'Unknown GoogLeNet style {self.style!r}; choose one of {", ".join(STYLES)}.'
      )
    paper = self.style == 'paper'
    conv = conv_unit(self)
    shared = dict(
        style=self.style, bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum, dtype=self.dtype
    )
    block = functools.partial(Inception, naive=self.naive, **shared)
    aux = functools.partial(InceptionAux, self.num_classes, self.aux_dropout_rate, **shared)
    max_pool = functools.partial(layers.pool, kind='max', padding=0, ceil_mode=True)
    lrn = functools.partial(
        layers.local_response_norm, size=5, k=1.0, alpha=1e-4, beta=0.75, alpha_over_size=True
    )

    x = x.astype(self.dtype)
    x = conv(64, 7, 2, name='conv1')(x, train)
    x = max_pool(x, window=3, stride=2)
    if paper:
      x = lrn(x)
    x = conv(64, 1, name='conv2')(x, train)
    x = conv(192, 3, name='conv3')(x, train)
    if paper:
      x = lrn(x)
    x = max_pool(x, window=3, stride=2)
    for name in ('3a', '3b'):
      x = block(INCEPTION_BLOCKS[name], name=f'inception{name}')(x, train)
    x = max_pool(x, window=3, stride=2)
    for name in ('4a', '4b', '4c', '4d', '4e'):
      x = block(INCEPTION_BLOCKS[name], name=f'inception{name}')(x, train)
      if self.aux_logits and train and name in ('4a', '4d'):
        aux(name='aux1' if name == '4a' else 'aux2')(x, train)
    x = max_pool(x, window=3 if paper else 2, stride=2)
    for name in ('5a', '5b'):
      x = block(INCEPTION_BLOCKS[name], name=f'inception{name}')(x, train)
    x = jnp.mean(x, axis=(1, 2))  # 7×7 average pool at 224 px
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    kernel_init = _CAFFE_XAVIER if paper else _TORCHVISION_KERNEL
    bias_init = nn.initializers.zeros if paper else layers.torch_default_bias(x.shape[-1])
    x = nn.Dense(
        self.num_classes, kernel_init=kernel_init, bias_init=bias_init, dtype=self.dtype, name='fc'
    )(x)
    return x.astype(jnp.float32)


# Counts in training mode, aux heads included (without them: 6,624,904 and 6,998,552).
register(
    'googlenet',
    GoogLeNet,
    reference='torchvision googlenet (aux_logits=True)',
    params=13_004_888,
    style='torchvision',
    dropout_rate=0.2,
)
register(
    'googlenet_paper',
    GoogLeNet,
    reference='Szegedy et al. 2015 Table 1, Caffe bvlc_googlenet with its two aux heads',
    params=13_378_280,
    style='paper',
    dropout_rate=0.4,
)
register(
    'googlenet_naive',
    GoogLeNet,
    reference='Szegedy et al. 2015 Fig. 2a naive modules at Table 1 widths, no published count',
    params=104_274_376,
    style='paper',
    naive=True,
    dropout_rate=0.4,
)
