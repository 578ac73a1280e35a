"""Which output channels of a network must be pruned together, read from its computation.

Removing filter c of a conv removes channel c of its output, and with it everything that channel
meets downstream: the BatchNorm statistics and affine parameters of channel c, row c of the next
conv's kernel on its input axis, and, where the channel is added to another (a residual
shortcut) or multiplied with one (a squeeze-and-excitation gate), channel c of that other one too
(Li et al. 2017, §3.3, prune the residual stream of a ResNet stage together for this reason).

Nothing here is written per family. The model's eval forward pass is traced to a jaxpr
(`jax.make_jaxpr` of `model.apply`, params and batch statistics as inputs) and interpreted
abstractly: every array that carries data holds one *slot* per channel of its channel axis (the
last axis of a conv's output, followed as transposes and reshapes move it); the network's
parameters are followed as views of their leaves. Per primitive:

- conv_general_dilated / dot_general whose kernel is a whole parameter of an nn.Conv / nn.Dense
  layer: a *producer*, whose output channels are fresh slots (the layer's filters); each input
  slot picks up the kernel's input-axis slice. A depthwise conv (groups = input channels) maps
  input channel c to output channels c·m … c·m + m − 1, tied to it. A grouped conv with
  1 < groups < channels, or a conv/matmul whose kernel is anything else, makes its input and
  output channels unprunable.
- elementwise ops (incl. size-1 broadcasting): two data operands tie their slots one to one
  (union-find); a parameter view along the channel axis attaches its slices (BatchNorm mean, var,
  scale, bias; conv biases); data or constants that vary along the channel axis make it
  unprunable.
- concatenate on the channel axis concatenates slot lists; pad on it (at one end) adds slots of
  padding, which shrink with what they are added to (ResNet's option-A shortcut); pooling and
  reductions over other axes, transposes and reshapes that keep or merge the channel axis (a
  flatten before a dense layer: row (h·W + w)·C + c is channel c's) keep slots.
- anything else that touches a channel axis (slicing or splitting it, channel shuffles,
  reductions and windows across channels, gathers, control flow) makes its channels unprunable,
  as do the channels that reach the model output. Nested jaxprs (jit, custom_jvp/vjp) are walked.

Slicing or splitting the channel axis is refused rather than followed (unlike a split into
sub-lists), because the model code, not the graph, decides where the cut falls once the input
is narrower. Parameters used in a way not followed here cannot be sliced, so channels whose
slices reach them are unprunable too: the analysis errs towards pruning less, never wrongly.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from common import jaxprs
from models import fast_conv

_ELEMENTWISE = frozenset(
    [
        'neg',
        'sign',
        'floor',
        'ceil',
        'round',
        'is_finite',
        'exp',
        'exp2',
        'log',
        'log1p',
        'expm1',
        'tanh',
        'logistic',
        'sin',
        'cos',
        'tan',
        'asin',
        'acos',
        'atan',
        'sinh',
        'cosh',
        'asinh',
        'acosh',
        'atanh',
        'sqrt',
        'rsqrt',
        'cbrt',
        'abs',
        'not',
        'integer_pow',
        'square',
        'erf',
        'erfc',
        'erf_inv',
        'lgamma',
        'digamma',
        'convert_element_type',
        'bitcast_convert_type',
        'reduce_precision',
        'copy',
        'copy_p',
        'real',
        'imag',
        'conj',
        'add',
        'add_any',
        'sub',
        'mul',
        'div',
        'rem',
        'pow',
        'max',
        'min',
        'atan2',
        'nextafter',
        'and',
        'or',
        'xor',
        'eq',
        'ne',
        'lt',
        'le',
        'gt',
        'ge',
        'shift_left',
        'shift_right_logical',
        'shift_right_arithmetic',
        'select_n',
        'clamp',
    ]
)
_REDUCTIONS = frozenset(
    [
        'reduce_sum',
        'reduce_max',
        'reduce_min',
        'reduce_prod',
        'reduce_and',
        'reduce_or',
        'argmax',
        'argmin',
    ]
)
_WINDOWS = frozenset(['reduce_window_sum', 'reduce_window_max', 'reduce_window_min'])
_CUMULATIVE = frozenset(['cumsum', 'cumprod', 'cummax', 'cummin', 'cumlogsumexp'])
# Random numbers (dropout masks) depend on no channel's identity: they constrain nothing.
_RANDOM = frozenset(
    [
        'random_bits',
        'random_seed',
        'random_wrap',
        'random_unwrap',
        'random_split',
        'random_fold_in',
        'threefry2x32',
    ]
)
_PRODUCERS = (nn.Conv, nn.Dense)


@dataclasses.dataclass(frozen=True)
class Group:
  """Channels that are pruned together, and the parameter entries that go with them.

  `members`: (layer path, output channel) of the nn.Conv / nn.Dense filters in the group (not
  depthwise convs, which follow their input). `slices`: (variable path, axis, index) of every
  entry to remove, e.g. ('params/layer1_0/bn1/scale', 0, 3) or ('params/fc/kernel', 0, 77).
  `prunable` is False, with `reason`, when removing the channels would change the function in
  a way that slicing cannot follow.
  """

  members: tuple[tuple[str, int], ...]
  slices: tuple[tuple[str, int, int], ...]
  prunable: bool
  reason: str = ''

  @property
  def layers(self) -> tuple[str, ...]:
    """The producer layers the group's filters belong to, sorted."""
    return tuple(sorted({layer for layer, _ in self.members}))


