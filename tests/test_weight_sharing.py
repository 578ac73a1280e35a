"""k-means weight sharing and product quantization."""

import numpy as np
import pytest

from common.errors import ConfigError
from compression import weight_sharing


def _pruned(shape=(200, 150), keep=0.3, seed=0):
  w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  w.ravel()[np.argsort(np.abs(w).ravel())[: int((1 - keep) * w.size)]] = 0
  return w


def test_every_nonzero_weight_maps_to_its_nearest_centroid_and_zeros_stay():
  w = _pruned()
  codebook, indices, reconstructed = weight_sharing.kmeans_share(w, 4, iterations=1000)
  assert codebook.size <= 16 and np.all(np.diff(codebook) > 0)
  np.testing.assert_array_equal(reconstructed, codebook[indices])
  np.testing.assert_array_equal(reconstructed == 0, w == 0)
  centroids = codebook[codebook != 0]
  nonzero = w[w != 0]
  distance = np.abs(nonzero[:, None].astype(np.float64) - centroids[None, :])
  nearest = centroids[np.argmin(distance, axis=1)]
  np.testing.assert_array_equal(reconstructed[w != 0], nearest)
  for c in centroids:  # converged: each centroid is (to float32) the mean of its members
    assert c == pytest.approx(nonzero[reconstructed[w != 0] == c].mean(dtype=np.float64), 1e-6)


@pytest.mark.parametrize('init', weight_sharing.INITS)
def test_error_falls_with_bits(init):
  w = _pruned(seed=1)
  errors = []
  for bits in (2, 3, 5, 8):
    codebook, _, reconstructed = weight_sharing.kmeans_share(w, bits, init=init)
    assert codebook.size <= 2**bits
    errors.append(np.mean((reconstructed - w) ** 2))
  assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_few_distinct_values_are_kept_exactly_and_zeros_can_be_clustered():
  w = np.asarray([0.0, 0.5, -1.0, 0.5, 2.0, 0.0], np.float32)
  codebook, indices, reconstructed = weight_sharing.kmeans_share(w, 2)
  np.testing.assert_array_equal(codebook, [-1.0, 0.0, 0.5, 2.0])
  np.testing.assert_array_equal(reconstructed, w)
  w = np.asarray([0.0, 0.5, 0.5, 2.0, 2.5, 0.0], np.float32)  # 1 bit, linear init at 0, 2.5
  _, _, together = weight_sharing.kmeans_share(w, 1, skip_zeros=False)
  np.testing.assert_array_equal(together, [0.25, 0.25, 0.25, 2.25, 2.25, 0.25])


def test_share_weights_leaves_the_tensors_bits_for_skips():
  params = {
      'conv': {'kernel': _pruned((3, 3, 8, 16)), 'bias': np.ones(16, np.float32) / 3},
      'fc': {'kernel': _pruned((64, 10), seed=2)},
  }
  bits_for = lambda path, a: None if path.endswith('bias') else 8 if a.ndim == 4 else 2
  shared, info = weight_sharing.share_weights(params, bits_for)
  assert set(info) == {'conv/kernel', 'fc/kernel'}
  assert info['fc/kernel']['bits'] == 2 and info['fc/kernel']['codebook_size'] <= 4
  assert len(np.unique(shared['fc']['kernel'])) == info['fc/kernel']['codebook_size']
  assert info['conv/kernel']['nonzero'] == np.count_nonzero(params['conv']['kernel'])
  assert shared['conv']['bias'] is params['conv']['bias']


def test_bad_bits_and_init_raise():
  with pytest.raises(ConfigError, match='1 to 16 bits'):
    weight_sharing.kmeans_share(np.ones(4), 0)
  with pytest.raises(ConfigError, match="Unknown k-means init 'kmeans'"):
    weight_sharing.kmeans_share(np.ones(4), 2, init='kmeans')


def test_product_quantization_is_a_codebook_lookup_and_improves_with_centroids():
  kernel = np.random.default_rng(3).normal(size=(32, 64)).astype(np.float32)
  errors = []
  for k in (2, 8, 32, 64):
    codebooks, codes, reconstructed = weight_sharing.product_quantize(kernel, 4, k, seed=0)
    assert codebooks.shape == (4, k, 8) and codes.shape == (4, 64)
    for i in range(4):  # rows i·8 … i·8 + 7 of column j are codeword codes[i, j] of sub-space i
      np.testing.assert_array_equal(reconstructed[i * 8 : (i + 1) * 8].T, codebooks[i][codes[i]])
    errors.append(np.mean((reconstructed - kernel) ** 2))
  assert all(a > b for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] == pytest.approx(0.0, abs=1e-10)  # one codeword per column piece
  with pytest.raises(ConfigError, match='do not divide'):
    weight_sharing.product_quantize(kernel, 5, 4)
  with pytest.raises(ConfigError, match='centroids per sub-space need 1 to 64'):
    weight_sharing.product_quantize(kernel, 4, 65)
