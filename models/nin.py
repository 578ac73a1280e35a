"""Network in Network (Lin et al. 2014): mlpconv blocks and global average pooling, no dense layers.

An mlpconv block is a k×k conv followed by two 1×1 convs (Caffe's `cccp`, "cascaded cross
channel parametric pooling"), ReLU after each. The last block outputs one map per class and
global average pooling turns the maps into logits.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import CIFAR10, register

# He et al. init (fan_in) and zero biases. The Caffe ImageNet model drew weights from N(0, σ²),
# σ = 0.01 or 0.05 per layer, for mean-subtracted 0–255 pixels; on normalised inputs those σ
# would start this bias-free ReLU stack with proportionally much smaller activations.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class _NiN(nn.Module):
  """Shared body: `blocks` rows of (kernel, stride, padding, widths of the 3 convs, pool after).

  `pool` is 'max', 'avg' (3×3 stride 2, Caffe ceil mode) or None; `dropout_after` lists the
  blocks followed by dropout. The last block's last conv (`head`) has num_classes maps.
  """

  num_classes: int
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  blocks: Sequence[tuple] = ()
  dropout_after: Sequence[int] = ()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.astype(self.dtype)
    cccp = 0
    for b, (kernel, stride, padding, widths, pool) in enumerate(self.blocks, start=1):
      last = b == len(self.blocks)
      x = nn.Conv(
          widths[0],
          (kernel, kernel),
          stride,
          padding=padding,
          kernel_init=conv_init,
          dtype=self.dtype,
          name=f'conv{b}',
      )(x)
      x = nn.relu(x)
      for j, width in enumerate(widths[1:]):
        cccp += 1
        is_head = last and j == len(widths) - 2
        x = nn.Conv(
            self.num_classes if is_head else width,
            (1, 1),
            kernel_init=conv_init,
            dtype=self.dtype,
            name='head' if is_head else f'cccp{cccp}',
        )(x)
        x = nn.relu(x)  # also on the class maps, as in the Caffe models
      if pool:
        x = layers.pool(x, pool, 3, 2, 0, ceil_mode=True)  # Caffe rounds up
      if b in self.dropout_after:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)  # global average pooling


class NiN(_NiN):
  """The ImageNet NiN of the Caffe model zoo (Lin's `nin_imagenet`): four mlpconv blocks,
  conv1 11×11/4 (96) · conv2 5×5 (256) · conv3 3×3 (384) · conv4 3×3 (1024), 3×3/2 max pools
  after the first three, dropout before the fourth; 54-27-13-6 maps at 224.

  Layer names follow the prototxt (conv1, cccp1 … cccp7; `head` is its cccp8). Its 6×6 average
  pool is global average pooling here, so other input sizes work.
  """

  num_classes: int = 1000
  blocks: Sequence[tuple] = (
      (11, 4, 0, (96, 96, 96), 'max'),
      (5, 1, 2, (256, 256, 256), 'max'),
      (3, 1, 1, (384, 384, 384), 'max'),
      (3, 1, 1, (1024, 1024, None), None),
  )
  dropout_after: Sequence[int] = (3,)


class NiNCifar(_NiN):
  """The CIFAR-10 NiN (paper §4.2) as the authors released it in Caffe: conv 5×5 (192) → 160 →
  96, max pool; 5×5 (192) → 192 → 192, avg pool; 3×3 (192) → 192 → classes; dropout 0.5 after
  the pools; 32-16-8 maps at 32.

  The paper also preprocessed with global contrast normalisation and ZCA whitening; the configs
  here normalise per channel. Layer names follow the prototxt (`head` is its cccp6).
  """

  num_classes: int = 10
  blocks: Sequence[tuple] = (
      (5, 1, 2, (192, 160, 96), 'max'),
      (5, 1, 2, (192, 192, 192), 'avg'),
      (3, 1, 1, (192, 192, None), None),
  )
  dropout_after: Sequence[int] = (1, 2)


register('nin', NiN, reference="Lin et al. 2014, Caffe model zoo's nin_imagenet", params=7_595_176)
register(
    'nin_cifar10',
    NiNCifar,
    reference="Lin et al. 2014 §4.2, the authors' CIFAR-10 Caffe model",
    params=966_986,
    native_input=CIFAR10,
)