@dataclasses.dataclass(frozen=True)
class ChannelGraph:
  """`groups`; `layer_channels[layer]`: the group index of each output channel of every
  nn.Conv / nn.Dense layer; `kernels[layer]`: its (kernel path, output axis)."""

  groups: tuple[Group, ...]
  layer_channels: Mapping[str, tuple[int, ...]]
  kernels: Mapping[str, tuple[str, int]]
  # The eval pass's primitives in `primitives` order, and the groups each one's data inputs
  # hold: where a slimmed model computes something else, the groups that made it diverge.
  ops: tuple[str, ...] = ()
  op_groups: tuple[frozenset[int], ...] = ()

  def prunable_groups(self) -> list[int]:
    """Indices of the groups that can be removed: prunable, with at least one filter."""
    return [i for i, g in enumerate(self.groups) if g.prunable and g.members]


# --- Abstract values. --------------------------------------------------------------------------


@dataclasses.dataclass
class _Data:
  """Data (activations): `axis` is the channel axis, `slots[i]` channel i's slot; axis None:
  data whose channels are not followed (they are unprunable)."""

  shape: tuple[int, ...]
  axis: int | None = None
  slots: np.ndarray | None = None


@dataclasses.dataclass
class _Static:
  """A value computed from parameters and constants only. `sources`: (leaf path, axis map),
  the map giving for each axis of this value the leaf's axis it runs along (None: broadcast);
  `varying[d]`: whether the constants in it vary along axis d."""

  shape: tuple[int, ...]
  sources: tuple[tuple[str, tuple[int | None, ...]], ...] = ()
  varying: tuple[bool, ...] = ()


Value = _Data | _Static


def _constant(value: Any) -> _Static:
  """A literal or captured constant; `varying` from its values where it is small."""
  array = np.asarray(value)
  if array.size > 1 << 20:
    return _Static(array.shape, (), tuple(n > 1 for n in array.shape))
  varying = tuple(
      bool(n > 1 and not np.all(array == np.take(array, [0], axis=d)))
      for d, n in enumerate(array.shape)
  )
  return _Static(array.shape, (), varying)


