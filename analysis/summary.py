"""Per-layer summary of any model: output shape, neurons, parameters, MACs, memory and receptive
field.

Rows come from the forward pass's graph (`analysis.graph`): one per innermost flax module or
named function scope (Conv, BatchNorm, Dense, `lrn`, `max_pool`, ...), plus one per notable
operation written inline in a bigger module (pooling, flatten, concatenation, a residual add).
Names are flax module paths, e.g. `layer1_0/conv2`, and `layer1_0/add` for the block's merge.
Memory (`analysis.memory`) is per image: a row's output bytes at the dtype the model computes in,
the activation bytes alive while it runs, and ShuffleNet v2's memory access of its convolutions
and matrix products, in elements.
"""

import collections
import dataclasses
from fractions import Fraction
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from analysis import graph as graph_lib
from analysis import macs as macs_lib
from analysis import memory
from common.errors import ConfigError
from models import fast_conv

_POOLS = {
    'reduce_window_max': 'max_pool',
    'reduce_window_sum': 'avg_pool',
    'reduce_window_min': 'min_pool',
    'reduce_window': 'pool',
}
_MERGES = {
    'add': 'add',
    'sub': 'sub',
    'mul': 'mul',
    'div': 'div',
    'max': 'max',
    'min': 'min',
    'concatenate': 'concat',
}


@dataclasses.dataclass
class Layer:
  """One row. Receptive field, jump and start are per image axis (height, width), in input
  pixels; jump is None once the image axes are gone (after global pooling or flattening)."""

  name: str
  kind: str
  output_shape: tuple[int, ...]  # without the batch axis
  neurons: int
  params: int
  macs: int
  receptive_field: tuple[float, ...] | None
  jump: tuple[float, ...] | None
  start: tuple[float, ...] | None
  memory_access: int = 0  # elements of the conv/matmul inputs, weights and outputs (not MACs)
  activation_bytes: int = 0  # of the output, one image
  live_bytes: int = 0  # activations alive while the row runs, one image
  path: tuple[str, ...] = dataclasses.field(repr=False, default=())
  output_id: int = dataclasses.field(repr=False, default=0)
  real_macs: int = dataclasses.field(repr=False, default=0)
  ops: list = dataclasses.field(repr=False, default_factory=list)


@dataclasses.dataclass
class Summary:
  model: str
  input_shape: tuple[int, ...]
  layers: list[Layer]
  total_params: int
  total_macs: int
  unused_params: int  # in modules the eval pass does not call (auxiliary heads)
  xla: dict[str, float] = dataclasses.field(default_factory=dict)
  total_memory_access: int = 0  # elements, one image
  activation_bytes: int = 0  # every row's output, one image: a floor for what training keeps
  peak_live_bytes: int = 0  # the most activation bytes alive at once in the eval pass, one image
  peak_live_at: str = ''  # the row (or inline operation) where they are

  def layer(self, name: str) -> Layer:
    for layer in self.layers:
      if layer.name == name:
        return layer
    raise KeyError(f'No layer {name!r}; layers: {", ".join(l.name for l in self.layers)}.')


def _number(x: Fraction) -> float:
  return int(x) if x.denominator == 1 else float(x)


def _notable(op) -> str | None:
  """The row kind of an inline operation worth a row of its own, else None."""
  name, inputs = op.eqn.primitive.name, op.inputs
  if name == 'conv_general_dilated':
    return 'conv'
  if name == 'dot_general':
    return 'matmul' if macs_lib.counted(op) else None
  if name in _POOLS and inputs[0].geometry is not None:
    return _POOLS[name]
  geom = inputs[0].geometry
  spatial = {a.index for a in geom or () if a.index is not None}
  if name in ('reduce_sum', 'reduce_max') and spatial & set(op.eqn.params['axes']):
    return 'global_avg_pool' if name == 'reduce_sum' else 'global_max_pool'
  if (
      name == 'reshape'
      and spatial
      and not any(a.index is not None for a in op.outputs[0].geometry or ())
  ):
    return 'flatten'
  if name in _MERGES:
    paths = {s.id for s in inputs if s.geometry is not None and not s.constant}
    return _MERGES[name] if len(paths) >= 2 else None
  return None


