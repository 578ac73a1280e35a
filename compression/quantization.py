"""Post-training quantization (PTQ) of a trained float model with qwix: int8 weights, one scale
per output channel, and int8 activations with static scales calibrated on a few batches.

The recipe is Jacob et al. 2018's integer-arithmetic inference (§2, §3) without retraining:
each conv and dense layer computes on the stored integers with int32 accumulation, then rescales
by (input scale × weight scale). qwix's static-range sequence, for linen:

  1. calibrate: the model under a `QtProvider` rule with `act_static_scale=True`, applied to the
     calibration batches with `mutable=['quant_stats']`, sums each layer input's absmax (the
     mean over a batch of each example's absmax) into the 'quant_stats' collection;
  2. convert: `quantize_params(float params, the PTQ model's abstract params, quant_stats)`
     rounds the kernels and turns the averaged absmax into each layer's input scale.

Where we differ from Jacob et al.: symmetric quantization (no zero points), one activation
scale per layer input from the calibration mean (values beyond it are clipped), and BatchNorm
kept as a float layer instead of folded into the weights. Only nn.Conv and nn.Dense layers are
quantized (models/quantized.py); everything else runs in float32.

Calibration runs op by op, not under jax.jit: qwix 0.1.8 updates a conv's quant_stats inside
its custom_vjp, which leaks a tracer under jit (its dense layers update outside and would jit).

At 4 bits: qwix's PTQ conv needs the activations at the weights' type, so bits=4 is W4A4; XLA
has no int4 conv or matmul on CPU, so the int4 values are widened to int8 for the compute (the
same integer products), and calibration runs the network at int8.

On CPU the compiled program keeps the int8 dots (XLA hands them to YNNPACK) and most int8
convs, but upcasts some convs to int32 (LeNet-5's two, ResNet-20's stem and 16-channel stage),
which makes the PTQ network slower than the float one there: it models int8 inference's
numbers and storage, not its speed on this backend.
"""

from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import qwix

from common.errors import ConfigError
from models import quantized

Variables = dict[str, Any]


def _widened(op):
  """`op` (qwix's conv or dot) with int4 QArray operands widened to int8 storage first."""

  def widen(x: Any) -> Any:
    if isinstance(x, qwix.QArray) and x.qvalue.dtype == jnp.int4:
      return x.replace(qvalue=x.qvalue.astype(jnp.int8))
    return x

  def run(lhs: Any, rhs: Any, *args, **kwargs) -> jax.Array:
    return op(widen(lhs), widen(rhs), *args, **kwargs)

  return run


class _Calibration(quantized.ConvAndDenseOnly, qwix.QtProvider):
  """qwix's training provider for conv and dense layers: here it only collects quant_stats."""


class _Ptq(quantized.ConvAndDenseOnly, qwix.PtqProvider):
  """qwix's PTQ provider for conv and dense layers, computing int4 operands as int8."""

  def __init__(self, rules: list[qwix.QuantizationRule]):
    super().__init__(
        rules,
        _conv_general_dilated_fn=_widened(qwix.conv_general_dilated),
        _dot_general_fn=_widened(qwix.dot_general),
    )


def post_training_quantize(
    model: nn.Module,
    variables: Variables,
    calibration_images: Iterable[np.ndarray],
    bits: int = 8,
) -> tuple[nn.Module, Variables]:
  """(qmodel, qvariables): `model` with `bits`-bit conv and dense weights and inputs, the input
  scales calibrated on `calibration_images` (batches); `qmodel.apply(qvariables, x,
  train=False)` runs it. qvariables are `variables` with each quantized kernel replaced by
  its integers and scales and an `<op>_lhs_scale` param added beside it."""
  qtype = quantized.qtype(bits)
  batches = iter(calibration_images)
  first = next(batches, None)
  if first is None:
    raise ConfigError('post_training_quantize needs at least one calibration batch; got none.')
  rng = jax.random.key(0)  # init only traces shapes: nothing random is kept
  params = jax.tree.map(jnp.asarray, variables['params'])
  others = {name: tree for name, tree in variables.items() if name != 'params'}

  calibrating = quantized.apply_provider(
      model, _Calibration([quantized.rule(jnp.int8, jnp.int8, static=True)])
  )
  empty = jax.eval_shape(lambda x: calibrating.init(rng, x, train=False), first)['quant_stats']
  quant_stats = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), empty)

  def collect(state: Variables, images: jax.Array) -> Any:
    _, updated = calibrating.apply(state, images, train=False, mutable=['quant_stats'])
    return updated['quant_stats']

  for images in [first, *batches]:
    state = {**others, 'params': params, 'quant_stats': quant_stats}
    quant_stats = collect(state, jnp.asarray(images))

  qmodel = quantized.apply_provider(model, _Ptq([quantized.rule(qtype, qtype, static=True)]))
  abstract = jax.eval_shape(lambda x: qmodel.init(rng, x, train=False), first)
  qparams = qwix.quantize_params(params, abstract['params'], quant_stats)
  return qmodel, {**others, 'params': qparams}
