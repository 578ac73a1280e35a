"""Low-rank factors of trained kernels by truncated SVD, and per-layer ranks to factorise at.

The factors are those of models/low_rank.py (`factorize`). Each kernel is read as a matrix and
cut to its r largest singular values, W ≈ U_r S_r V_rᵀ, with √S_r on each side, which by
Eckart & Young (1936) is the closest rank-r matrix in Frobenius norm:

- dense [in, out]: `kernel_u` = U_r √S_r, `kernel_v` = √S_r V_rᵀ;
- conv 'spatial' (Jaderberg, Vedaldi & Zisserman 2014, scheme 2): the [kh, kw, in, out] kernel
  as the (kh·in) × (kw·out) matrix M[(i, c), (j, o)] = W[i, j, c, o], whose left factor is the
  kh×1 conv `kernel_v` and right factor the 1×kw conv `kernel_h`;
- conv 'channel' (Zhang et al. 2015): the (kh·kw·in) × out matrix, left factor the kh×kw conv
  `kernel_u`, right factor the 1×1 conv `kernel_v`.

Jaderberg et al. minimise the filter reconstruction error by conjugate gradients and, for
scheme 2, show this SVD as the closed form; they and Zhang et al. also fit to the layer's
outputs on data, which is not done here (fine-tune after factorising instead).
"""

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.errors import ConfigError, did_you_mean
from models.low_rank import check_conv_mode, full_rank


def _params_tree(variables: Mapping[str, Any]) -> dict[str, Any]:
  return variables.get('params', variables)


def kernels(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{layer path: kernel} of every dense ([in, out]) and 2-D conv ([kh, kw, in, out]) layer."""
  found = {}

  def walk(node: Mapping[str, Any], prefix: str) -> None:
    for name, child in node.items():
      if isinstance(child, Mapping):
        walk(child, f'{prefix}{name}/')
      elif name == 'kernel' and np.ndim(child) in (2, 4):
        found[prefix.rstrip('/')] = np.asarray(child)

  walk(_params_tree(variables), '')
  return found


def factor_matrix(kernel: np.ndarray, conv: str = 'spatial') -> np.ndarray:
  """The matrix whose truncated SVD gives the factors (module docstring), in float64."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim == 2:
    return kernel
  kh, kw, c_in, c_out = kernel.shape
  if conv == 'spatial':  # rows (i, c), columns (j, o)
    return kernel.transpose(0, 2, 1, 3).reshape(kh * c_in, kw * c_out)
  return kernel.reshape(kh * kw * c_in, c_out)


def singular_values(kernel: np.ndarray, conv: str = 'spatial') -> np.ndarray:
  """The singular values of `factor_matrix(kernel, conv)`, largest first."""
  return np.linalg.svd(factor_matrix(kernel, conv), compute_uv=False)


def factors(kernel: np.ndarray, rank: int, conv: str = 'spatial') -> dict[str, np.ndarray]:
  """The rank-`rank` factors of `kernel` by truncated SVD, named and shaped as `factorize`'s
  params, in the kernel's dtype."""
  kernel = np.asarray(kernel)
  u, s, vt = np.linalg.svd(factor_matrix(kernel, conv), full_matrices=False)
  root = np.sqrt(s[:rank])
  left, right = u[:, :rank] * root, root[:, None] * vt[:rank]  # [rows, r], [r, columns]
  if kernel.ndim == 2:
    named = {'kernel_u': left, 'kernel_v': right}
  elif conv == 'spatial':
    kh, kw, c_in, c_out = kernel.shape
    named = {
        'kernel_v': left.reshape(kh, 1, c_in, rank),
        'kernel_h': right.reshape(rank, kw, c_out).transpose(1, 0, 2)[None],
    }
  else:
    kh, kw, c_in, c_out = kernel.shape
    named = {
        'kernel_u': left.reshape(kh, kw, c_in, rank),
        'kernel_v': right.reshape(1, 1, rank, c_out),
    }
  return {name: value.astype(kernel.dtype) for name, value in named.items()}


def _copy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {name: _copy(child) for name, child in tree.items()}
  return tree


def low_rank_variables(
    variables: Mapping[str, Any], ranks: Mapping[str, int], conv: str = 'spatial'
) -> dict[str, Any]:
  """`variables` for `factorize(model, ranks, conv=conv)`: each named layer's kernel replaced by
  its truncated-SVD factors; every other variable (biases, BatchNorm state) copied."""
  check_conv_mode(conv)
  available = kernels(variables)
  result = _copy(variables)
  params = _params_tree(result)
  for path, rank in ranks.items():
    if path not in available:
      raise ConfigError(
          f'low_rank names {path!r}, which has no dense or conv kernel.'
          f'{did_you_mean(path, available)} Layers: {", ".join(available)}.'
      )
    kernel = available[path]
    full = full_rank(kernel.shape, conv)
    if not 1 <= rank <= full:
      raise ConfigError(f'low_rank rank {rank} for {path!r}: choose 1 to {full}.')
    node = params
    for name in path.split('/'):
      node = node[name]
    del node['kernel']
    node.update(factors(kernel, rank, conv))
  return result


def _select(variables: Mapping[str, Any], layers: str) -> dict[str, np.ndarray]:
  selected = {p: k for p, k in kernels(variables).items() if re.fullmatch(layers, p)}
  if not selected:
    raise ConfigError(
        f'No dense or conv layer matches {layers!r} (the whole path must match); layers: '
        f'{", ".join(kernels(variables))}.'
    )
  return selected


def ranks_for_energy(
    variables: Mapping[str, Any], energy: float = 0.9, layers: str = '.*', *, conv: str = 'spatial'
) -> dict[str, int]:
  """{path: the smallest rank keeping `energy` of the kernel's squared singular values} for each
  dense and conv layer whose path fully matches the regex `layers`."""
  check_conv_mode(conv)
  if not 0 < energy <= 1:
    raise ConfigError(f'energy={energy!r}: give the fraction of Σσ² to keep, in (0, 1].')
  ranks = {}
  for path, kernel in _select(variables, layers).items():
    squares = singular_values(kernel, conv) ** 2
    kept = np.cumsum(squares) / squares.sum()
    # The smallest r with kept[r - 1] ≥ energy (a tolerance for energy = 1 in float).
    ranks[path] = int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(squares)))
  return ranks


def ranks_for_fraction(
    variables: Mapping[str, Any], fraction: float, layers: str = '.*', *, conv: str = 'spatial'
) -> dict[str, int]:
  """{path: max(1, round(fraction · full rank))} (half up) for each dense and conv layer whose
  path fully matches the regex `layers`."""
  check_conv_mode(conv)
  if not 0 < fraction <= 1:
    raise ConfigError(f'fraction={fraction!r}: give the fraction of the full rank, in (0, 1].')
  return {
      path: max(1, int(np.floor(fraction * full_rank(kernel.shape, conv) + 0.5)))
      for path, kernel in _select(variables, layers).items()
  }
