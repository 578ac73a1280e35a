"""Quantization-aware training (QAT) of any registered model, with Google's qwix library.

QAT (Jacob et al. 2018, "Quantization and training of neural networks for efficient
integer-arithmetic-only inference") trains float weights while the forward pass sees them
rounded to `bits`-bit integers, one scale per output channel, and the inputs of each conv and
dense layer rounded to int8; the rounding passes gradients straight through (the
straight-through estimator, Bengio et al. 2013), as qwix's `QtProvider` implements it.

Where we differ from Jacob et al.: activation scales are dynamic (each example's absmax at
this step, not a moving average of ranges), quantization is symmetric (no zero point), and
BatchNorm is not folded into the conv weights but stays a float layer after the quantized conv.
Only `nn.Conv` and `nn.Dense` layers are quantized; a model's other contractions (the paper
LeNet-5's connection-table conv, adaptive pooling written as an einsum) stay float.

The variable tree is exactly the float model's (`params`, `batch_stats`): dynamic scales need
no state, so a QAT model trains, checkpoints and evaluates like its base model.

At 8 bits qwix computes each conv and matmul on the int8 values with int32 accumulation (the
same numbers as fake quantization). At 4 bits it cannot: XLA has no int4 conv or matmul on CPU
("The XLA CPU/GPU backend does not support custom element sizes"), and lax refuses an int8 ×
int4 conv. So at 4 bits qwix quantizes only the weights (its float path: dequantize, then
convolve) and `fake_quantize` rounds the activations to int8 here, with qwix's per-example
scales and a straight-through gradient.
"""

import contextvars
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import qwix

from common.errors import ConfigError
from models import fast_conv
from models.intercepted import Intercepted, layer_call

SUPPORTED_BITS = (4, 8)  # jnp.int4, jnp.int8; qwix's 2-7-bit 'intN' types are not offered

# True while an nn.Conv's or nn.Dense's __call__ runs: the rules apply only there.
_IN_LAYER = contextvars.ContextVar('in_quantized_layer', default=False)


def qtype(bits: int) -> Any:
  """jnp.int8 or jnp.int4 for `bits`; a ConfigError naming the supported widths otherwise."""
  if bits not in SUPPORTED_BITS:
    raise ConfigError(
        f'quantization bits={bits!r} is not supported: use one of '
        f'{", ".join(map(str, SUPPORTED_BITS))} (int8 or int4 weights)'
    )
  return jnp.int8 if bits == 8 else jnp.int4


def _mark_layers(next_fun: Callable[..., Any], args, kwargs, context) -> Any:
  """Runs an nn.Conv's or nn.Dense's __call__ with _IN_LAYER set and lax's convs (qwix replaces
  `lax.conv_general_dilated`; fast_conv's CPU rewrites would bypass it), anything else unchanged."""
  if layer_call(context) is None:
    return next_fun(*args, **kwargs)
  token = _IN_LAYER.set(True)
  try:
    with fast_conv.plain():
      return next_fun(*args, **kwargs)
  finally:
    _IN_LAYER.reset(token)


class ConvAndDenseOnly:
  """Mixin for a qwix provider: its rules apply only inside nn.Conv and nn.Dense layers.

  qwix matches rules by module path and op name; this narrows them to layer types, so a
  contraction that is not a layer's (a kernel built from a connection table, an averaging
  einsum) runs as the float op instead of failing qwix's "the other operand is a param" checks.
  Use it through `apply_provider`, which marks the layers.
  """

  def conv_general_dilated(self, *args, **kwargs) -> jax.Array:
    if not _IN_LAYER.get():
      return jax.lax.conv_general_dilated(*args, **kwargs)
    return super().conv_general_dilated(*args, **kwargs)

  def dot_general(self, *args, **kwargs) -> jax.Array:
    if not _IN_LAYER.get():
      return jax.lax.dot_general(*args, **kwargs)
    return super().dot_general(*args, **kwargs)

  def einsum(self, *args, **kwargs) -> jax.Array:
    if not _IN_LAYER.get():
      return jnp.einsum(*args, **kwargs)
    return super().einsum(*args, **kwargs)


def apply_provider(model: nn.Module, provider: ConvAndDenseOnly) -> nn.Module:
  """`model` under the qwix `provider`, its conv and dense layers marked, its paths kept."""
  return Intercepted(qwix.quantize_model(model, provider), _mark_layers)


def rule(weight_type: Any, act_type: Any = None, *, static: bool = False) -> qwix.QtRule:
  """A qwix rule for every conv and dense op: weights per output channel at `weight_type`,
  inputs at `act_type` (None: float) with one `static` calibrated scale or per-example ones."""
  return qwix.QtRule(
      module_path='.*',
      op_names=('conv_general_dilated', 'dot_general'),
      weight_qtype=weight_type,
      act_qtype=act_type,
      act_static_scale=static if act_type is not None else None,
  )


def fake_quantize(x: jax.Array, act_type: Any = jnp.int8) -> jax.Array:
  """`x` rounded to `act_type` with one absmax scale per example, gradient passed straight
  through (qwix's dynamic activation quantization, for where qwix cannot run it)."""
  rounded = qwix.dequantize(qwix.quantize(x, act_type, channelwise_axes=(0,)))
  return x + jax.lax.stop_gradient(rounded - x)


class QatProvider(ConvAndDenseOnly, qwix.QtProvider):
  """qwix's quantized-training provider for conv and dense layers at `bits` (weights), with
  int8 activations: qwix's own at 8 bits, `fake_quantize` at 4 (see the module docstring)."""

  def __init__(self, bits: int, *, activations: bool = True):
    weight_type = qtype(bits)
    native_acts = activations and weight_type == jnp.int8
    self.fake_activations = activations and not native_acts
    super().__init__([rule(weight_type, jnp.int8 if native_acts else None)])

  def conv_general_dilated(self, lhs: jax.Array, rhs: jax.Array, *args, **kwargs) -> jax.Array:
    if self.fake_activations and _IN_LAYER.get():
      lhs = fake_quantize(lhs)
    return super().conv_general_dilated(lhs, rhs, *args, **kwargs)

  def dot_general(self, lhs: jax.Array, rhs: jax.Array, *args, **kwargs) -> jax.Array:
    if self.fake_activations and _IN_LAYER.get():
      lhs = fake_quantize(lhs)  # nn.Dense computes dot_general(inputs, kernel)
    return super().dot_general(lhs, rhs, *args, **kwargs)


def quantization_aware(model: nn.Module, bits: int, *, activations: bool = True) -> nn.Module:
  """`model` trained quantization-aware: conv and dense weights at `bits` per output channel,
  their inputs at int8 when `activations`; the same variables as `model`."""
  return apply_provider(model, QatProvider(bits, activations=activations))
