"""Weight sharing by k-means (Deep Compression) and product quantization of dense kernels.

Han, Mao & Dally (2016), "Deep Compression", §3: the weights of a layer are clustered by 1-D
k-means into 2^bits shared values, and the layer stores a bits-wide index per weight and the
float32 codebook. Gong et al. (2014), "Compressing deep convolutional networks using vector
quantization": product quantization splits each weight vector into sub-vectors and clusters each
sub-space on its own. Everything here is numpy on host arrays, deterministic given the seed.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from sklearn import cluster

from common.errors import ConfigError
from train_lib import optim

INITS = ('linear', 'density', 'random')

BitsFor = Callable[[str, np.ndarray], int | None]  # ('layer/param', array) → bits, None: float


def _nearest(centroids: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Index of the nearest of the sorted `centroids` for each value (ties to the lower one)."""
  return np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)


def _initial_centroids(values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
  """Han et al. 2016 §3.2's three initialisations; 'linear' spaces k values over [min, max]."""
  if init == 'linear':
    return np.linspace(values.min(), values.max(), k)
  if init == 'density':  # equally spaced on the values' CDF
    return np.quantile(values, np.linspace(0.0, 1.0, k))
  return np.sort(np.random.default_rng(seed).choice(values, k, replace=False))  # Forgy


def kmeans_share(
    weights: np.ndarray,
    bits: int,
    *,
    init: str = 'linear',
    iterations: int = 30,
    skip_zeros: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """1-D k-means weight sharing (Han, Mao & Dally 2016, §3.1–3.2; linear init by default).

  Returns (codebook: sorted, at most 2^bits distinct values; indices: int32, weights' shape;
  reconstructed: codebook[indices], weights' dtype). Lloyd iterations stop early when the
  centroids no longer move; empty clusters are dropped. With `skip_zeros` (pruned weights) the
  zeros are not clustered and stay exactly zero: zero takes one of the 2^bits codes (Deep
  Compression's filler zeros need it too), leaving 2^bits − 1 for the other weights.
  """
  if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= 16):
    raise ConfigError(f'Weight sharing needs 1 to 16 bits, not {bits!r}.')
  if init not in INITS:
    raise ConfigError(f'Unknown k-means init {init!r}; choose one of {", ".join(INITS)}.')
  weights = np.asarray(weights)
  flat = weights.ravel().astype(np.float64)
  zeros = skip_zeros and not np.all(flat != 0)
  values = flat[flat != 0] if skip_zeros else flat
  k = 2**bits - int(zeros)
  centroids = np.unique(values)
  if centroids.size > k:
    centroids = _initial_centroids(values, k, init, seed)
    for _ in range(iterations):
      assigned = _nearest(centroids, values)
      counts = np.bincount(assigned, minlength=k)
      sums = np.bincount(assigned, weights=values, minlength=k)
      moved = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), centroids))
      if np.array_equal(moved, centroids):
        break
      centroids = moved
  # The final assignment is to the centroids as stored (weights' dtype), so every weight maps
  # to its nearest stored value; centroids no weight chose are dropped.
  stored = np.unique(centroids.astype(weights.dtype)).astype(np.float64)
  shared = stored[_nearest(stored, values)] if values.size else values
  codebook = np.unique(np.concatenate([shared, [0.0] if zeros else []])).astype(weights.dtype)
  reconstructed = np.zeros(flat.shape, weights.dtype)
  if skip_zeros:
    reconstructed[flat != 0] = shared
  else:
    reconstructed[:] = shared
  indices = np.searchsorted(codebook, reconstructed).astype(np.int32)
  return codebook, indices.reshape(weights.shape), reconstructed.reshape(weights.shape)


def share_weights(params: Any, bits_for: BitsFor, **kmeans) -> tuple[Any, dict[str, dict]]:
  """k-means weight sharing of every parameter for which `bits_for(path, array)` gives bits.

  E.g. Deep Compression's AlexNet: 8 bits for conv kernels, 5 for dense ones, biases float.
  Returns the params (numpy, shared values in place, the others as given) and per shared tensor
  {'bits', 'codebook_size', 'nonzero', 'codebook'}; `kmeans` goes to `kmeans_share`.
  """
  info = {}

  def share(path, leaf):
    name, array = optim.path_name(path), np.asarray(jax.device_get(leaf))
    bits = bits_for(name, array)
    if bits is None:
      return leaf
    codebook, _, reconstructed = kmeans_share(array, bits, **kmeans)
    info[name] = {
        'bits': int(bits),
        'codebook_size': int(codebook.size),
        'nonzero': int(np.count_nonzero(reconstructed)),
        'codebook': codebook,
    }
    return reconstructed

  return jax.tree_util.tree_map_with_path(share, params), info


def product_quantize(
    kernel: np.ndarray, subvectors: int, centroids: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Product quantization of a Dense kernel [in, out] (Gong et al. 2014, §3.3).

  Each output unit's weight vector (a column here, a row of Gong's W) is split along the input
  into `subvectors` pieces of in/subvectors weights; in each sub-space the `out` pieces are
  clustered by k-means (sklearn, k-means++ seeded by `seed`) into `centroids` codewords. Returns
  (codebooks [subvectors, centroids, in/subvectors], codes [subvectors, out] int32,
  reconstructed [in, out]: codebooks[i, codes[i, j]] in rows i·d … (i+1)·d − 1 of column j).
  """
  kernel = np.asarray(kernel)
  if kernel.ndim != 2:
    raise ConfigError(f'Product quantization takes a Dense kernel [in, out], not {kernel.shape}.')
  fan_in, fan_out = kernel.shape
  if subvectors < 1 or fan_in % subvectors:
    raise ConfigError(
        f'{subvectors} sub-vectors do not divide the kernel input size {fan_in}; pick a divisor.'
    )
  if not 1 <= centroids <= fan_out:
    raise ConfigError(
        f'{centroids} centroids per sub-space need 1 to {fan_out} (the kernel has {fan_out} '
        'output units to cluster).'
    )
  d = fan_in // subvectors
  pieces = kernel.reshape(subvectors, d, fan_out).transpose(0, 2, 1)  # [m, out, d]
  codebooks = np.zeros((subvectors, centroids, d), kernel.dtype)
  codes = np.zeros((subvectors, fan_out), np.int32)
  for i, piece in enumerate(pieces):
    km = cluster.KMeans(n_clusters=centroids, n_init=1, random_state=seed + i)
    codes[i] = km.fit_predict(piece.astype(np.float64))
    codebooks[i] = km.cluster_centers_.astype(kernel.dtype)
  reconstructed = np.take_along_axis(codebooks, codes[:, :, None], axis=1)  # [m, out, d]
  return codebooks, codes, reconstructed.transpose(0, 2, 1).reshape(fan_in, fan_out)
