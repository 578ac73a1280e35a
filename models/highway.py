"""Highway networks (Srivastava, Greff & Schmidhuber 2015, "Highway Networks" and "Training Very
Deep Networks"): each layer mixes a transform of its input with the input itself,

  y = H(x)·T(x) + x·(1 − T(x)),  T(x) = sigmoid(W_T x + b_T),

a learned gate per unit (per channel and position in the convolutional form). With the gate's
bias b_T started negative the gate starts mostly closed, every layer starts close to the
identity, and signals and gradients cross tens of layers: the gated predecessor of ResNet's
identity shortcut (y = H(x) + x). The networks follow the authors' released Caffe models.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.registry import CIFAR10, NativeInput, register

# Caffe's "xavier" filler: U(±sqrt(3 / fan_in)), flax's lecun_uniform; the authors' fillers for
# H and T alike. Their first conv and their classifiers draw N(0, 0.05²) (MNIST's: N(0, 0.1²)).
caffe_xavier = nn.initializers.lecun_uniform()
MNIST = NativeInput(28, 1, 10)


class Highway(nn.Module):
  """One highway layer, convolutional (`kernel_size` k: k×k convs padded to keep the grid, as
  the authors' CuDNNHighway layer) or dense (`kernel_size=None`); width = the input's.

  H is `activation`(W_H x + b_H) (ReLU in the authors' models), T is sigmoid(W_T x + b_T) with
  b_T starting at `gate_bias` (−2 in their CIFAR nets, −1 in their MNIST convnet; the papers
  name −1 to −3). Variables: children `transform` (H) and `gate` (T), each a kernel and a bias.
  """

  kernel_size: int | None = 3
  gate_bias: float = -2.0
  activation: str = 'relu'
  kernel_init: Callable[..., jax.Array] = caffe_xavier
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate_bias_init = nn.initializers.constant(self.gate_bias)
    if self.kernel_size is None:
      layer = functools.partial(
          nn.Dense, x.shape[-1], kernel_init=self.kernel_init, dtype=self.dtype
      )
      h = layer(name='transform')(x)
      t = layer(bias_init=gate_bias_init, name='gate')(x)
    else:
      conv = functools.partial(
          layers.conv_norm_act,
          x,
          features=x.shape[-1],
          kernel_size=self.kernel_size,
          use_bias=True,
          bias_init=nn.initializers.zeros,
          kernel_init=self.kernel_init,
          norm=False,
          act=None,
          dtype=self.dtype,
      )
      h = conv(conv_name='transform')
      t = conv(conv_name='gate', bias_init=gate_bias_init)
    h = layers.activation(self.activation)(h)
    t = nn.sigmoid(t)
    return h * t + x * (1 - t)


class HighwayConvNet(nn.Module):
  """The convolutional highway networks of "Training Very Deep Networks" §3.2 (Table 3), laid
  out as the FitNets they match: per stage a plain 3×3 conv + ReLU to the stage's width, then
  highway 3×3 layers; 2×2/2 max pools between stages; a 1×1 conv + ReLU to `head_width`; global
  average pooling (the authors' 8×8 pool at 32 px); the classifier.

  The default is Highway B, 19 layers (18 convs and the classifier), exactly the authors'
  released CIFAR-10 model (examples/highways/cifar10-19layers in their Caffe fork): stages of
  32, 80 and 128 channels with 4, 5 and 5 highway layers, head 100, 2,256,838 parameters
  (Table 3: "~2.3M", 92.46 % accuracy). Dropout (`dropout_rate`, 0.2 theirs) on the input
  image, after each pool and before the classifier. Convs are named `conv1` … `conv18` as the
  authors number them (highway layers included), the classifier `fc`. Differs from the paper:
  nothing in the network; their training used global contrast normalisation and random 32 px
  crops of the images padded by 8, Nesterov momentum 0.9, lr 0.025 divided by 10 at 100k,
  150k and 175k of 200k steps of batch 100, weight decay 0.001 (a config's business).
  """

  num_classes: int = 10
  stages: tuple[tuple[int, int], ...] = ((32, 4), (80, 5), (128, 5))  # (width, highway layers)
  head_width: int = 100
  gate_bias: float = -2.0
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    x = dropout(x.astype(self.dtype))
    index = 0
    for stage, (width, depth) in enumerate(self.stages):
      if stage:
        x = dropout(layers.pool(x, 'max', 2, 2))
      index += 1
      x = layers.conv_norm_act(
          x,
          features=width,
          use_bias=True,
          bias_init=nn.initializers.zeros,
          kernel_init=nn.initializers.normal(0.05) if index == 1 else caffe_xavier,
          norm=False,
          dtype=self.dtype,
          conv_name=f'conv{index}',
      )
      for _ in range(depth):
        index += 1
        x = Highway(3, self.gate_bias, dtype=self.dtype, name=f'conv{index}')(x)
    index += 1
    x = layers.conv_norm_act(
        x,
        features=self.head_width,
        kernel_size=1,
        use_bias=True,
        bias_init=nn.initializers.zeros,
        kernel_init=caffe_xavier,
        norm=False,
        dtype=self.dtype,
        conv_name=f'conv{index}',
    )
    x = dropout(jnp.mean(x, axis=(1, 2)))
    x = nn.Dense(
        self.num_classes, kernel_init=nn.initializers.normal(0.05), dtype=self.dtype, name='fc'
    )(x)
    return x.astype(jnp.float32)


class HighwayMLP(nn.Module):
  """The fully connected MNIST networks of the papers' depth study ("Training Very Deep
  Networks" Fig. 1): a plain layer from the flattened image to `width` units, highway layers,
  a softmax classifier; `depth` counts every layer with weights (depth − 2 highway layers).

  Thin as the paper's: 50 units, 2·(50² + 50) = 5,100 parameters per highway layer ("≈5000").
  `highway=False` is the plain counterpart the figure compares against (the paper widens it to
  71 units for the same parameters per layer: 71² + 71 = 5,112). The paper does not print the
  input layer or the activations; here the input layer is a plain ReLU layer, H is ReLU and
  the gate bias starts at −2 (the paper tried −1 to −3 for these nets).
  """

  num_classes: int = 10
  depth: int = 10
  width: int = 50
  highway: bool = True
  gate_bias: float = -2.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or BatchNorm
    dense = functools.partial(nn.Dense, kernel_init=caffe_xavier, dtype=self.dtype)
    x = x.astype(self.dtype).reshape(x.shape[0], -1)
    x = nn.relu(dense(self.width, name='input')(x))
    for index in range(1, self.depth - 1):
      if self.highway:
        x = Highway(None, self.gate_bias, dtype=self.dtype, name=f'highway{index}')(x)
      else:
        x = nn.relu(dense(self.width, name=f'plain{index}')(x))
    x = dense(self.num_classes, name='fc')(x)
    return x.astype(jnp.float32)


register(
    'highway19',
    HighwayConvNet,
    reference="Srivastava et al. 2015 Highway B (Table 3; the authors' Caffe model)",
    params=2_256_838,
    native_input=CIFAR10,
)
register(
    'highway_fc10',
    HighwayMLP,
    reference='Srivastava et al. 2015 Fig. 1, MNIST, depth 10, 50 units (computed count)',
    params=80_560,
    native_input=MNIST,
    depth=10,
)
register(
    'highway_fc100',
    HighwayMLP,
    reference='Srivastava et al. 2015 Fig. 1, MNIST, depth 100, 50 units (computed count)',
    params=539_560,
    native_input=MNIST,
    depth=100,
)
