"""Bytes on disk of a parameter tree at the bit widths and encoding used.

Han, Mao & Dally (2016), "Deep Compression": a pruned layer is stored sparse (§2), each kept
weight as its position's difference from the previous one in `index_bits` bits, with a filler
zero wherever a gap exceeds 2^index_bits; shared weights store a codebook index per entry and a
float32 codebook (§3); finally both streams are Huffman coded (§4). We count the Huffman streams
at their optimal prefix-code length and, like the paper, not the code tables; positions run
over the tensor flattened in its stored (flax) order, and there are no row pointers.
"""

import heapq
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from compression.weight_sharing import BitsFor
from train_lib import optim


def paper_bits(path: str, array: np.ndarray) -> int | None:
  """Deep Compression's widths (values and relative indices): 8 bits for conv kernels, 5 for
  dense kernels; None (float32, dense) for biases and everything else."""
  if not path.endswith('kernel'):
    return None
  return 8 if np.ndim(array) >= 3 else 5 if np.ndim(array) == 2 else None


def float_bytes(size: int) -> int:
  """float32, dense."""
  return 4 * int(size)


def stored_bytes(tree: Any) -> int:
  """Bytes of every array in `tree` as stored: floats at their width, integers at their bit width
  (int4 packed two per byte, as serialised; JAX on CPU keeps one per byte in memory). For a
  post-training-quantized model: its integer kernels, their float32 scales, and the float
  biases, activation scales and BatchNorm variables."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    dtype = np.dtype(leaf.dtype)
    bits = jnp.iinfo(dtype).bits if jnp.issubdtype(dtype, jnp.integer) else 8 * dtype.itemsize
    total += math.ceil(math.prod(np.shape(leaf)) * bits / 8)
  return total


def dense_bytes(size: int, bits: int, scales: int = 0) -> int:
  """`size` values at `bits` each, plus `scales` float32 scales (e.g. one per output channel)."""
  return math.ceil(int(size) * bits / 8) + 4 * int(scales)


def product_quantization_bytes(fan_in: int, fan_out: int, subvectors: int, centroids: int) -> int:
  """A product-quantized Dense kernel (weight_sharing.product_quantize): float32 codebooks
  [subvectors, centroids, fan_in/subvectors] and one ⌈log2 centroids⌉-bit code per sub-vector."""
  code_bits = max(math.ceil(math.log2(centroids)), 1)
  return 4 * centroids * fan_in + math.ceil(subvectors * fan_out * code_bits / 8)


def relative_indices(values: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
  """Deep Compression's sparse entries of `values` (flattened): (diffs, stored values).

  diffs[j] ∈ [1, 2^index_bits] is entry j's position minus the previous entry's (the first
  counts from position −1) and is stored as diffs − 1; a gap wider than 2^index_bits is bridged
  by filler entries of value 0 every 2^index_bits positions (Han et al. 2016, fig. 2).
  """
  flat = np.asarray(values).ravel()
  span = 2**index_bits
  positions = np.flatnonzero(flat)
  gaps = np.diff(positions, prepend=-1)
  fillers = (gaps - 1) // span
  last = np.cumsum(fillers + 1) - 1  # each non-zero entry follows its fillers
  diffs = np.full(int(last[-1]) + 1 if last.size else 0, span, np.int64)
  diffs[last] = gaps - fillers * span
  stored = np.zeros(diffs.size, flat.dtype)
  stored[last] = flat[positions]
  return diffs, stored


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
  """Code length of each symbol in an optimal prefix code (Huffman 1952) for `counts`.

  Symbols that never occur get 0; a lone symbol gets 1 bit.
  """
  counts = np.asarray(counts, np.int64).ravel()
  lengths = np.zeros(counts.size, np.int64)
  used = [int(s) for s in np.flatnonzero(counts > 0)]
  if len(used) == 1:
    lengths[used] = 1
  if len(used) <= 1:
    return lengths
  heap = [(int(counts[s]), s) for s in used]  # node ids: symbols, then merged nodes
  heapq.heapify(heap)
  parent = {}
  node = counts.size
  while len(heap) > 1:
    (c1, a), (c2, b) = heapq.heappop(heap), heapq.heappop(heap)
    parent[a] = parent[b] = node
    heapq.heappush(heap, (c1 + c2, node))
    node += 1
  depth = {node - 1: 0}  # the root; a merged node's id exceeds its children's
  for child in sorted(parent, reverse=True):
    depth[child] = depth[parent[child]] + 1
  lengths[used] = [depth[s] for s in used]
  return lengths


def huffman_bits(counts: np.ndarray) -> int:
  """Total bits of the symbols with these counts under an optimal prefix code."""
  counts = np.asarray(counts, np.int64).ravel()
  return int(np.sum(counts * huffman_lengths(counts)))


def _symbol_counts(symbols: np.ndarray) -> np.ndarray:
  return np.unique(symbols, return_counts=True)[1]


def _tensor(path: str, array: np.ndarray, value_bits: int | None, index_bits: int | None):
  flat = array.ravel()
  row = {
      'params': int(flat.size),
      'nonzero': int(np.count_nonzero(flat)),
      'float_bytes': float_bytes(flat.size),
      'index_bits': index_bits or 0,  # 0: dense, no indices
      'value_bits': value_bits or 32,  # 32: float32 values, no codebook
  }
  if index_bits is not None and not 1 <= index_bits <= 32:
    raise ConfigError(f'{path}: relative indices need 1 to 32 bits, not {index_bits}.')
  diffs, stored = relative_indices(flat, index_bits) if index_bits else (None, flat)
  codebook = 0
  if value_bits:
    codebook = np.unique(stored).size
    if codebook > 2**value_bits:
      raise ConfigError(
          f'{path} holds {codebook} distinct values, more than 2^{value_bits}: share its '
          'weights first (compression.weight_sharing.share_weights) or store it as float32.'
      )
    fixed_values = stored.size * value_bits
    huffman_values = huffman_bits(_symbol_counts(stored))
  else:
    fixed_values = huffman_values = stored.size * 32
  fixed_index = diffs.size * index_bits if index_bits else 0
  huffman_index = huffman_bits(np.bincount(diffs)) if index_bits else 0
  row.update(
      entries=int(stored.size),  # non-zeros plus filler zeros (sparse), or all weights (dense)
      codebook=int(codebook),
      sparse_bytes=math.ceil((fixed_values + fixed_index) / 8) + 4 * codebook,
      huffman_bytes=math.ceil(huffman_values / 8) + math.ceil(huffman_index / 8) + 4 * codebook,
  )
  return row


def deep_compression_bytes(
    params: Any, value_bits: BitsFor | None = paper_bits, index_bits: BitsFor | None = paper_bits
) -> dict[str, dict]:
  """Per-tensor and total bytes of `params` after pruning and weight sharing (Han et al. 2016).

  `value_bits(path, array)`: the codebook index width of a shared tensor (None: float32 values;
  the tensor must hold at most 2^bits distinct values, zero included where it is stored).
  `index_bits(path, array)`: the relative-index width of a sparse tensor (None: stored dense).
  Tensors with neither (biases by default) count at float32. Returns {'tensors': {path: {'params',
  'nonzero', 'float_bytes', 'sparse_bytes' (fixed widths), 'huffman_bytes', 'index_bits' (0:
  dense), 'value_bits' (32: float), 'entries', 'codebook'}}, 'total': the sums and ratios}.
  """
  tensors = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name, array = optim.path_name(path), np.asarray(jax.device_get(leaf))
    vb = value_bits(name, array) if value_bits else None
    ib = index_bits(name, array) if index_bits else None
    tensors[name] = _tensor(name, array, vb, ib)
  keys = ('params', 'nonzero', 'float_bytes', 'sparse_bytes', 'huffman_bytes')
  total = {k: sum(t[k] for t in tensors.values()) for k in keys}
  total['sparse_ratio'] = total['float_bytes'] / max(total['sparse_bytes'], 1)
  total['huffman_ratio'] = total['float_bytes'] / max(total['huffman_bytes'], 1)
  return {'tensors': tensors, 'total': total}