def _detail(ops) -> str:
  """Kernel, stride, dilation and groups of the row's first window op, e.g. '3×3/2 groups 32'."""
  for op in ops:
    p, name = op.eqn.params, op.eqn.primitive.name
    if name == 'conv_general_dilated':
      lhs_spec, rhs_spec, _ = p['dimension_numbers']
      kernel = [op.eqn.invars[1].aval.shape[d] for d in rhs_spec[2:]]
      channels = op.eqn.invars[0].aval.shape[lhs_spec[1]]
      groups = p['feature_group_count']
      text = '×'.join(map(str, kernel)) + _stride(p['window_strides'])
      if any(d > 1 for d in p['lhs_dilation']):
        text += ' transposed' + _stride(p['lhs_dilation'])
      if any(d > 1 for d in p['rhs_dilation']):
        text += f' dilation {max(p["rhs_dilation"])}'
      if groups > 1:
        text += ' depthwise' if groups == channels else f' groups {groups}'
      return text
    if name in _POOLS:
      image_axes = [a.index for a in op.inputs[0].geometry or () if a.index is not None]
      window = [p['window_dimensions'][i] for i in image_axes]
      if any(w > 1 for w in window):
        return '×'.join(map(str, window)) + _stride([p['window_strides'][i] for i in image_axes])
      across = [w for w in p['window_dimensions'] if w > 1]
      return f'across {across[0]} channels' if across else ''
  return ''


def _stride(strides) -> str:
  return (
      ''
      if all(s == 1 for s in strides)
      else '/' + '×'.join(sorted({str(s) for s in strides}, key=int))
  )


def _group_rows(ops: list, module_types: dict, output_ids: list[int]) -> list[Layer]:
  paths = [op.scope[1:] for op in ops]  # scope[0] is the top module's class name
  inner = {p[:i] for p in paths for i in range(len(p))}  # proper prefixes
  consumers: dict[int, set[int]] = collections.defaultdict(set)
  for i, op in enumerate(ops):
    for slot in op.inputs:
      consumers[slot.id].add(i)
  counts: collections.Counter = collections.Counter()
  rows: list[tuple[tuple, str, list[int]]] = []  # (path, kind or '', op indices)
  for i, path in enumerate(paths):
    if path and path not in inner:
      if rows and rows[-1][0] == path and rows[-1][1] == '' and rows[-1][2][-1] == i - 1:
        rows[-1][2].append(i)
      else:
        rows.append((path, '', [i]))
    elif (kind := _notable(ops[i])) is not None:
      rows.append((path, kind, [i]))
  layers = []
  for path, kind, indices in rows:
    base = '/'.join(path + ((kind,) if kind else ()))
    name = base if counts[base] == 0 else f'{base}_{counts[base]}'
    counts[base] += 1
    members = set(indices)
    produced = [s for i in indices for s in ops[i].outputs]
    leaving = [s for s in produced if consumers[s.id] - members or s.id in output_ids]
    out = (leaving or produced)[-1]
    kind_name = kind if kind else module_types.get(path, path[-1] if path else '')
    layers.append(
        _layer(
            name,
            f'{kind_name} {_detail([ops[i] for i in indices])}'.strip(),
            path,
            out,
            [ops[i] for i in indices],
        )
    )
  return layers


def _layer(name: str, kind: str, path: tuple, out, ops: list) -> Layer:
  counts = [macs_lib.op_macs(op) for op in ops]
  geom = out.geometry
  spatial = geom is not None and all(a.index is not None for a in geom)
  return Layer(
      name=name,
      kind=kind,
      output_shape=tuple(out.shape[1:]),
      neurons=int(np.prod(out.shape[1:])),
      params=0,
      macs=sum(c[0] for c in counts),
      memory_access=sum(memory.memory_access(op) for op in ops),
      receptive_field=tuple(_number(a.rf) for a in geom) if geom else None,
      jump=tuple(_number(a.jump) for a in geom) if spatial else None,
      start=tuple(_number(a.start) for a in geom) if geom else None,
      path=path,
      output_id=out.id,
      real_macs=sum(c[1] for c in counts),
      ops=ops,
  )


def _attribute_params(layers: list[Layer], params: Any) -> int:
  """Adds each module's own parameters to its first row; returns the count left unattributed."""
  unused = 0
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(params):
    owner = tuple(str(getattr(k, 'key', k)) for k in key_path[:-1])
    row = next((l for l in layers if l.path == owner), None) or next(
        (l for l in layers if l.path[: len(owner)] == owner and owner), None
    )
    if row is None:
      unused += int(np.size(leaf))
    else:
      row.params += int(np.size(leaf))
  return unused


def abstract_variables(model: nn.Module, input_shape: tuple[int, ...]) -> Any:
  """The variables the trainer would create (initialised in training mode, so auxiliary heads
  have parameters), as shapes only."""
  images = jnp.zeros((1, *input_shape), jnp.float32)
  key = jax.random.key(0)
  return jax.eval_shape(lambda: model.init({'params': key, 'dropout': key}, images, train=True))


