"""AlexNet: the paper's two-tower net (Krizhevsky et al. 2012) and torchvision's one-tower form."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import NativeInput, register


class AlexNetPaper(nn.Module):
  """The paper's AlexNet (Caffe's bvlc_alexnet layout) on 227×227 inputs.

  conv1 96@11×11/4 → ReLU → LRN → max 3/2 → conv2 256@5×5 (pad 2, 2 groups) → ReLU → LRN →
  max 3/2 → conv3 384@3×3 → conv4 384@3×3 (2 groups) → conv5 256@3×3 (2 groups) → max 3/2 →
  fc6 4096 → fc7 4096 (ReLU, then dropout) → fc8. The two GPU towers are grouped convolutions
  (conv3 and the dense layers see both towers). LRN uses the paper's formula (k=2, n=5,
  α=1e-4 on the raw sum, β=0.75). Init as §5: weights N(0, 0.01); biases 1 in conv2, conv4,
  conv5, fc6, fc7 and 0 elsewhere. Maps are 55-27-13-13-13 and 6×6 after pool5; there is no
  adaptive pooling, so another input size changes fc6's fan-in (the smallest input is 67×67).
  """

  num_classes: int = 1000
  features: Sequence[int] = (96, 256, 384, 384, 256)
  groups: Sequence[int] = (1, 2, 1, 2, 2)
  hidden_features: int = 4096
  dropout_rate: float = 0.5
  dropout_scaling: str = 'train'  # or 'test', the paper's rule: see layers.dropout
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input_size(x, 67, 'alexnet_paper')
    weight = nn.initializers.normal(0.01)

    def conv(i: int, kernel: int, stride: int, padding: int, bias: float) -> nn.Conv:
      return nn.Conv(
          self.features[i],
          (kernel, kernel),
          stride,
          padding=padding,
          feature_group_count=self.groups[i],
          kernel_init=weight,
          bias_init=nn.initializers.constant(bias),
          dtype=self.dtype,
          name=f'conv{i + 1}',
      )

    x = x.astype(self.dtype)
    x = nn.relu(conv(0, 11, 4, 0, 0.0)(x))
    x = layers.pool(layers.local_response_norm(x), 'max', 3, 2)
    x = nn.relu(conv(1, 5, 1, 2, 1.0)(x))
    x = layers.pool(layers.local_response_norm(x), 'max', 3, 2)
    x = nn.relu(conv(2, 3, 1, 1, 0.0)(x))
    x = nn.relu(conv(3, 3, 1, 1, 1.0)(x))
    x = nn.relu(conv(4, 3, 1, 1, 1.0)(x))
    x = layers.pool(x, 'max', 3, 2)
    x = x.reshape(x.shape[0], -1)
    for name in ('fc6', 'fc7'):
      x = nn.Dense(
          self.hidden_features,
          kernel_init=weight,
          bias_init=nn.initializers.ones,
          dtype=self.dtype,
          name=name,
      )(x)
      x = layers.dropout(nn.relu(x), self.dropout_rate, train, self.dropout_scaling)
    x = nn.Dense(self.num_classes, kernel_init=weight, dtype=self.dtype, name='fc8')(x)
    return x.astype(jnp.float32)


class AlexNet(nn.Module):
  """torchvision's one-tower AlexNet (after Krizhevsky 2014, "One weird trick") on 224×224 inputs.

  Differs from `alexnet_paper`: 64-192-384-256-256 filters, no groups, no LRN, conv1 padded by 2,
  adaptive average pooling to 6×6 before fc6 (a no-op at 224, and what lets small inputs work),
  dropout before fc6 and fc7 rather than after, and PyTorch's default init (weights and biases
  uniform in ±1/sqrt(fan_in)). torchvision gives 63×63 as its smallest input.
  """

  num_classes: int = 1000
  features: Sequence[int] = (64, 192, 384, 256, 256)
  hidden_features: int = 4096
  dropout_rate: float = 0.5
  dropout_scaling: str = 'train'  # or 'test', the paper's rule: see layers.dropout
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    layers.check_input_size(x, 63, 'alexnet')

    def conv(i: int, kernel: int, stride: int, padding: int) -> nn.Conv:
      fan_in = kernel * kernel * (x.shape[-1] if i == 0 else self.features[i - 1])
      return nn.Conv(
          self.features[i],
          (kernel, kernel),
          stride,
          padding=padding,
          kernel_init=layers.torch_default_kernel,
          bias_init=layers.torch_default_bias(fan_in),
          dtype=self.dtype,
          name=f'conv{i + 1}',
      )

    def dense(features: int, fan_in: int, name: str) -> nn.Dense:
      return nn.Dense(
          features,
          kernel_init=layers.torch_default_kernel,
          bias_init=layers.torch_default_bias(fan_in),
          dtype=self.dtype,
          name=name,
      )

    x = x.astype(self.dtype)
    x = layers.pool(nn.relu(conv(0, 11, 4, 2)(x)), 'max', 3, 2)
    x = layers.pool(nn.relu(conv(1, 5, 1, 2)(x)), 'max', 3, 2)
    x = nn.relu(conv(2, 3, 1, 1)(x))
    x = nn.relu(conv(3, 3, 1, 1)(x))
    x = layers.pool(nn.relu(conv(4, 3, 1, 1)(x)), 'max', 3, 2)
    x = layers.adaptive_avg_pool(x, 6).reshape(x.shape[0], -1)
    for name in ('fc6', 'fc7'):
      fan_in = x.shape[-1]
      x = layers.dropout(x, self.dropout_rate, train, self.dropout_scaling)
      x = nn.relu(dense(self.hidden_features, fan_in, name)(x))
    x = dense(self.num_classes, x.shape[-1], 'fc8')(x)
    return x.astype(jnp.float32)


register(
    'alexnet_paper',
    AlexNetPaper,
    reference='Krizhevsky et al. 2012, two towers as Caffe bvlc_alexnet',
    params=60_965_224,
    native_input=NativeInput(227, 3, 1000),
)
register('alexnet', AlexNet, reference='torchvision alexnet', params=61_100_840)
