"""Building blocks shared by the model families."""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu,
    'sigmoid': nn.sigmoid,
    'tanh': jnp.tanh,
    'gelu': nn.gelu,
    'silu': nn.silu,
    'identity': lambda x: x,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation function by name."""
  if name not in ACTIVATIONS:
    raise ValueError(f'Unknown activation {name!r}; choose one of {", ".join(ACTIVATIONS)}.')
  return ACTIVATIONS[name]


def pool(x: jax.Array, kind: str, window: int, stride: int, padding: str = 'VALID') -> jax.Array:
  """Max or average pooling over the spatial axes of an NHWC tensor."""
  shape, strides = (window, window), (stride, stride)
  if kind == 'max':
    return nn.max_pool(x, shape, strides, padding)
  if kind == 'avg':
    return nn.avg_pool(x, shape, strides, padding)
  raise ValueError(f'Unknown pooling {kind!r}; choose "max" or "avg".')