def summarize(
    model: nn.Module,
    input_shape: tuple[int, ...],
    variables: Any = None,
    *,
    name: str = '',
    cross_check: bool = False,
) -> Summary:
  """The per-layer summary of `model` on one `input_shape` (H, W, C) image, in eval mode.

  `cross_check` also asks XLA's cost analysis for the flops of the counted layers and of the
  whole forward pass (`Summary.xla`).
  """
  variables = variables if variables is not None else abstract_variables(model, input_shape)
  images = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  graph = graph_lib.walk(model, variables, images)
  layers = _group_rows(graph.ops, graph.module_types, graph.output_ids)
  params = variables.get('params', {})
  unused = _attribute_params(layers, params)
  peak, peak_at = _add_memory(layers, graph, images)
  summary = Summary(
      model=name or type(model).__name__,
      input_shape=tuple(input_shape),
      layers=layers,
      total_params=sum(int(np.size(x)) for x in jax.tree.leaves(params)),
      total_macs=sum(l.macs for l in layers),
      unused_params=unused,
      total_memory_access=sum(l.memory_access for l in layers),
      activation_bytes=sum(l.activation_bytes for l in layers),
      peak_live_bytes=peak,
      peak_live_at=peak_at,
  )
  if cross_check:
    summary.xla = xla_cost(model, variables, images, layers)
  return summary


def _add_memory(layers: list[Layer], graph: graph_lib.Graph, images: Any) -> tuple[int, str]:
  """Fills each row's output and live bytes; returns the peak live bytes and where they are."""
  image_bytes = int(np.prod(images.shape)) * np.dtype(images.dtype).itemsize
  sizes = memory.activation_bytes(graph.ops, graph.input_id, image_bytes)
  live = memory.live_bytes(graph.ops, sizes, graph.output_ids)
  index = {id(op): i for i, op in enumerate(graph.ops)}
  row_of = {}
  for layer in layers:
    layer.activation_bytes = sizes.get(layer.output_id, 0)
    layer.live_bytes = max((live[index[id(op)]] for op in layer.ops), default=0)
    row_of.update((id(op), layer.name) for op in layer.ops)
  if not live:
    return image_bytes, ''
  i = int(np.argmax(live))
  op = graph.ops[i]
  if id(op) in row_of:
    return live[i], row_of[id(op)]
  before = next((row_of[id(o)] for o in reversed(graph.ops[:i]) if id(o) in row_of), 'input')
  return live[i], '/'.join(op.scope[1:] + (op.eqn.primitive.name,)) + f' after {before}'


def model_facts(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
  """What training records about its model (train_and_evaluate's `model_facts`): the MACs of
  one `input_shape` image in eval mode, by this summary's convention."""
  return {'macs': summarize(model, input_shape).total_macs}


def _flops(lowered) -> float:
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def xla_cost(
    model: nn.Module, variables: Any, images: Any, layers: list[Layer]
) -> dict[str, float]:
  """XLA's flop counts: of the conv and matmul ops alone (replayed as one program, which should
  be exactly 2 × MACs on real pixels) and of the whole forward pass (which adds bias, BN,
  activations and pooling)."""
  counted = [op for layer in layers for op in layer.ops if macs_lib.counted(op)]

  def replay(*args):
    outs, i = [], 0
    for op in counted:
      n = len(op.eqn.invars)
      outs += graph_lib.bind(op.eqn, args[i : i + n])
      i += n
    return outs

  operands = [
      jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for op in counted for v in op.eqn.invars
  ]
  with fast_conv.plain():
    forward = jax.jit(graph_lib.forward(model)).lower(variables, images)
  return {
      'layer_flops': _flops(jax.jit(replay).lower(*operands)) if counted else 0.0,
      'real_macs': float(sum(l.real_macs for l in layers)),
      'forward_flops': _flops(forward),
  }


def layer_outputs(
    model: nn.Module, variables: Any, images: Any, names: list[str]
) -> dict[str, jax.Array]:
  """The outputs of the summary rows `names` for a batch of `images` (eval mode, one jit)."""
  abstract = jax.ShapeDtypeStruct(images.shape, jnp.float32)
  graph = graph_lib.walk(model, variables, abstract)
  by_name = {l.name: l for l in _group_rows(graph.ops, graph.module_types, graph.output_ids)}
  missing = [n for n in names if n not in by_name]
  if missing:
    raise ConfigError(
        f'No layer named {", ".join(map(repr, missing))}; the layers are: {", ".join(by_name)}.'
    )
  ids = frozenset(by_name[n].output_id for n in names)

  @jax.jit
  def run(variables, images):
    return graph_lib.walk(model, variables, images, evaluate=True, capture=ids).captured

  captured = run(variables, jnp.asarray(images, jnp.float32))
  return {n: captured[by_name[n].output_id] for n in names}
