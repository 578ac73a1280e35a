"""Filter pruning (Li et al. 2017, "Pruning Filters for Efficient ConvNets"): remove the filters
with the smallest kernel norms and rebuild a physically smaller network.

Li et al. rank the filters of one layer by the L1 norm of their kernels, remove the m smallest
with their feature maps and the matching kernel rows of the next layer, and retrain. Channels
that are tied across layers (compression/channel_graph.py: a residual stream, a depthwise conv,
a squeeze-and-excitation gate) are removed together, so their norms are summed. Where we differ:

- Norms are divided by the mean filter norm of their layer before summing, so a tied group is
  ranked by all its layers equally rather than by whichever has the largest kernels (Li et al.
  prune a ResNet's residual stream by the norms of one layer, the first of the stage).
- Every set of groups tied across the same layers (a "bundle": one layer's own channels, or a
  stage's residual stream) loses floor(fraction · size) groups, and keeps at least one; each layer
  thus loses about `fraction` of its channels (Li et al. choose per-layer fractions by each
  layer's sensitivity; pass `layers` to prune some layers only).
- 'l2' ranks by the L2 norm instead.
- Model code may test widths (MobileNet v2 adds a block's input only `if x.shape[-1] ==
  self.features`; Xception builds a skip conv where they differ). The slimmed model's eval
  pass is traced and compared with the original's; bundles whose removal changes what it
  computes are left whole, so such residual streams stay unpruned. Layers whose width the
  code derives from their input (MobileNet v2's expansion) are pinned in `widths`.

The pruned variables are slices of the trained ones; `models.slimming.slim(model, widths)` is
the network they belong to. Where the removed channels were already dead (zero filters, zero
BatchNorm scale and shift), it computes exactly what the original did.
"""

import collections
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from compression import channel_graph
from models import fast_conv
from models.slimming import slim

SALIENCIES = ('l1', 'l2')


def filter_norms(kernel: np.ndarray, out_axis: int, saliency: str = 'l1') -> np.ndarray:
  """The norm of each output filter of `kernel` (all axes but `out_axis`): Li et al.'s
  sum of absolute weights for 'l1', the Euclidean norm for 'l2'."""
  moved = np.moveaxis(np.asarray(kernel, np.float64), out_axis, -1)
  flat = moved.reshape(-1, moved.shape[-1])
  return np.abs(flat).sum(0) if saliency == 'l1' else np.sqrt(np.square(flat).sum(0))


def _leaves(variables: Mapping[str, Any]) -> dict[str, Any]:
  flat, _ = jax.tree_util.tree_flatten_with_path(dict(variables))
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf for path, leaf in flat}


