"""How each jaxpr primitive moves receptive fields: one rule per kind of array operation.

A feature map's geometry is a tuple of `geometry.Axis`, one per image axis (height, width), or
None for arrays that carry no image (parameters, constants). Rules see the equation and the
geometry of each input, and return the geometry of each output.
"""

from collections.abc import Callable, Sequence

import numpy as np

from analysis import geometry
from analysis.geometry import Axis

Geometry = tuple[Axis, ...] | None
Rule = Callable[..., list[Geometry]]


def _map_axes(
    geom: Geometry, where: Callable[[Axis], int | None], sizes: Sequence[int]
) -> Geometry:
  """Moves each spatial axis to `where(axis)`; None reduces it over its `sizes[index]` units."""
  if geom is None:
    return None
  out = []
  for axis in geom:
    if axis.index is None:
      out.append(axis)
      continue
    target = where(axis)
    out.append(
        geometry.reduced(axis, sizes[axis.index])
        if target is None
        else geometry.moved(axis, target)
    )
  return tuple(out)


def _window_rule(eqn, geoms, spec):
  """Convolution and pooling: `spec(i)` gives (size, stride, pad_lo, input_dil, window_dil,
  output index) for input array axis i, or None when the window does not slide along it."""
  geom = geoms[0]
  if geom is None:
    return [None]
  out = []
  for axis in geom:
    params = spec(axis.index) if axis.index is not None else None
    if params is None:
      out.append(axis)
      continue
    size, stride, pad_lo, input_dil, window_dil, index = params
    out.append(
        geometry.moved(geometry.window(axis, size, stride, pad_lo, input_dil, window_dil), index)
    )
  return [tuple(out)]


def conv(eqn, geoms):
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p['dimension_numbers']
  kernel = eqn.invars[1].aval.shape

  def spec(index):
    if index not in lhs_spec[2:]:
      return None
    i = lhs_spec[2:].index(index)
    return (
        kernel[rhs_spec[2 + i]],
        p['window_strides'][i],
        p['padding'][i][0],
        p['lhs_dilation'][i],
        p['rhs_dilation'][i],
        out_spec[2 + i],
    )

  return _window_rule(eqn, geoms, spec)


def reduce_window(eqn, geoms):
  p = eqn.params

  def spec(i):
    return (
        p['window_dimensions'][i],
        p['window_strides'][i],
        p['padding'][i][0],
        p['base_dilation'][i],
        p['window_dilation'][i],
        i,
    )

  return _window_rule(eqn, geoms, spec) * len(eqn.outvars)


def pad(eqn, geoms):
  config = eqn.params['padding_config']

  def spec(i):
    lo, _, interior = config[i]
    return 1, 1, lo, interior + 1, 1, i

  return _window_rule(eqn, geoms, spec)


def slice_(eqn, geoms):
  starts, strides = eqn.params['start_indices'], eqn.params['strides']
  if geoms[0] is None:
    return [None]
  return [
      tuple(
          a
          if a.index is None
          else geometry.shifted(a, starts[a.index], strides[a.index] if strides else 1)
          for a in geoms[0]
      )
  ]


def reduce(eqn, geoms):
  axes = set(eqn.params['axes'])
  sizes = eqn.invars[0].aval.shape

  def where(axis):
    return None if axis.index in axes else axis.index - sum(x < axis.index for x in axes)

  return [_map_axes(geoms[0], where, sizes)] * len(eqn.outvars)


def transpose(eqn, geoms):
  perm = list(eqn.params['permutation'])
  return [_map_axes(geoms[0], lambda a: perm.index(a.index), eqn.invars[0].aval.shape)]


def broadcast_in_dim(eqn, geoms):
  dims = eqn.params['broadcast_dimensions']
  return [_map_axes(geoms[0], lambda a: dims[a.index], eqn.invars[0].aval.shape)]


def squeeze(eqn, geoms):
  gone = set(eqn.params['dimensions'])
  return [
      _map_axes(
          geoms[0], lambda a: a.index - sum(x < a.index for x in gone), eqn.invars[0].aval.shape
      )
  ]


def reshape(eqn, geoms):
  """An axis survives a reshape when its size and everything before it are unchanged in size."""
  old, new = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape

  def where(axis):
    before = int(np.prod(old[: axis.index]))
    for j in range(len(new)):
      if int(np.prod(new[:j])) == before and new[j] == old[axis.index]:
        return j
    return None

  return [_map_axes(geoms[0], where, old)]