def _merged_axis(
    in_shape: Sequence[int], out_shape: Sequence[int], k: int
) -> tuple[int, int, int] | None:
  """Where a reshape puts input axis k: (output axis j, inner, outer) when axis k is kept or
  merged with neighbours into axis j (element e of axis j is channel (e // inner) % C, repeated
  `outer` times); None when axis k is split."""
  cum_in = [math.prod(in_shape[:i]) for i in range(len(in_shape) + 1)]
  cum_out = [math.prod(out_shape[:j]) for j in range(len(out_shape) + 1)]
  for j in range(len(out_shape)):
    lo, hi = cum_out[j], cum_out[j + 1]
    if lo in cum_in[: k + 1] and hi in cum_in[k + 1 :]:
      return j, hi // cum_in[k + 1], cum_in[k] // lo
  return None


class _Analysis:
  """Union-find over channel slots, with what each slot carries; interprets jaxpr equations."""

  def __init__(self, module_types: Mapping[str, type]):
    self.module_types = module_types
    self.parent: list[int] = []
    self.blocked: dict[int, str] = {}  # slot → why it cannot be pruned
    self.slices: dict[int, list[tuple[str, int, int]]] = {}
    self.filters: dict[int, tuple[str, int]] = {}
    self.unsliceable: dict[tuple[str, int | None], str] = {}  # (leaf, axis or None: all)
    self.layer_slots: dict[str, np.ndarray] = {}
    self.kernels: dict[str, tuple[str, int]] = {}
    self.recording = True
    self.ops: list[str] = []
    self.op_slots: list[np.ndarray] = []

  # Slots.

  def new(self, n: int) -> np.ndarray:
    start = len(self.parent)
    self.parent.extend(range(start, start + n))
    return np.arange(start, start + n)

  def find(self, s: int) -> int:
    root = s
    while self.parent[root] != root:
      root = self.parent[root]
    while self.parent[s] != root:
      self.parent[s], s = root, self.parent[s]
    return root

  def union(self, a: np.ndarray, b: np.ndarray) -> None:
    for x, y in zip(a.tolist(), b.tolist()):
      rx, ry = self.find(x), self.find(y)
      if rx != ry:
        self.parent[ry] = rx

  def block(self, value: Value | np.ndarray | None, reason: str) -> None:
    """Makes the channels of `value` unprunable (its parameters unsliceable)."""
    if isinstance(value, np.ndarray):
      for s in value.tolist():
        self.blocked.setdefault(s, reason)
    elif isinstance(value, _Data) and value.slots is not None:
      self.block(value.slots, reason)
    elif isinstance(value, _Static):
      for leaf, _ in value.sources:
        self.unsliceable.setdefault((leaf, None), reason)

  def attach(self, slots: np.ndarray, leaf: str, axis: int) -> None:
    for i, s in enumerate(slots.tolist()):
      self.slices.setdefault(s, []).append((leaf, axis, i))

  def opaque(self, values: Sequence[Value], outs: Sequence[Any], reason: str) -> list[Value]:
    """An op not followed: its channels unprunable, its parameters unsliceable, its outputs
    data without channels (or varying constants if it read no data)."""
    for v in values:
      self.block(v, reason)
    if any(isinstance(v, _Data) for v in values):
      return [_Data(tuple(o.aval.shape)) for o in outs]
    return [_Static(tuple(o.aval.shape), (), (True,) * len(o.aval.shape)) for o in outs]

  # Walking.

  def run(self, jaxpr, consts: Sequence[Any], args: Sequence[Value]) -> list[Value]:
    env: dict[Any, Value] = {}

    def read(var) -> Value:
      if isinstance(var, core.Literal):
        return _constant(var.val)
      return env[var]

    for var, const in zip(jaxpr.constvars, consts):
      env[var] = _constant(const)
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
      ins = [read(v) for v in eqn.invars]
      sub = jaxprs.sub_jaxpr(eqn)
      if sub is not None:
        outs = self.run(sub[0], sub[1], ins)
      else:
        outs = self.apply(eqn, ins)
        if self.recording:
          self.ops.append(eqn.primitive.name)
          held = [v.slots for v in ins if isinstance(v, _Data) and v.slots is not None]
          self.op_slots.append(np.unique(np.concatenate(held)) if held else np.zeros(0, int))
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  def apply(self, eqn, ins: list[Value]) -> list[Value]:
    name, outs = eqn.primitive.name, eqn.outvars
    shape = tuple(outs[0].aval.shape) if outs else ()
    if name in _RANDOM or name == 'iota':
      varying = tuple(n > 1 for n in shape) if name == 'iota' else (False,) * len(shape)
      return [_Static(tuple(o.aval.shape), (), varying) for o in outs]
    if name in _ELEMENTWISE:
      return [self.elementwise(ins, shape)]
    if not any(isinstance(v, _Data) for v in ins):
      return self.static(eqn, ins, shape)
    data = ins[0]
    if name in ('conv_general_dilated', 'dot_general'):
      return [getattr(self, name)(eqn, ins, shape)]
    if name == 'concatenate':
      return [self.concatenate(eqn, ins, shape)]
    if not isinstance(data, _Data) or any(isinstance(v, _Data) for v in ins[1:]):
      return self.opaque(ins, outs, f'{name} of data')
    if data.axis is None:
      return self.opaque(ins, outs, name)
    k, params = data.axis, eqn.params
    rest = ins[1:]
    if name == 'transpose':
      return [_Data(shape, list(params['permutation']).index(k), data.slots)]
    if name == 'broadcast_in_dim':
      j = params['broadcast_dimensions'][k]
      if data.shape[k] == shape[j]:
        return [_Data(shape, j, data.slots)]
      return self.opaque(ins, outs, 'broadcast along channels')
    if name == 'squeeze':
      if k in params['dimensions']:
        return self.opaque(ins, outs, 'squeeze of the channel axis')
      return [_Data(shape, k - sum(d < k for d in params['dimensions']), data.slots)]
    if name == 'reshape':
      return [self.reshape(data, ins, outs, shape, params)]
    if name in _REDUCTIONS:
      axes = params['axes']
      if k in axes:
        return self.opaque(ins, outs, f'{name} across channels')
      return [_Data(shape, k - sum(d < k for d in axes), data.slots)]
    if name in _WINDOWS:
      trivial = (
          params['window_dimensions'][k] == 1
          and params['window_strides'][k] == 1
          and tuple(params['padding'][k]) == (0, 0)
          and params['base_dilation'][k] == 1
      )
      if not trivial:
        return self.opaque(ins, outs, f'{name} across channels (e.g. LRN)')
      return [_Data(shape, k, data.slots)]
    if name in _CUMULATIVE:
      if params['axis'] == k:
        return self.opaque(ins, outs, f'{name} across channels')
      return [_Data(shape, k, data.slots)]
    if name == 'rev':
      if k in params['dimensions']:
        return self.opaque(ins, outs, 'reversed channels')
      return [_Data(shape, k, data.slots)]
    if name == 'pad':
      return [self.pad(data, rest, shape, params)]
    if name == 'slice':
      start, limit = params['start_indices'][k], params['limit_indices'][k]
      strides = params['strides']
      step = 1 if strides is None else strides[k]
      if (start, limit, step) == (0, data.shape[k], 1):
        return [_Data(shape, k, data.slots)]
      self.block(data, 'slice of the channel axis')
      return [_Data(shape, k, data.slots[start:limit:step])]
    if name == 'split':
      if params['axis'] != k:
        return [_Data(tuple(o.aval.shape), k, data.slots) for o in outs]
      self.block(data, 'split of the channel axis')
      bounds = np.cumsum([0, *params['sizes']])
      return [
          _Data(tuple(o.aval.shape), k, data.slots[a:b])
          for o, a, b in zip(outs, bounds[:-1], bounds[1:])
      ]
    return self.opaque(ins, outs, name)

  def static(self, eqn, ins: list[Value], shape: tuple[int, ...]) -> list[Value]:
    """Ops on parameters and constants: views (broadcast, reshape by size-1 axes, transpose)
    are followed; any other op makes its parameters unsliceable."""
    name, params, outs = eqn.primitive.name, eqn.params, eqn.outvars
    x = ins[0] if ins else None
    if name == 'broadcast_in_dim' and isinstance(x, _Static):
      dims = params['broadcast_dimensions']
      maps = []
      for leaf, old in x.sources:
        new: list[int | None] = [None] * len(shape)
        for i, d in enumerate(dims):
          if x.shape[i] == shape[d]:
            new[d] = old[i]
        maps.append((leaf, tuple(new)))
      varying = [False] * len(shape)
      for i, d in enumerate(dims):
        varying[d] = x.varying[i] and x.shape[i] == shape[d]
      return [_Static(shape, tuple(maps), tuple(varying))]
    if name == 'transpose' and isinstance(x, _Static):
      perm = params['permutation']
      return [
          _Static(
              shape,
              tuple((leaf, tuple(m[p] for p in perm)) for leaf, m in x.sources),
              tuple(x.varying[p] for p in perm),
          )
      ]
    if name in ('reshape', 'squeeze') and isinstance(x, _Static):
      kept_in = [i for i, n in enumerate(x.shape) if n > 1]
      kept_out = [j for j, n in enumerate(shape) if n > 1]
      if [x.shape[i] for i in kept_in] == [shape[j] for j in kept_out] and (
          name == 'squeeze' or params.get('dimensions') is None
      ):
        maps = []
        for leaf, old in x.sources:
          new = [None] * len(shape)
          for i, j in zip(kept_in, kept_out):
            new[j] = old[i]
          maps.append((leaf, tuple(new)))
        varying = [False] * len(shape)
        for i, j in zip(kept_in, kept_out):
          varying[j] = x.varying[i]
        return [_Static(shape, tuple(maps), tuple(varying))]
    return self.opaque(ins, outs, f'{name} of parameters')

  def elementwise(self, ins: list[Value], shape: tuple[int, ...]) -> Value:
    """Same-rank operands (size-1 axes broadcast) or scalars."""
    full = [v for v in ins if len(v.shape) == len(shape)]
    data = [v for v in full if isinstance(v, _Data)]
    followed = [v for v in data if v.axis is not None]
    axes = {v.axis for v in followed}
    if len(axes) > 1:
      for v in ins:
        self.block(v, 'channels of different axes combined')
      return _Data(shape)
    if not followed:
      if data:  # untracked data: parameters in it can no longer be sliced
        for v in ins:
          self.block(v, 'parameters combined with data whose channels are not followed')
        return _Data(shape)
      return self.combine_static(full, shape)
    (k,) = axes
    reference = [v for v in followed if v.shape[k] == shape[k]]
    if not reference:
      for v in ins:
        self.block(v, 'a single channel broadcast to many')
      return _Data(shape)
    slots = reference[0].slots
    for v in full:
      size = v.shape[k]
      if isinstance(v, _Data):
        if v.axis == k and size == shape[k]:
          self.union(slots, v.slots)
        elif size > 1:
          self.block(slots, 'combined with data that varies along the channels')
          self.block(v, 'combined with data that varies along the channels')
        else:
          self.block(v, 'a single channel broadcast to many')
        continue
      if size > 1 and v.varying[k]:
        self.block(slots, 'combined with a constant that varies along the channels')
      for leaf, amap in v.sources:
        for d, n in enumerate(v.shape):
          if n == 1 or amap[d] is None:
            continue
          if d == k:
            self.attach(slots, leaf, amap[d])
          else:
            self.unsliceable.setdefault((leaf, amap[d]), 'runs along a non-channel axis')
    return _Data(shape, k, slots)

  def combine_static(self, full: list[Value], shape: tuple[int, ...]) -> _Static:
    sources, varying = [], [False] * len(shape)
    for v in full:
      assert isinstance(v, _Static)
      for d, n in enumerate(v.shape):
        varying[d] |= bool(v.varying[d]) and n == shape[d]
      for leaf, amap in v.sources:
        sources.append(
            (leaf, tuple(a if v.shape[d] == shape[d] else None for d, a in enumerate(amap)))
        )
    for leaf, amap in sources:  # a parameter times a varying constant: not sliceable there
      for d, a in enumerate(amap):
        if a is not None and varying[d] and shape[d] > 1:
          self.unsliceable.setdefault((leaf, a), 'combined with a constant')
    return _Static(shape, tuple(sources), tuple(varying))

  def reshape(self, data: _Data, ins, outs, shape, params) -> Value:
    if params.get('dimensions') is not None or len(ins) > 1:
      return self.opaque(ins, outs, 'reshape with dimensions')[0]
    where = _merged_axis(data.shape, shape, data.axis)
    if where is None:
      return self.opaque(ins, outs, 'reshape that splits the channel axis')[0]
    j, inner, outer = where
    return _Data(shape, j, np.tile(np.repeat(data.slots, inner), outer))

  def pad(self, data: _Data, rest: list[Value], shape, params) -> Value:
    k = data.axis
    lo, hi, interior = params['padding_config'][k]
    if (lo, hi, interior) == (0, 0, 0):
      return _Data(shape, k, data.slots)
    if interior or lo < 0 or hi < 0 or (lo and hi):
      self.block(data, 'pad of the channel axis at both ends')
      return _Data(shape)
    padding = self.new(lo or hi)  # slots of constant channels: removable, never blocked
    slots = np.concatenate([padding, data.slots] if lo else [data.slots, padding])
    return _Data(shape, k, slots)

  def concatenate(self, eqn, ins: list[Value], shape) -> Value:
    dim = eqn.params['dimension']
    followed = [v for v in ins if isinstance(v, _Data) and v.axis is not None]
    axes = {v.axis for v in followed}
    if len(axes) != 1:
      return self.opaque(ins, eqn.outvars, 'concatenate of unfollowed data')[0]
    (k,) = axes
    if dim != k:
      return self.elementwise(ins, shape)
    parts = []
    for v in ins:
      if isinstance(v, _Data) and v.axis == k:
        parts.append(v.slots)
      else:
        self.block(v, 'concatenated with unfollowed channels')
        fresh = self.new(v.shape[k])
        self.block(fresh, 'channels concatenated from a constant or unfollowed data')
        parts.append(fresh)
    return _Data(shape, k, np.concatenate(parts))

  def kernel(self, rhs: Value, layer_kind: tuple[type, ...]) -> tuple[str, tuple] | None:
    """(leaf, axis map) when `rhs` is a whole parameter named kernel of an nn.Conv/nn.Dense."""
    if not isinstance(rhs, _Static) or len(rhs.sources) != 1 or any(rhs.varying):
      return None
    leaf, amap = rhs.sources[0]
    parts = leaf.split('/')
    module = self.module_types.get('/'.join(parts[1:-1]))
    if parts[-1] != 'kernel' or module is None or not issubclass(module, layer_kind):
      return None
    if any(a is None for a, n in zip(amap, rhs.shape)):
      return None
    return leaf, amap

  def producer(self, leaf: str, out_axis: int, n: int) -> np.ndarray:
    layer = '/'.join(leaf.split('/')[1:-1])
    slots = self.new(n)
    self.attach(slots, leaf, out_axis)
    for c, s in enumerate(slots.tolist()):
      self.filters[s] = (layer, c)
    self.layer_slots.setdefault(layer, slots)
    self.kernels.setdefault(layer, (leaf, out_axis))
    return slots

  def conv_general_dilated(self, eqn, ins: list[Value], shape) -> Value:
    lhs, rhs = ins
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p['dimension_numbers']
    kernel = self.kernel(rhs, (nn.Conv,))
    followed = isinstance(lhs, _Data) and lhs.axis is not None
    if (
        kernel is None
        or p['batch_group_count'] != 1
        or not isinstance(lhs, _Data)
        or (followed and lhs.axis != lhs_spec[1])
    ):
      return self.opaque(ins, eqn.outvars, 'conv whose kernel is not an nn.Conv parameter')[0]
    leaf, amap = kernel
    o_axis, i_axis = amap[rhs_spec[0]], amap[rhs_spec[1]]
    groups, c_in, c_out = p['feature_group_count'], lhs.shape[lhs_spec[1]], shape[out_spec[1]]
    layer = '/'.join(leaf.split('/')[1:-1])
    if groups == 1:
      if followed:
        self.attach(lhs.slots, leaf, i_axis)
      return _Data(shape, out_spec[1], self.producer(leaf, o_axis, c_out))
    if groups == c_in and followed:  # depthwise: output c·m + j follows input c
      multiplier = c_out // c_in
      if multiplier == 1:
        slots = lhs.slots
      else:
        slots = self.new(c_out)
        self.union(slots, np.repeat(lhs.slots, multiplier))
      self.attach(slots, leaf, o_axis)
      self.layer_slots.setdefault(layer, slots)
      self.kernels.setdefault(layer, (leaf, o_axis))
      return _Data(shape, out_spec[1], slots)
    self.block(lhs, f'input of grouped conv {layer} ({groups} groups)')
    slots = self.new(c_out)
    self.block(slots, f'output of grouped conv {layer} ({groups} groups)')
    self.layer_slots.setdefault(layer, slots)
    self.kernels.setdefault(layer, (leaf, o_axis))
    self.unsliceable.setdefault((leaf, None), f'kernel of grouped conv {layer}')
    return _Data(shape, out_spec[1], slots)

  def dot_general(self, eqn, ins: list[Value], shape) -> Value:
    (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
    lhs, rhs = ins
    lhs_free = [d for d in range(len(lhs.shape)) if d not in lc and d not in lb]
    rhs_free = [d for d in range(len(rhs.shape)) if d not in rc and d not in rb]
    tracked = [
        (side, v)
        for side, v in (('lhs', lhs), ('rhs', rhs))
        if isinstance(v, _Data) and v.axis is not None
    ]
    if len(tracked) != 1:
      return self.opaque(ins, eqn.outvars, 'matmul of data with data')[0]
    ((side, data),) = tracked
    other = rhs if side == 'lhs' else lhs
    k = data.axis
    free = lhs_free if side == 'lhs' else rhs_free
    if k in free:  # the channels pass through (e.g. pooling as a matmul with a constant)
      if isinstance(other, _Static) and other.sources:
        self.block(other, 'parameters contracted with non-channel axes')
      offset = len(lb) + (0 if side == 'lhs' else len(lhs_free))
      return _Data(shape, offset + free.index(k), data.slots)
    kernel = self.kernel(other, (nn.Dense,)) if side == 'lhs' else None
    if kernel is None or k not in lc or len(rhs_free) != 1 or lb:
      return self.opaque(ins, eqn.outvars, 'matmul whose kernel is not an nn.Dense parameter')[0]
    leaf, amap = kernel
    self.attach(data.slots, leaf, amap[rc[lc.index(k)]])
    out_axis = len(lb) + len(lhs_free)
    return _Data(shape, out_axis, self.producer(leaf, amap[rhs_free[0]], shape[out_axis]))

  # Result.

  def groups(self) -> ChannelGraph:
    by_slice: dict[tuple[str, int, int], int] = {}
    for s, entries in self.slices.items():  # a parameter entry shared by slots ties them
      for entry in entries:
        first = by_slice.setdefault(entry, s)
        if first != s:
          self.union(np.array([first]), np.array([s]))
    roots: dict[int, int] = {}
    members: list[set] = []
    slices: list[set] = []
    reasons: list[str] = []

    def index(s: int) -> int:
      r = self.find(s)
      if r not in roots:
        roots[r] = len(members)
        members.append(set())
        slices.append(set())
        reasons.append('')
      return roots[r]

    layer_channels = {
        layer: tuple(index(s) for s in slots.tolist()) for layer, slots in self.layer_slots.items()
    }
    for s, entries in self.slices.items():
      if self.find(s) in roots:
        slices[index(s)].update(entries)
    for s, member in self.filters.items():
      members[index(s)].add(member)
    for s, reason in self.blocked.items():
      if self.find(s) in roots and not reasons[index(s)]:
        reasons[index(s)] = reason
    for g, entries in enumerate(slices):
      if reasons[g]:
        continue
      for leaf, axis, _ in entries:
        why = self.unsliceable.get((leaf, axis)) or self.unsliceable.get((leaf, None))
        if why:
          reasons[g] = f'{leaf}: {why}'
          break
    groups = tuple(
        Group(tuple(sorted(m)), tuple(sorted(e)), not r, r)
        for m, e, r in zip(members, slices, reasons)
    )
    op_groups = tuple(
        frozenset(roots[r] for r in {self.find(x) for x in slots.tolist()} if r in roots)
        for slots in self.op_slots
    )
    return ChannelGraph(groups, layer_channels, dict(self.kernels), tuple(self.ops), op_groups)


def primitives(jaxpr) -> list[str]:
  """The primitives a jaxpr applies, nested calls expanded in place (the order of `ops`)."""
  names = []
  for eqn in jaxpr.eqns:
    sub = jaxprs.sub_jaxpr(eqn)
    names.extend(primitives(sub[0]) if sub is not None else [eqn.primitive.name])
  return names


def _leaf_paths(variables: Any) -> list[str]:
  flat, _ = jax.tree_util.tree_flatten_with_path(variables)
  return ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in flat]


