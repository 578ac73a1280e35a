"""Building a config's `get_sweep()`: lists of override dicts, {'dotted.field': value, ...}.

  def get_sweep(arg=None):
    return sweep.product(sweep.axis('optimizer.lr', [0.01, 0.1]),
                         sweep.axis('model.batch_norm', [False, True]))

Each point runs `python main.py --config=<this file> --workdir=<root> --sweep` into its own
workdir under the root (train_lib/sweeps.py); a point differs from the config only by its
overrides, so the seed and the data order are the same unless the sweep varies them.
"""

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

Point = dict[str, Any]


def axis(field: str, values: Iterable[Any]) -> list[Point]:
  """One swept field: [{field: v} for v in values]."""
  return [{field: v} for v in values]


def product(*axes: Sequence[Point]) -> list[Point]:
  """Every combination of the axes' points, the last axis varying fastest."""
  return [{k: v for point in combo for k, v in point.items()} for combo in itertools.product(*axes)]


def zipped(*axes: Sequence[Point]) -> list[Point]:
  """The axes' i-th points together (all axes the same length)."""
  lengths = {len(a) for a in axes}
  if len(lengths) > 1:
    raise ValueError(f'sweep.zipped takes axes of one length, not {sorted(lengths)}.')
  return [{k: v for point in combo for k, v in point.items()} for combo in zip(*axes)]