def _nest(leaves: Mapping[str, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, leaf in leaves.items():
    node = tree
    *parents, name = path.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[name] = leaf
  return tree


def group_scores(
    graph: channel_graph.ChannelGraph, variables: Mapping[str, Any], saliency: str = 'l1'
) -> dict[int, float]:
  """{group index: saliency} of every prunable group: the sum over its filters of each filter's
  norm divided by the mean filter norm of its layer."""
  leaves = _leaves(variables)
  normalised = {}
  for layer, (leaf, axis) in graph.kernels.items():
    norms = filter_norms(leaves[leaf], axis, saliency)
    normalised[layer] = norms / max(float(norms.mean()), 1e-12)
  return {
      g: float(sum(normalised[layer][c] for layer, c in graph.groups[g].members))
      for g in graph.prunable_groups()
  }


def bundles(
    graph: channel_graph.ChannelGraph,
    scores: Mapping[int, float],
    fraction: float,
    layers: str | None = None,
) -> dict[tuple[str, ...], list[int]]:
  """{layers: groups to remove} per bundle of n groups tied across the same layers: the
  floor(fraction · n) lowest-scoring (at least one kept), among the groups whose layers all
  match the regular expression `layers` (re.fullmatch)."""
  pattern = re.compile(layers) if layers is not None else None
  members: dict[tuple[str, ...], list[int]] = collections.defaultdict(list)
  for g in scores:
    group_layers = graph.groups[g].layers
    if pattern is None or all(pattern.fullmatch(layer) for layer in group_layers):
      members[group_layers].append(g)
  chosen = {}
  for key, groups in members.items():
    count = min(math.floor(fraction * len(groups)), len(groups) - 1)
    if count:
      chosen[key] = sorted(groups, key=lambda g: (scores[g], g))[:count]
  return chosen


def slice_variables(
    graph: channel_graph.ChannelGraph, variables: Mapping[str, Any], removed: set[int]
) -> dict[str, Any]:
  """`variables` without the entries of the `removed` groups (numpy arrays)."""
  drop: dict[str, dict[int, set[int]]] = collections.defaultdict(
      lambda: collections.defaultdict(set)
  )
  for g in removed:
    for leaf, axis, index in graph.groups[g].slices:
      drop[leaf][axis].add(index)
  sliced = {}
  for path, leaf in _leaves(variables).items():
    array = np.asarray(leaf)
    for axis, indices in drop.get(path, {}).items():
      array = np.delete(array, sorted(indices), axis=axis)
    sliced[path] = array
  return _nest(sliced)


def widths_after(graph: channel_graph.ChannelGraph, removed: set[int]) -> dict[str, int]:
  """{layer: output channels left} of every conv/dense layer that lost some."""
  widths = {}
  for layer, groups in graph.layer_channels.items():
    kept = sum(g not in removed for g in groups)
    if kept != len(groups):
      widths[layer] = kept
  return widths


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {path: tuple(np.shape(leaf)) for path, leaf in _leaves(tree).items()}


def _created(model: Any, image_shape: Sequence[int], train: bool) -> dict[str, tuple[int, ...]]:
  images = jnp.zeros((1, *image_shape), jnp.float32)
  key = jax.random.key(0)
  rngs = {'params': key, 'dropout': key}
  variables = jax.eval_shape(lambda: model.init(rngs, images, train=train))
  return _shapes({c: tree for c, tree in variables.items() if c != 'intermediates'})


def settle_widths(
    model: Any,
    graph: channel_graph.ChannelGraph,
    widths: Mapping[str, int],
    sliced: Any,
    image_shape: Sequence[int],
) -> dict[str, int] | None:
  """`widths` plus the layers whose width the model's code computes from its input (MobileNet
  v2's expansion, `round(in · t)`), pinned at their pruned width, so that the slimmed model
  creates exactly the sliced variables; None if it cannot (the code builds other layers)."""
  have = _shapes(sliced)
  widths = dict(widths)
  kernel_layers = {leaf: (layer, axis) for layer, (leaf, axis) in graph.kernels.items()}
  for _ in range(8):
    slimmed = slim(model, widths)
    try:  # in training mode, as the trainer initialises (auxiliary heads get parameters)
      created = _created(slimmed, image_shape, train=True)
    except Exception:  # pylint: disable=broad-except  # the narrower model does not build
      return None
    if set(created) != set(have):
      return None
    pins = {}
    for path, shape in have.items():
      if created[path] == shape:
        continue
      layer, axis = kernel_layers.get(path, (None, None))
      if layer is None or layer in widths or len(shape) != len(created[path]):
        return None
      pins[layer] = shape[axis]
    if not pins:
      return widths
    widths.update(pins)
  return None


def divergence(
    model: Any,
    graph: channel_graph.ChannelGraph,
    widths: Mapping[str, int],
    sliced: Any,
    image_shape: Sequence[int],
) -> list[int] | None:
  """Indices of the original eval pass's ops where the slimmed model applies other primitives
  (code that branches on widths, e.g. `if x.shape[-1] == self.features: x + y`); [] when it
  applies the same ones, None when it does not trace at all."""
  slimmed = slim(model, widths)
  variables = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), sliced)
  images = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  try:
    with fast_conv.plain():
      closed = jax.make_jaxpr(lambda v, x: slimmed.apply(v, x, train=False))(variables, images)
  except Exception:  # pylint: disable=broad-except  # the narrower model does not build
    return None
  return _divergent_ops(graph.ops, channel_graph.primitives(closed.jaxpr))


