"""Multiply-accumulates of one operation, in two conventions.

`macs` is the convention of docs/published_figures.md (torchvision's model cards, the
ResNet/MobileNet papers): kernel size × input channels per group × output channels × output
positions for a convolution (padding taps included), and input positions instead of output
positions for a transposed convolution (the scatter view: every input pixel meets the whole
kernel once); rows × columns × depth for a matrix product. `real_macs` counts only taps that land
on real input pixels, which is what XLA's cost analysis counts (2 flops each), so the two can be
checked against each other.
"""

import numpy as np


def counted(op) -> bool:
  """Convolutions, and matrix products whose operands are both data or parameters (a product
  with a constant matrix, as adaptive pooling does, is resampling, not a layer)."""
  name = op.eqn.primitive.name
  if name == 'conv_general_dilated':
    return True
  return name == 'dot_general' and not any(s.constant for s in op.inputs)


def _valid_taps(
    out_size: int,
    in_size: int,
    kernel: int,
    stride: int,
    pad_lo: int,
    input_dilation: int,
    window_dilation: int,
) -> int:
  """(output position, kernel tap) pairs along one axis whose input is a real pixel."""
  outs = np.arange(out_size)[:, None] * stride
  taps = np.arange(kernel)[None, :] * window_dilation
  where = outs + taps - pad_lo
  real = (where >= 0) & (where <= (in_size - 1) * input_dilation) & (where % input_dilation == 0)
  return int(real.sum())


def conv_macs(eqn) -> tuple[int, int]:
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p['dimension_numbers']
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  per_tap = rhs[rhs_spec[1]] * rhs[rhs_spec[0]] * out[out_spec[0]]  # C_in/groups × C_out × batch
  kernel = [rhs[d] for d in rhs_spec[2:]]
  transposed = any(d > 1 for d in p['lhs_dilation'])
  positions = [lhs[d] for d in lhs_spec[2:]] if transposed else [out[d] for d in out_spec[2:]]
  macs = per_tap * int(np.prod(kernel)) * int(np.prod(positions))
  real = per_tap
  for i, k in enumerate(kernel):
    real *= _valid_taps(
        out[out_spec[2 + i]],
        lhs[lhs_spec[2 + i]],
        k,
        p['window_strides'][i],
        p['padding'][i][0],
        p['lhs_dilation'][i],
        p['rhs_dilation'][i],
    )
  return macs, real


def dot_macs(eqn) -> int:
  (contract, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  return int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[d] for d in contract]))


def op_macs(op) -> tuple[int, int]:
  """(MACs as docs/published_figures.md counts them, MACs on real input pixels) of a counted op;
  (0, 0) otherwise."""
  if not counted(op):
    return 0, 0
  if op.eqn.primitive.name == 'conv_general_dilated':
    return conv_macs(op.eqn)
  macs = dot_macs(op.eqn)
  return macs, macs
