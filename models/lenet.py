"""LeNet-5 (LeCun et al. 1998) in the modern form of d2l §6.6."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import register


@register('lenet5')
class LeNet5(nn.Module):
  """conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → dense 120 → 84 → classes.

  `activation='sigmoid', pooling='avg'` is the paper's squashing + subsampling form (as in
  d2l); the defaults `'relu', 'max'` are the form that trains fastest. On 28×28 inputs with
  10 classes and no BatchNorm it has 61,706 parameters. `batch_norm` adds BN after each conv
  and hidden dense layer (d2l §8.5).
  """

  num_classes: int = 10
  activation: str = 'relu'
  pooling: str = 'max'
  batch_norm: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    act = layers.activation(self.activation)

    def norm(y: jax.Array, name: str) -> jax.Array:
      if not self.batch_norm:
        return y
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                          name=name)(y)

    x = x.astype(self.dtype)
    x = act(norm(nn.Conv(6, (5, 5), padding=2, dtype=self.dtype, name='conv1')(x), 'bn1'))
    x = layers.pool(x, self.pooling, 2, 2)
    x = act(norm(nn.Conv(16, (5, 5), padding='VALID', dtype=self.dtype, name='conv2')(x), 'bn2'))
    x = layers.pool(x, self.pooling, 2, 2)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate((120, 84), start=1):
      x = act(norm(nn.Dense(width, dtype=self.dtype, name=f'fc{i}')(x), f'bn_fc{i}'))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)
