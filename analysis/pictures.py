"""PNG pictures of a network: first-layer filters, feature maps, and runs compared by cost.

Each picture is built from an array that a helper returns (`filter_grid`, `channel_grid`), so
tests check the numbers, and the PNG is only that array drawn. Figures are made with
matplotlib's object API (no pyplot state) and written atomically.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common import files
from common.errors import ConfigError

GAP_VALUE = 1.0  # white lines between tiles
_FILTER_PNG_SIDE = 480  # the filter grid is enlarged (by whole pixels) to about this size
_TITLE_PX = 30


def minmax(x: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
  """`x` scaled to [0, 1] over `axis` (all of it by default); constant parts become 0."""
  low = x.min(axis=axis, keepdims=True)
  span = x.max(axis=axis, keepdims=True) - low
  return np.where(span > 0, (x - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def grid_columns(count: int, tile_height: int, tile_width: int) -> int:
  """Columns that make a grid of `count` tiles nearest to square in pixels."""
  return min(count, max(1, math.ceil(math.sqrt(count * tile_height / tile_width))))


def tile_position(
    index: int, columns: int, tile_shape: tuple[int, int], gap: int, border: bool = True
) -> tuple[int, int]:
  """(top, left) pixel of tile `index` in a `tile_grid` of these settings."""
  row, col = divmod(index, columns)
  edge = gap if border else 0
  return edge + row * (tile_shape[0] + gap), edge + col * (tile_shape[1] + gap)


def tile_grid(
    tiles: np.ndarray, columns: int | None = None, gap: int = 1, border: bool = True
) -> np.ndarray:
  """Tiles [N, h, w, c] laid out row by row, `gap` pixels of GAP_VALUE apart (and around, with
  `border`): one image [rows·h + gaps, columns·w + gaps, c]."""
  count, h, w, c = tiles.shape
  columns = columns or grid_columns(count, h, w)
  rows = -(-count // columns)
  edge = gap if border else 0
  grid = np.full(
      (rows * (h + gap) - gap + 2 * edge, columns * (w + gap) - gap + 2 * edge, c),
      GAP_VALUE,
      np.float32,
  )
  for k, tile in enumerate(tiles):
    top, left = tile_position(k, columns, (h, w), gap, border)
    grid[top : top + h, left : left + w] = tile
  return grid


def _kernels(tree: Any) -> list[np.ndarray]:
  """The 4-D 'kernel' leaves of a params subtree (its own first)."""
  if not isinstance(tree, Mapping):
    return []
  own = tree.get('kernel')
  found = [own] if own is not None and np.ndim(own) == 4 else []
  return found + [k for key, sub in tree.items() if key != 'kernel' for k in _kernels(sub)]


def first_conv_kernel(
    params: Mapping[str, Any], call_order: Sequence[str]
) -> tuple[str, np.ndarray]:
  """(module path, HWIO kernel) of the first convolution the forward pass applies.

  `call_order`: module paths ('stem/conv', 'layer1_0/conv1') in the order the model calls
  them, e.g. the summary's layer names. The params tree alone cannot tell: its keys are sorted
  by name ('Conv_0' < 'stem'), not by call order.
  """
  for name in call_order:
    node: Any = params
    for part in name.split('/'):
      node = node.get(part) if isinstance(node, Mapping) else None
    kernels = _kernels(node)
    if kernels:
      return name, np.asarray(kernels[0])
  raise ConfigError(
      'The model has no convolution (no 4-D kernel in the parameters of the '
      f'layers {", ".join(call_order) or "given"}).'
  )


def filter_tiles(kernel: np.ndarray, scale: int = 1) -> np.ndarray:
  """One tile per output filter of an HWIO kernel, scaled to [0, 1] jointly over its channels
  (the AlexNet paper's figure 3) and enlarged `scale` times (each weight a square of pixels):
  RGB when I is 3, grey when I is 1. For other I the tile shows the I input channels side by
  side in grey, one pixel apart, so that every weight is seen and the channels' relative
  strengths stay comparable, as in the RGB case."""
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim != 4:
    raise ValueError(f'A conv kernel is 4-D (H, W, in, out); got shape {kernel.shape}.')
  filters = minmax(np.moveaxis(kernel, 3, 0), axis=(1, 2, 3))  # [O, H, W, I]
  filters = np.repeat(np.repeat(filters, scale, axis=1), scale, axis=2)
  if kernel.shape[2] in (1, 3):
    return filters
  channels = np.moveaxis(filters, 3, 1)[..., None]  # [O, I, H, W, 1]
  return np.stack([tile_grid(c, columns=len(c), border=False) for c in channels])


def filter_grid(kernel: np.ndarray, scale: int = 1) -> np.ndarray:
  """The filters of `kernel` as one image [rows, cols, 1 or 3] in [0, 1], near square, with
  thin gaps: 2 pixels between filters (3 when a tile holds several grey channels)."""
  return tile_grid(filter_tiles(kernel, scale), gap=2 if kernel.shape[2] in (1, 3) else 3)


def filter_scale(kernel_shape: Sequence[int], side: int = _FILTER_PNG_SIDE) -> int:
  """Pixels per weight that make the filter grid about `side` pixels on its longer side."""
  h, w, channels, count = kernel_shape
  w = w if channels in (1, 3) else w * channels  # the gaps inside a tile aside
  columns = grid_columns(count, h, w)
  return max(1, math.ceil(side / max(-(-count // columns) * h, columns * w)))


def _to_rgb_bytes(image: np.ndarray) -> np.ndarray:
  image = np.broadcast_to(image, image.shape[:2] + (3,)) if image.shape[-1] == 1 else image
  return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _save(fig: Figure, path: str, dpi: int) -> str:
  files.write_atomic(path, lambda tmp: fig.savefig(tmp, format='png', dpi=dpi))
  return path


def plot_first_layer_filters(kernel: np.ndarray, path: str, title: str = '') -> str:
  """Writes `filter_grid(kernel, filter_scale(kernel.shape))` pixel for pixel to `path`, under
  `title`; returns `path`."""
  image = _to_rgb_bytes(filter_grid(kernel, filter_scale(np.shape(kernel))))
  band = _TITLE_PX if title else 0
  dpi = 100
  fig = Figure(figsize=(image.shape[1] / dpi, (image.shape[0] + band) / dpi), dpi=dpi)
  fig.figimage(image, xo=0, yo=0, origin='upper')
  if title:
    fig.text(
        0.5, 1 - band / 2 / (image.shape[0] + band), title, ha='center', va='center', fontsize=9
    )
  return _save(fig, path, dpi)


def select_channels(fmap: np.ndarray, max_channels: int, strongest: bool = False) -> np.ndarray:
  """Indices of the channels to show of `fmap` [H, W, C]: the first `max_channels`, or with
  `strongest` those with the highest mean activation over the map, strongest first."""
  count = min(max_channels, fmap.shape[-1])
  if not strongest:
    return np.arange(count)
  return np.argsort(-fmap.mean(axis=(0, 1)), kind='stable')[:count]


def channel_grid(fmap: np.ndarray, channels: Sequence[int]) -> np.ndarray:
  """The chosen channels of `fmap` [H, W, C] as one grey grid, each channel scaled on its own."""
  tiles = minmax(
      np.moveaxis(np.asarray(fmap, np.float32)[..., list(channels)], -1, 0)[..., None],
      axis=(1, 2, 3),
  )
  return tile_grid(tiles)


def _spatial(name: str, fmap: Any) -> np.ndarray:
  fmap = np.asarray(fmap, np.float32)
  if fmap.ndim == 4 and fmap.shape[0] == 1:
    fmap = fmap[0]
  if fmap.ndim != 3:
    raise ValueError(
        f'Feature maps are [H, W, C] (or one image of a batch); {name!r} has shape '
        f'{fmap.shape}. Choose convolutional or pooling layers.'
    )
  return fmap


def _shape_text(shape: Sequence[int]) -> str:
  return 'x'.join(map(str, shape))


def plot_feature_maps(
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    path: str,
    max_channels: int = 16,
    strongest: bool = False,
    title: str = '',
) -> str:
  """Writes the input `image` (HWC in [0, 1]) and, per layer of `maps` (name → [H, W, C]), a
  grid of `max_channels` channels: the first ones, or with `strongest` those of highest mean
  activation (the channels this image excites most). Returns `path`."""
  image = np.clip(np.asarray(image, np.float32), 0, 1)
  panels = [('input', image, _shape_text(image.shape))]
  for name, fmap in maps.items():
    fmap = _spatial(name, fmap)
    chosen = select_channels(fmap, max_channels, strongest)
    panels.append(
        (
            name,
            channel_grid(fmap, chosen),
            f'{_shape_text(fmap.shape)}, '
            f'{"strongest" if strongest else "first"} {len(chosen)} channels',
        )
    )
  columns = min(len(panels), 4)
  rows = -(-len(panels) // columns)
  fig = Figure(figsize=(3.4 * columns, 3.6 * rows + (0.4 if title else 0)))
  for i, (name, picture, caption) in enumerate(panels):
    ax = fig.add_subplot(rows, columns, i + 1)
    ax.imshow(
        picture[..., 0] if picture.shape[-1] == 1 else picture,
        cmap='gray',
        vmin=0,
        vmax=1,
        interpolation='nearest',
    )
    ax.set_title(f'{name}\n{caption}', fontsize=9)
    ax.set_axis_off()
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return _save(fig, path, dpi=100)


def run_label(name: str, model: str) -> str:
  """A run's name, followed by its model's when they differ."""
  return name if name == model else f'{name} ({model})'


def comparison_figure(facts: Sequence[dict[str, Any]]) -> Figure:
  """Two panels, eval top-1 against parameters and against MACs (log x), a labelled point per
  run of `facts` (dicts with name, model, num_params, macs, top1, as `workdirs.run_facts`;
  metric-learning runs put their N-way K-shot accuracy in top1, named by `metric`)."""
  if not facts:
    raise ConfigError('Nothing to compare: give at least one workdir.')
  missing = [f['name'] for f in facts if f.get('top1') is None]
  if missing:
    raise ConfigError(
        f'No eval accuracy recorded yet in {", ".join(missing)}: train or evaluate '
        'those runs first, or leave them out of the comparison.'
    )
  metrics = sorted({f.get('metric', 'eval_top1') for f in facts})
  if len(metrics) > 1:
    raise ConfigError(
        f'These runs are scored differently ({", ".join(metrics)}): compare classification '
        'runs with classification runs, and metric-learning runs with each other.'
    )
  score = 'top-1' if metrics[0] == 'eval_top1' else metrics[0].removeprefix('eval_')
  fig = Figure(figsize=(11, 4.4))
  top1 = [f['top1'] for f in facts]
  for i, (key, label) in enumerate([('num_params', 'parameters'), ('macs', 'MACs per image')]):
    ax = fig.add_subplot(1, 2, i + 1)
    x = [f[key] for f in facts]
    ax.scatter(x, top1, zorder=3)
    for f, xi, yi in zip(facts, x, top1):
      ax.annotate(
          run_label(f['name'], f['model']),
          (xi, yi),
          textcoords='offset points',
          xytext=(4, 4),
          fontsize=8,
      )
    ax.set_xscale('log')
    ax.margins(0.15)  # room for the labels
    low, high = min(x), max(x)
    if high < 10 * low:  # show at least a decade, so that distances read as ratios
      ax.set_xlim(math.sqrt(low * high / 10), math.sqrt(low * high * 10))
    ax.set_xlabel(label)
    ax.set_ylabel(f'eval {score}' + (' accuracy' if score == 'top-1' else ''))
    ax.set_title(f'{score} vs {label}')
    ax.grid(alpha=0.3, which='both')
  fig.tight_layout()
  return fig


def plot_comparison(facts: Sequence[dict[str, Any]], path: str) -> str:
  """Writes `comparison_figure(facts)` to `path`; returns `path`."""
  return _save(comparison_figure(facts), path, dpi=100)