def dot_general(eqn, geoms, values):
  """Free axes keep their geometry at their output position; an image axis contracted with a
  constant 0/1-pattern matrix (adaptive pooling) becomes a window; otherwise it is reduced."""
  (contract_l, contract_r), (batch_l, batch_r) = eqn.params['dimension_numbers']
  shapes = [v.aval.shape for v in eqn.invars]
  contract, batch = (contract_l, contract_r), (batch_l, batch_r)
  free = [
      [i for i in range(len(s)) if i not in contract[k] and i not in batch[k]]
      for k, s in enumerate(shapes)
  ]
  offsets = (len(batch_l), len(batch_l) + len(free[0]))
  outs = []
  for k, geom in enumerate(geoms):
    if geom is None:
      continue
    other = values[1 - k]
    mapped = []
    for axis in geom:
      if axis.index is None:
        mapped.append(axis)
      elif axis.index in batch[k]:
        mapped.append(geometry.moved(axis, batch[k].index(axis.index)))
      elif axis.index in free[k]:
        mapped.append(geometry.moved(axis, offsets[k] + free[k].index(axis.index)))
      else:
        pooled = _pooling_matrix(
            axis, contract[k].index(axis.index), contract[1 - k], free[1 - k], other, offsets[1 - k]
        )
        mapped.append(pooled or geometry.reduced(axis, shapes[k][axis.index]))
    outs.append(tuple(mapped))
  return [geometry.union_all(outs) if outs else None]


def _pooling_matrix(axis, position, other_contract, other_free, matrix, offset) -> Axis | None:
  """A constant [out, in] matrix whose rows average contiguous, evenly spaced input windows."""
  if matrix is None or np.ndim(matrix) != 2 or len(other_free) != 1:
    return None
  rows = np.moveaxis(np.asarray(matrix), other_contract[position], 1)
  spans = []
  for row in rows:
    hit = np.flatnonzero(row)
    if hit.size == 0:
      return None
    spans.append((int(hit[0]), int(hit[-1])))
  size = max(b - a + 1 for a, b in spans)
  strides = {b[0] - a[0] for a, b in zip(spans, spans[1:])}
  stride = strides.pop() if len(strides) == 1 else max(strides, default=1)
  return geometry.moved(geometry.window(axis, size, stride, -spans[0][0]), offset)


def elementwise(eqn, geoms):
  """Same-shaped (or size-1 broadcast) inputs and outputs: fields of all inputs meet."""
  present = [g for g in geoms if g is not None]
  if not present:
    return [None] * len(eqn.outvars)
  out_shape = eqn.outvars[0].aval.shape
  first = [v for v, g in zip(eqn.invars, geoms) if g is not None][0].aval.shape
  if len(first) != len(out_shape):  # a shape change no rule knows: everything is reduced
    merged = geometry.union_all(
        [
            tuple(geometry.reduced(a, _len(v, a)) for a in g)
            for v, g in zip(eqn.invars, geoms)
            if g is not None
        ]
    )
    return [merged] * len(eqn.outvars)
  return [geometry.union_all(present)] * len(eqn.outvars)


def _len(var, axis: Axis) -> int:
  return 1 if axis.index is None else var.aval.shape[axis.index]


RULES: dict[str, Rule] = {
    'conv_general_dilated': conv,
    'reduce_window_max': reduce_window,
    'reduce_window_min': reduce_window,
    'reduce_window_sum': reduce_window,
    'reduce_window': reduce_window,
    'pad': pad,
    'slice': slice_,
    'reduce_sum': reduce,
    'reduce_max': reduce,
    'reduce_min': reduce,
    'reduce_prod': reduce,
    'argmax': reduce,
    'argmin': reduce,
    'reduce_and': reduce,
    'reduce_or': reduce,
    'transpose': transpose,
    'broadcast_in_dim': broadcast_in_dim,
    'squeeze': squeeze,
    'reshape': reshape,
}


def propagate(eqn, geoms: list[Geometry], values: list) -> list[Geometry]:
  """The output geometries of `eqn`; `values` holds known constant inputs (else None)."""
  if all(g is None for g in geoms):
    return [None] * len(eqn.outvars)
  name = eqn.primitive.name
  if name == 'dot_general':
    return dot_general(eqn, geoms, values)
  if name in RULES:
    return RULES[name](eqn, geoms)
  return elementwise(eqn, geoms)
