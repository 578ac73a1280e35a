"""Dataset statistics (channel mean/std, RGB covariance and its eigenvectors, per-pixel mean, ZCA):
computing them in one streaming pass, storing them, and finding them by dataset name or path.

`python main.py --mode=dataset_stats` writes `dataset_stats.npz` (every array) and
`dataset_stats.json` (the small numbers, for people) into the workdir; ops that consume
statistics (`normalize`, `subtract_pixel_mean`, `zca`, `pca_lighting`) take that path or a
dataset name whose numbers `input_pipeline.datasets` records.
"""

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from common import files
from common.errors import ConfigError
from input_pipeline import datasets

NPZ_NAME = 'dataset_stats.npz'
JSON_NAME = 'dataset_stats.json'
ZCA_EPSILON_SCALE = 0.1  # the default ε, relative to the mean pixel variance (see `compute`)
_ROWS_PER_UPDATE = 512  # images gathered before one D×D covariance update (rank-1 updates crawl)
_HOW_TO_COMPUTE = (
    'run python main.py --mode=dataset_stats --config=... --workdir=... and pass '
    f'the path to {NPZ_NAME}'
)


@dataclasses.dataclass(frozen=True, eq=False)  # arrays have no single truth value
class DatasetStats:
  """Statistics of one split's images as a pipeline sees them (pixels usually in [0, 1]).

  mean, std: [C], over all pixels (std is the population std, the convention of the CIFAR
    numbers 0.2470/0.2435/0.2616). cov: [C, C] covariance of the pixels' channel vectors.
  eigval: [C] eigenvalues of `cov`, descending; eigvec: [C, C], the eigenvectors as columns,
    each signed so that its largest-magnitude entry is positive.
  pixel_mean: [H, W, C] mean image; None when the images differ in shape.
  zca: [D, D] (D = H·W·C) ZCA whitening matrix, applied as (x - pixel_mean).ravel() @ zca;
    None when shapes differ or D is too large (`zca_note` says which).
  Statistics recorded only by name (`load('imagenet')`) have None for what was not recorded.
  """

  mean: np.ndarray
  std: np.ndarray
  cov: np.ndarray | None = None
  eigval: np.ndarray | None = None
  eigvec: np.ndarray | None = None
  pixel_mean: np.ndarray | None = None
  zca: np.ndarray | None = None
  zca_epsilon: float | None = None
  zca_note: str = ''
  num_examples: int | None = None  # None: recorded numbers of unknown provenance
  source: dict[str, Any] = dataclasses.field(default_factory=dict)  # dataset, split, ops, ...

  @property
  def image_shape(self) -> tuple[int, ...] | None:
    return None if self.pixel_mean is None else tuple(self.pixel_mean.shape)


def eig_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix, each column
  signed so that its largest-magnitude entry is positive (eigh's signs are arbitrary)."""
  eigval, eigvec = np.linalg.eigh(cov)
  eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
  signs = np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), np.arange(eigvec.shape[1])])
  return eigval, eigvec * np.where(signs == 0, 1.0, signs)


def zca_matrix(eigval: np.ndarray, eigvec: np.ndarray, epsilon: float) -> np.ndarray:
  """W = U diag(1/sqrt(λ + ε)) Uᵀ: whitens the components with variance λ ≫ ε, damps the rest."""
  if not epsilon > 0:
    raise ConfigError(
        f'The ZCA epsilon must be positive, got {epsilon}: with ε = 0 the '
        'directions without variance (pixels always equal) blow up.'
    )
  scale = 1.0 / np.sqrt(np.maximum(eigval, 0.0) + epsilon)
  w = (eigvec * scale) @ eigvec.T
  return (w + w.T) / 2


def rezca(zca: np.ndarray, old_epsilon: float, new_epsilon: float) -> np.ndarray:
  """The ZCA matrix for `new_epsilon` from the one stored for `old_epsilon`.

  W's eigenvectors are the covariance's and its eigenvalues 1/sqrt(λ + ε), so one
  eigendecomposition of W recovers λ: the file need not hold the covariance as well.
  """
  w_eig, u = np.linalg.eigh(zca.astype(np.float64))
  eigval = 1.0 / np.maximum(w_eig, 1e-30) ** 2 - old_epsilon
  return zca_matrix(eigval, u, new_epsilon).astype(np.float32)


