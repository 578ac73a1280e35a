"""Running a config's sweep: each point of its `get_sweep()` trained into its own workdir.

  python main.py --config=configs/<experiment>.py --workdir=<root> --sweep [--sweep_index=k]

A point is a dict of overrides of the config ({'optimizer.lr': 0.1}); its workdir under the root
is named from them. Finished points are skipped and interrupted ones resume from their newest
checkpoint, so rerunning the command completes a sweep. Without --sweep_index every point runs
in turn; with it (or under a cluster scheduler's array job: SLURM_ARRAY_TASK_ID) one point runs,
so `sbatch --array=0-<N-1>` spreads a sweep over a cluster. The root's sweep.json records the
points, for the report (analysis/sweep_report.py).
"""

import importlib.util
import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from common import files
from common.errors import ConfigError, UserError, did_you_mean

SWEEP_FILE = 'sweep.json'
FAILED_FILE = 'failed.json'
ARRAY_INDEX_VARIABLES = ('SLURM_ARRAY_TASK_ID', 'PBS_ARRAY_INDEX')  # 0-based array task ids

Point = Mapping[str, Any]


def load_points(config_spec: str) -> list[dict[str, Any]]:
  """The points of `get_sweep(arg)` in the config file of `config_spec` ('path.py[:arg]')."""
  path, _, arg = config_spec.partition(':')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(
        f'{path} defines no get_sweep(); --sweep runs the points a config lists there '
        '(configs/sweep.py has the product and zip helpers).'
    )
  points = [dict(p) for p in module.get_sweep(arg or None)]
  if not points:
    raise ConfigError(f'{path}: get_sweep({arg or ""}) returned no points.')
  return points


def _value_name(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:g}'
  if isinstance(value, (list, tuple)):
    return '-'.join(_value_name(v) for v in value) or 'none'
  return str(value)


def point_name(point: Point) -> str:
  """'lr=0.1,batch_norm=True': the last part of each field and its value, safe as a folder."""
  name = ','.join(f'{key.rpartition(".")[2]}={_value_name(v)}' for key, v in point.items())
  return re.sub(r'[^\w.,=+-]', '_', name) or 'default'


def apply(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """A locked copy of `config` with the point's overrides; ConfigError naming an unknown field."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in point.items():
    *parents, field = key.split('.')
    node = config
    for name in parents:
      if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
        raise ConfigError(f'The sweep overrides {key!r}: the config has no section {name!r}.')
      node = node[name]
    if field not in node:
      raise ConfigError(
          f'The sweep overrides {key!r}, a field the config does not have.'
          f'{did_you_mean(field, node.keys())}'
      )
    try:
      node[field] = value
    except TypeError as e:
      raise ConfigError(f'The sweep sets {key}={value!r}: {e}') from e
  config.lock()
  return config


def sweep_index(flag: int | None) -> int | None:
  """--sweep_index if given, else the array task id of a cluster scheduler, else None (all)."""
  if flag is not None:
    return flag
  for variable in ARRAY_INDEX_VARIABLES:
    if os.environ.get(variable, '').strip():
      try:
        return int(os.environ[variable])
      except ValueError as e:
        raise ConfigError(f'{variable}={os.environ[variable]!r} is not an array index.') from e
  return None


def is_finished(workdir: str) -> bool:
  """Whether the run in `workdir` reached its last step (its results are final)."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
      total = json.load(f)['derived']['total_steps']
  except (OSError, KeyError, ValueError):
    return False
  return results.get('step') == total


def run(
    config: ml_collections.ConfigDict,
    points: list[dict[str, Any]],
    root: str,
    train: Callable[[ml_collections.ConfigDict, str], Any],
    index: int | None = None,
) -> list[str]:
  """Trains the points (all, or the one at `index`) of the sweep under `root` with
  `train(config, workdir)`; returns their workdirs. Every point's overrides are checked first.

  A point whose training raises is recorded in its workdir's failed.json and the sweep goes on
  to the next (a single --sweep_index point re-raises); rerunning retries it.
  """
  configs = [apply(config, p) for p in points]  # refuses a bad field before any point runs
  names = [point_name(p) for p in points]
  if len(set(names)) < len(names):
    raise ConfigError('Two sweep points have the same overrides; each must differ.')
  if index is not None and not 0 <= index < len(points):
    raise ConfigError(
        f'--sweep_index={index} is out of range: this sweep has {len(points)} points '
        f'(0 to {len(points) - 1}).'
    )
  os.makedirs(root, exist_ok=True)
  record = {'points': [{'name': n, 'overrides': p} for n, p in zip(names, points)]}
  files.write_json_atomic(os.path.join(root, SWEEP_FILE), json.loads(json.dumps(record)))
  chosen = range(len(points)) if index is None else [index]
  for i in chosen:
    workdir = os.path.join(root, names[i])
    if is_finished(workdir):
      logging.info('Sweep point %d/%d (%s) is finished; skipped.', i, len(points), names[i])
      continue
    logging.info('Sweep point %d/%d: %s', i, len(points), names[i])
    failed = os.path.join(workdir, FAILED_FILE)
    try:
      train(configs[i], workdir)
    except (UserError, RuntimeError, ValueError, FloatingPointError) as e:
      files.write_json_atomic(failed, {'error': str(e), 'traceback': traceback.format_exc(limit=5)})
      if index is not None:
        raise
      logging.error('Sweep point %s failed (%s); going on.', names[i], e)
    else:
      if os.path.exists(failed):
        os.remove(failed)
  return [os.path.join(root, n) for n in names]
