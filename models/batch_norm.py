"""BatchNorm written from its formulas (Ioffe & Szegedy 2015, Algorithm 1 and 2), a drop-in for
flax's nn.BatchNorm over NHWC activations, with the paper's unbiased inference variance as an
option.

Training normalises with the batch's statistics over every axis but the channels,
μ_B = mean(x), σ²_B = mean((x − μ_B)²), y = γ·(x − μ_B)/sqrt(σ²_B + ε) + β, and moves the
running averages by flax's convention: ra ← momentum·ra + (1 − momentum)·batch (PyTorch's
momentum 0.1 is 0.9 here). Inference normalises with the running averages instead.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.errors import ConfigError


class FormulaBatchNorm(nn.Module):
  """BatchNorm as its formulas read, with nn.BatchNorm's fields and variables (params `scale`,
  `bias`; batch_stats `mean`, `var`), so it replaces it without changing a checkpoint.

  `unbiased_variance=True` stores m/(m − 1)·σ²_B in the running variance, m = N·H·W values per
  channel in the batch: the paper's inference variance, E[σ²_B]·m/(m − 1), kept as a moving
  average. PyTorch's BatchNorm2d does the same; flax and Keras store the biased σ²_B (the
  default here). Training's normalisation uses the biased σ²_B either way.
  """

  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  scale_init: Callable[..., jax.Array] = nn.initializers.ones
  unbiased_variance: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average
    )
    channels = x.shape[-1]
    moving_mean = self.variable('batch_stats', 'mean', jnp.zeros, (channels,), jnp.float32)
    moving_var = self.variable('batch_stats', 'var', jnp.ones, (channels,), jnp.float32)
    values = x.astype(jnp.float32)  # statistics in float32 whatever the compute dtype
    if use_running_average:
      mean, var = moving_mean.value, moving_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = values.mean(axes)
      var = jnp.square(values - mean).mean(axes)
      m = values.size // channels
      if self.unbiased_variance and m < 2:
        raise ConfigError(
            f'unbiased_variance needs at least 2 values per channel in a batch; got {m} '
            f'(input {x.shape}): use a larger batch or image, or unbiased_variance=False.'
        )
      if not self.is_initializing():  # as flax: init's dummy batch leaves the averages alone
        stored = var * m / (m - 1) if self.unbiased_variance else var
        moving_mean.value = self.momentum * moving_mean.value + (1 - self.momentum) * mean
        moving_var.value = self.momentum * moving_var.value + (1 - self.momentum) * stored
    y = (values - mean) / jnp.sqrt(var + self.epsilon)
    if self.use_scale:
      y = y * self.param('scale', self.scale_init, (channels,), jnp.float32)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (channels,), jnp.float32)
    return y.astype(self.dtype or jnp.promote_types(x.dtype, jnp.float32))