def _divergent_ops(old: Sequence[str], new: Sequence[str], window: int = 12) -> list[int]:
  """Where `new` departs from `old`: at each mismatch, the index in `old`, then the two are
  resynchronised past a run of ops only one of them has (up to 64, matched on `window` ops);
  scanning stops where they do not resynchronise."""
  old, new = tuple(old), tuple(new)
  i = j = 0
  where = []
  while i < len(old) and j < len(new):
    if old[i] == new[j]:
      i, j = i + 1, j + 1
      continue
    where.append(i)
    for skip in range(1, 65):
      if old[i + skip : i + skip + window] == new[j : j + window]:
        i += skip
        break
      if old[i : i + window] == new[j + skip : j + skip + window]:
        j += skip
        break
    else:
      return where
  if i < len(old) or j < len(new):
    where.append(min(i, len(old) - 1))
  return where


def prune_groups(
    model: Any,
    graph: channel_graph.ChannelGraph,
    variables: Mapping[str, Any],
    chosen: Mapping[tuple[str, ...], list[int]],
    image_shape: Sequence[int],
) -> tuple[dict[str, int], dict[str, Any]]:
  """(widths, sliced variables) removing the `chosen` bundles' groups, less the bundles whose
  removal makes the slimmed model take another code path: those whose channels meet the ops
  where its eval pass diverges are dropped until none does; where no op can be blamed (the
  narrower model does not build), a bisection keeps, greedily, the bundles that work."""
  tried: dict[frozenset, tuple[Any, Any, list[int] | None]] = {}

  def attempt(keys) -> tuple[Any, Any, list[int] | None]:
    key = frozenset(keys)
    if key not in tried:
      removed = {g for k in keys for g in chosen[k]}
      sliced = slice_variables(graph, variables, removed)
      widths = settle_widths(model, graph, widths_after(graph, removed), sliced, image_shape)
      where = None if widths is None else divergence(model, graph, widths, sliced, image_shape)
      tried[key] = (widths, sliced, where)
    return tried[key]

  keys = list(chosen)
  while True:
    widths, sliced, where = attempt(keys)
    if where == []:
      return widths, sliced
    if where is None:
      break
    held = set().union(*(graph.op_groups[i] for i in where))
    blamed = [k for k in keys if held & set(chosen[k])]
    if not blamed:
      break
    keys = [k for k in keys if k not in blamed]
  accepted: list = []

  def visit(part: list) -> None:
    if not part:
      return
    if attempt(accepted + part)[2] == []:
      accepted.extend(part)
    elif len(part) > 1:
      visit(part[: len(part) // 2])
      visit(part[len(part) // 2 :])

  visit(keys)
  widths, sliced, where = attempt(accepted)
  if where != []:
    raise RuntimeError('filter pruning: the unpruned model diverges from its own trace')
  return widths, sliced


def prune_filters(
    model: Any,
    variables: Mapping[str, Any],
    image_shape: Sequence[int],
    fraction: float,
    saliency: str = 'l1',
    layers: str | None = None,
) -> tuple[dict[str, int], dict[str, Any]]:
  """(widths for `models.slimming.slim`, sliced params and batch_stats) with the `fraction` of
  least salient filters of each layer removed (module docstring), on (H, W, C) `image_shape`
  inputs. Channels the graph cannot prune safely, and bundles whose removal would change the
  model's code path, are kept.

  `layers`: a regular expression (re.fullmatch) on layer paths; only groups whose filters all
  lie in matching layers are pruned.
  """
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f'Filter pruning fraction {fraction!r} must be in [0, 1).')
  if saliency not in SALIENCIES:
    raise ConfigError(f'Unknown filter saliency {saliency!r}; choose one of {SALIENCIES}.')
  graph = channel_graph.analyse(model, variables, image_shape)
  if layers is not None:
    try:
      pattern = re.compile(layers)
    except re.error as e:
      raise ConfigError(f'layers={layers!r} is not a regular expression: {e}.') from e
    if not any(pattern.fullmatch(layer) for layer in graph.kernels):
      raise ConfigError(
          f'layers={layers!r} matches no conv or dense layer; they include '
          f'{", ".join(list(graph.kernels)[:6])}.'
      )
  scores = group_scores(graph, variables, saliency)
  chosen = bundles(graph, scores, fraction, layers)
  return prune_groups(model, graph, variables, chosen, image_shape)
