"""Storage accounting: Deep Compression's relative indices, Huffman coding, bytes per tensor."""

import heapq

import numpy as np
import pytest

from common.errors import ConfigError
from compression import encoding


def test_huffman_on_a_hand_example():
  # merges 1+1, 2+2, 4+5: lengths 1, 2, 3, 3 and 5·1 + 2·2 + 1·3 + 1·3 = 15 bits
  np.testing.assert_array_equal(encoding.huffman_lengths([5, 2, 1, 1]), [1, 2, 3, 3])
  assert encoding.huffman_bits([5, 2, 1, 1]) == 15
  np.testing.assert_array_equal(encoding.huffman_lengths([0, 7, 0]), [0, 1, 0])
  np.testing.assert_array_equal(encoding.huffman_lengths([0, 3, 0, 3]), [0, 1, 0, 1])


def _merge_cost(counts):
  """An optimal code's total length is the sum of the weights of Huffman's merged nodes."""
  heap = [c for c in counts if c > 0]
  heapq.heapify(heap)
  cost = 0
  while len(heap) > 1:
    merged = heapq.heappop(heap) + heapq.heappop(heap)
    cost += merged
    heapq.heappush(heap, merged)
  return cost


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_huffman_is_optimal_and_within_one_bit_of_the_entropy(seed):
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.full(40, 0.3))
  counts = np.bincount(rng.choice(40, 20_000, p=p), minlength=40)
  lengths = encoding.huffman_lengths(counts)
  used = counts > 0
  assert np.sum(2.0 ** -lengths[used]) == pytest.approx(1.0)  # a complete prefix code
  bits, n = encoding.huffman_bits(counts), counts.sum()
  assert bits == _merge_cost(counts)
  q = counts[used] / n
  entropy = -np.sum(q * np.log2(q)) * n
  assert entropy <= bits < entropy + n


def _gappy():
  """40 weights, non-zero at 2, 3, 20 and 39: gaps 3, 1, 17, 19."""
  x = np.zeros(40, np.float32)
  x[[2, 3, 20, 39]] = [0.5, -0.25, 0.5, 0.75]
  return x


def test_relative_indices_insert_filler_zeros_in_long_gaps():
  x = _gappy()
  diffs, stored = encoding.relative_indices(x, 3)  # at most 8 positions per step
  np.testing.assert_array_equal(diffs, [3, 1, 8, 8, 1, 8, 8, 3])  # 17 = 8+8+1, 19 = 8+8+3
  np.testing.assert_array_equal(stored, [0.5, -0.25, 0, 0, 0.5, 0, 0, 0.75])
  decoded = np.zeros_like(x)
  decoded[np.cumsum(diffs) - 1] = stored
  np.testing.assert_array_equal(decoded, x)
  diffs, stored = encoding.relative_indices(x, 5)  # 32 ≥ every gap: no fillers
  np.testing.assert_array_equal(diffs, [3, 1, 17, 19])
  x = np.zeros(17, np.float32)
  x[[7, 15]] = 1.0  # gaps of exactly 8 and 8 fit 3 bits
  np.testing.assert_array_equal(encoding.relative_indices(x, 3)[0], [8, 8])


def test_dense_bytes():
  assert encoding.dense_bytes(1000, 8) == 1000
  assert encoding.dense_bytes(1001, 5) == 626  # ⌈5005 / 8⌉
  assert encoding.dense_bytes(3 * 3 * 16 * 32, 4, scales=32) == 2304 + 128
  assert encoding.float_bytes(431_080) == 1_724_320
  assert encoding.product_quantization_bytes(800, 500, 4, 16) == 4 * 16 * 800 + 4 * 500 * 4 // 8


def test_a_dense_8_bit_tensor_and_a_float_bias():
  kernel = np.arange(256, dtype=np.float32).reshape(4, 4, 4, 4) / 7  # 256 distinct values
  result = encoding.deep_compression_bytes(
      {'conv': {'kernel': kernel, 'bias': np.ones(4, np.float32)}},
      value_bits=lambda path, a: 8 if path.endswith('kernel') else None,
      index_bits=None,
  )
  row = result['tensors']['conv/kernel']
  assert row['sparse_bytes'] == 256 + 4 * 256  # one byte a weight, a float32 codebook
  assert row['huffman_bytes'] == 256 + 4 * 256  # uniform: Huffman gives 8 bits too
  assert (row['value_bits'], row['index_bits']) == (8, 0)
  assert result['tensors']['conv/bias']['huffman_bytes'] == 16
  assert result['total']['float_bytes'] == 4 * 260
  assert result['total']['huffman_bytes'] == 256 + 4 * 256 + 16


def test_sparse_shared_tensor_bytes_by_hand():
  params = {'fc': {'kernel': _gappy().reshape(5, 8), 'bias': np.zeros(8, np.float32)}}
  bits = lambda path, a: 3 if path.endswith('kernel') else None
  values = lambda path, a: 2 if path.endswith('kernel') else None
  row = encoding.deep_compression_bytes(params, values, bits)['tensors']['fc/kernel']
  # 8 entries (4 fillers) × (2 value + 3 index bits) = 40 bits; codebook {0, -0.25, 0.5, 0.75}
  assert row['entries'] == 8 and row['codebook'] == 4 and row['nonzero'] == 4
  assert row['sparse_bytes'] == 5 + 16
  # values 0×4, 0.5×2, −0.25, 0.75 → 1,2,3,3 bits = 14; diffs 8×4, 3×2, 1×2 → 1,2,2 bits = 12
  assert row['huffman_bytes'] == 2 + 2 + 16
  pruned = encoding.deep_compression_bytes(params, None, bits)['tensors']['fc/kernel']
  assert pruned['sparse_bytes'] == 8 * (32 + 3) // 8 and pruned['value_bits'] == 32
  assert pruned['huffman_bytes'] == 8 * 4 + 2


def test_too_many_distinct_values_for_the_bits_raise():
  kernel = np.linspace(0.1, 1, 20, dtype=np.float32).reshape(4, 5)
  with pytest.raises(ConfigError, match='fc/kernel holds 20 distinct values, more than 2\\^4'):
    encoding.deep_compression_bytes({'fc': {'kernel': kernel}}, lambda p, a: 4, None)