def _trace(fun: Any, *args: Any) -> tuple[Any, Any, dict[str, type]]:
  """(closed jaxpr, output shapes, the class of every module called by path) of `fun`."""
  types: dict[str, type] = {}

  def record(next_fun, call_args, call_kwargs, context):
    types.setdefault('/'.join(context.module.path), type(context.module))
    return next_fun(*call_args, **call_kwargs)

  with nn.intercept_methods(record), fast_conv.plain():  # convs as lax's, as the rules read them
    closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*args)
  return closed, shapes, types


def analyse(
    model: nn.Module, variables: Mapping[str, Any], image_shape: Sequence[int]
) -> ChannelGraph:
  """The channel groups of `model` with `variables` on (H, W, C) images.

  The eval forward pass is traced; where the variables hold parameters that pass does not read
  (auxiliary heads), the training pass is traced too and both constrain the groups.
  """
  variables = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), dict(variables)
  )
  images = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)

  def evaluate(v, x):
    return model.apply(v, x, train=False)

  def train(v, x):  # sown values (auxiliary logits) are outputs too
    rngs = {'dropout': jax.random.key(0)}
    mutable = sorted({*v, 'intermediates'} - {'params'})
    return model.apply(v, x, train=True, rngs=rngs, mutable=mutable)

  paths = _leaf_paths(variables)
  closed, outputs, types = _trace(evaluate, variables, images)
  passes = [(closed, [True] * len(jax.tree.leaves(outputs)))]
  read = {v for e in closed.jaxpr.eqns for v in e.invars if not isinstance(v, core.Literal)}
  if any(v not in read for v in closed.jaxpr.invars[: len(paths)]):
    closed_train, (outputs, updates), train_types = _trace(train, variables, images)
    types.update(train_types)
    sown = {c: c not in variables for c in updates}  # not the updated batch statistics
    passes.append(
        (
            closed_train,
            [True] * len(jax.tree.leaves(outputs))
            + [sown[c] for c in sorted(updates) for _ in jax.tree.leaves(updates[c])],
        )
    )
  analysis = _Analysis(types)
  for closed, is_output in passes:
    args: list[Value] = [
        _Static(tuple(v.aval.shape), ((p, tuple(range(v.aval.ndim))),), (False,) * v.aval.ndim)
        for p, v in zip(paths, closed.jaxpr.invars)
    ]
    image_slots = analysis.new(image_shape[-1])
    analysis.block(image_slots, 'input image channels')
    args.append(_Data(images.shape, len(images.shape) - 1, image_slots))
    outs = analysis.run(closed.jaxpr, closed.consts, args)
    analysis.recording = False
    for out, output in zip(outs, is_output):
      if output:
        analysis.block(out, 'reaches the model output')
  return analysis.groups()