class _Accumulator:
  """Float64 running sums, shifted by the first batch's means so that sums of squares do not
  cancel catastrophically."""

  def __init__(self, first: np.ndarray, zca_max_dims: int):
    self.num_examples = 0
    self.shape = first.shape[1:]
    channels = first.shape[-1]
    self.channel_shift = first.reshape(-1, channels).mean(0, dtype=np.float64)
    self.pixels = 0
    self.channel_sum = np.zeros(channels)
    self.channel_outer = np.zeros((channels, channels))
    self.pixel_shift = first.mean(0, dtype=np.float64)
    self.pixel_sum = np.zeros(self.shape)
    dims = int(np.prod(self.shape))
    self.zca_note = ''
    if dims > zca_max_dims:
      self.zca_note = (
          f'not computed: D = H*W*C = {dims} > zca_max_dims = {zca_max_dims} '
          f'(its D x D matrices would take {dims * dims * 8 / 2**30:.1f} GiB each)'
      )
    self.pixel_outer = None if self.zca_note else np.zeros((dims, dims))
    self.pending: list[np.ndarray] = []

  def add(self, batch: np.ndarray) -> None:
    self.num_examples += batch.shape[0]
    flat = batch.reshape(-1, batch.shape[-1]).astype(np.float64) - self.channel_shift
    self.pixels += flat.shape[0]
    self.channel_sum += flat.sum(0)
    self.channel_outer += flat.T @ flat
    if self.pixel_sum is None:
      return
    if batch.shape[1:] != self.shape:
      self.pixel_sum = self.pixel_outer = self.pending = None
      self.zca_note = (
          f'not computed: image shapes differ ({self.shape} and {batch.shape[1:]}); '
          'crop or resize to one shape before the statistics op for a per-pixel mean '
          'and ZCA'
      )
      return
    centred = batch.astype(np.float64) - self.pixel_shift
    self.pixel_sum += centred.sum(0)
    if self.pixel_outer is not None:
      self.pending.append(centred.reshape(batch.shape[0], -1))
      if sum(len(p) for p in self.pending) >= _ROWS_PER_UPDATE:
        self._flush()

  def _flush(self) -> None:
    if self.pending:
      rows = np.concatenate(self.pending)
      self.pixel_outer += rows.T @ rows
      self.pending = []

  def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(channel mean, channel cov, pixel mean, pixel cov); the per-pixel ones may be None."""
    d = self.channel_sum / self.pixels
    channel_cov = self.channel_outer / self.pixels - np.outer(d, d)
    if self.pixel_sum is None:
      return self.channel_shift + d, channel_cov, None, None
    p = self.pixel_sum / self.num_examples
    pixel_cov = None
    if self.pixel_outer is not None:
      self._flush()
      p_flat = p.ravel()
      pixel_cov = self.pixel_outer / self.num_examples - np.outer(p_flat, p_flat)
    return self.channel_shift + d, channel_cov, self.pixel_shift + p, pixel_cov


def compute(
    batches: Iterable[np.ndarray],
    *,
    zca_epsilon: float | None = None,
    zca_max_dims: int = 4096,
    source: dict[str, Any] | None = None,
) -> DatasetStats:
  """Statistics of the images in `batches` (float arrays [B, H, W, C]; any number, any B).

  One streaming pass with float64 sums, so a dataset need not fit in memory. The per-pixel
  mean and ZCA need images of one shape; ZCA also needs D = H·W·C <= `zca_max_dims` (it
  accumulates a D × D matrix: 4096 covers 32×32×3 and 64×64×1).

  ZCA (Krizhevsky 2009; Coates & Ng 2011): W = U diag(1/sqrt(λ + ε)) Uᵀ from the covariance
  U diag(λ) Uᵀ of the flattened images minus the mean image. ε is the variance below which a
  direction counts as noise, to be damped rather than blown up to unit variance. The default
  (None) sets it relative to the data: ε = 0.1 · tr(Σ)/D, a tenth of the mean pixel variance,
  the regularisation used with ZCA for CIFAR-10 in the code around Lee et al. 2020 ("Finite
  versus infinite neural networks", zca_reg = 0.1 scaled by tr(Σ)/D). It needs no retuning
  when the pixel range changes; for CIFAR-10 in [0, 1] it is at most 0.1 × the mean of its
  registered channel variances, 0.0063. A float gives ε absolutely. The result's
  `zca_epsilon` is the absolute value used.
  """
  acc = None
  for batch in batches:
    batch = np.asarray(batch)
    if batch.ndim != 4:
      raise ValueError(f'Statistics need batches of images [B, H, W, C], got shape {batch.shape}.')
    if acc is None:
      acc = _Accumulator(batch, zca_max_dims)
    elif batch.shape[-1] != acc.shape[-1]:
      raise ConfigError(
          f'Images have {acc.shape[-1]} and {batch.shape[-1]} channels; make them '
          'agree (e.g. decode(channels=3) or to_rgb) before computing statistics.'
      )
    acc.add(batch)
  if acc is None or acc.num_examples == 0:
    raise ConfigError('No images to compute statistics from: the dataset split is empty.')
  mean, cov, pixel_mean, pixel_cov = acc.covariances()
  eigval, eigvec = eig_descending(cov)
  zca, epsilon = None, None
  if pixel_cov is not None:
    pixel_eigval, pixel_eigvec = np.linalg.eigh(pixel_cov)
    epsilon = (
        ZCA_EPSILON_SCALE * np.trace(pixel_cov) / len(pixel_cov)
        if zca_epsilon is None
        else zca_epsilon
    )
    epsilon = float(epsilon)
    zca = zca_matrix(pixel_eigval, pixel_eigvec, epsilon).astype(np.float32)
  return DatasetStats(
      mean=mean,
      std=np.sqrt(np.maximum(np.diag(cov), 0.0)),
      cov=cov,
      eigval=eigval,
      eigvec=eigvec,
      pixel_mean=pixel_mean,
      zca=zca,
      zca_epsilon=epsilon,
      zca_note=acc.zca_note,
      num_examples=acc.num_examples,
      source=dict(source or {}),
  )


def _summary(stats: DatasetStats) -> dict[str, Any]:
  """The JSON record: everything but the per-pixel arrays."""
  as_list = lambda a: None if a is None else np.asarray(a).tolist()
  return {
      'about': (
          'std: population std over all pixels; eigvec: eigenvectors as columns, for '
          'eigval in descending order; zca: applied as (image - pixel_mean).ravel() @ zca'
      ),
      'mean': as_list(stats.mean),
      'std': as_list(stats.std),
      'cov': as_list(stats.cov),
      'eigval': as_list(stats.eigval),
      'eigvec': as_list(stats.eigvec),
      'num_examples': stats.num_examples,
      'image_shape': as_list(stats.image_shape),
      'pixel_mean': f'in {NPZ_NAME}' if stats.pixel_mean is not None else None,
      'zca': f'in {NPZ_NAME}' if stats.zca is not None else None,
      'zca_epsilon': stats.zca_epsilon,
      'zca_note': stats.zca_note,
      'source': stats.source,
  }


def save(stats: DatasetStats, directory: str) -> str:
  """Writes `dataset_stats.npz` and `dataset_stats.json` into `directory` (each atomically);
  returns the .npz path, which stats-consuming ops accept."""
  os.makedirs(directory, exist_ok=True)
  arrays = {
      name: np.asarray(getattr(stats, name))
      for name in ('mean', 'std', 'cov', 'eigval', 'eigvec', 'pixel_mean', 'zca')
      if getattr(stats, name) is not None
  }
  if stats.zca_epsilon is not None:
    arrays['zca_epsilon'] = np.float64(stats.zca_epsilon)
  if stats.num_examples is not None:
    arrays['num_examples'] = np.int64(stats.num_examples)
  arrays['zca_note'] = np.str_(stats.zca_note)
  arrays['source'] = np.str_(json.dumps(stats.source))
  npz_path = os.path.join(directory, NPZ_NAME)

  def write_npz(tmp: str) -> None:
    with open(tmp, 'wb') as f:  # a file object: np.savez would append .npz to a name
      np.savez(f, **arrays)

  files.write_atomic(npz_path, write_npz)
  text = json.dumps(_summary(stats), indent=2) + '\n'
  files.write_text_atomic(os.path.join(directory, JSON_NAME), text)
  return npz_path


def _read(path: str) -> DatasetStats:
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError) as e:
    raise ConfigError(
        f'Cannot read dataset statistics from {path!r} ({e}); {_HOW_TO_COMPUTE} again.'
    ) from e
  missing = {'mean', 'std'} - set(arrays)
  if missing:
    raise ConfigError(
        f'{path!r} is not a statistics file (it lacks {sorted(missing)}); {_HOW_TO_COMPUTE}.'
    )
  get = arrays.get
  return DatasetStats(
      mean=get('mean'),
      std=get('std'),
      cov=get('cov'),
      eigval=get('eigval'),
      eigvec=get('eigvec'),
      pixel_mean=get('pixel_mean'),
      zca=get('zca'),
      zca_epsilon=None if get('zca_epsilon') is None else float(get('zca_epsilon')),
      zca_note=str(get('zca_note', '')),
      num_examples=None if get('num_examples') is None else int(get('num_examples')),
      source=json.loads(str(get('source', '{}'))),
  )


def _from_registry(name: str) -> DatasetStats:
  spec = datasets.get_spec(name)
  if spec.mean is None:
    raise ConfigError(f'No statistics are recorded for dataset {name!r}; {_HOW_TO_COMPUTE}.')
  array = lambda v: None if v is None else np.asarray(v, np.float64)
  return DatasetStats(
      mean=array(spec.mean),
      std=array(spec.std),
      eigval=array(spec.eigval),
      eigvec=array(spec.eigvec),
      source={'dataset': spec.name, 'from': 'input_pipeline.datasets'},
  )


def load(name_or_path: str | os.PathLike) -> DatasetStats:
  """Statistics from a `.npz` file, a directory holding `dataset_stats.npz`, or a dataset name
  ('cifar10', 'imagenet') with recorded mean/std (and for ImageNet eigval/eigvec)."""
  name = os.fspath(name_or_path)
  path = os.path.expanduser(name)
  if os.path.isdir(path):
    path = os.path.join(path, NPZ_NAME)
    if not os.path.isfile(path):
      raise ConfigError(f'No {NPZ_NAME} in directory {name!r}; {_HOW_TO_COMPUTE}.')
  if os.path.isfile(path):
    return _read(path)
  if path.endswith('.npz') or path.startswith(('.', os.sep)) or path != name:
    raise ConfigError(f'Statistics file {name!r} does not exist; {_HOW_TO_COMPUTE}.')
  try:
    return _from_registry(name)
  except datasets.DatasetError as e:
    raise ConfigError(
        f'{name!r} is neither a statistics file (no such file or directory) nor a '
        f'known dataset ({e}) For a file, {_HOW_TO_COMPUTE}.'
    ) from e
