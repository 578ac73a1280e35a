"""Reading a training workdir back: its config, model and newest weights, and its headline facts.

Pictures, summaries and comparisons start from a workdir rather than from a config, so that they
show what was actually trained: the config recorded in `<workdir>/config.json` and the weights
of its newest checkpoint.
"""

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

import models
from analysis import summary
from common.errors import UserError
from train_lib import checkpoint, init_from, metric_eval, reporting, sharding
from train_lib.state import init_state

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


class WorkdirError(UserError, ValueError):
  """The workdir lacks what was asked of it (no recorded config, no checkpoint yet)."""


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained model as its workdir holds it."""

  config: ml_collections.ConfigDict  # locked, as the run used it
  model: nn.Module
  variables: dict[str, Any]  # {'params', 'batch_stats'}, for model.apply(..., train=False)
  step: int  # the checkpoint's step
  image_shape: tuple[int, ...]  # one input image, HWC
  num_classes: int


def read_record(workdir: str) -> dict[str, Any]:
  """`<workdir>/config.json`: {'config': the run's config, 'derived': what training computed}."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise WorkdirError(
        f'{workdir} has no {CONFIG_FILE}, so it is not a training workdir (or its '
        'run never started). Train into it first: python main.py '
        f'--config=configs/<experiment>.py --workdir={workdir}'
    )
  return init_from.read_record(workdir)


def record_config(record: dict[str, Any]) -> ml_collections.ConfigDict:
  """The recorded config as a locked ConfigDict (tuples come back as lists)."""
  config = ml_collections.ConfigDict(record['config'])
  config.lock()
  return config


def _one_device_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()[:1]), (sharding.DATA_AXIS,))


def load_trained(workdir: str) -> Trained:
  """The model of `workdir` with the weights of its newest checkpoint, on one device.

  The train state's layout comes from `init_state` traced abstractly (no parameters are
  initialised), so the checkpoint is read exactly as the trainer would resume it.
  """
  record = read_record(workdir)
  config = record_config(record)
  derived = record['derived']
  image_shape, num_classes = tuple(derived['image_shape']), int(derived['num_classes'])
  model = models.from_config(
      config.model, num_classes, precision=config.get('precision', 'float32')
  )
  checkpointer = checkpoint.Checkpointer(
      os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints
  )
  try:
    if checkpointer.latest_step() is None:
      raise WorkdirError(
          f'{workdir} has no checkpoint yet: train it for at least '
          'checkpoint_every_steps steps (or to the end), then try again.'
      )
    abstract = jax.eval_shape(
        lambda: init_state(
            config, model, image_shape, _one_device_mesh(), derived.get('total_steps', 0)
        )
    )
    state = checkpointer.restore_latest(abstract)
  finally:
    checkpointer.close()
  return Trained(
      config=config,
      model=model,
      variables=state.variables(),
      step=int(state.step),
      image_shape=image_shape,
      num_classes=num_classes,
  )


def headline_metric(workdir: str, config: dict[str, Any]) -> str:
  """The eval score a run is compared by: top-1, mean IoU for segmentation, or for metric
  learning the N-way K-shot accuracy (on held-out classes, or on seen ones where nothing was
  held out)."""
  if config.get('task', 'classification') == 'segmentation':
    return 'eval_miou'
  if config.get('task', 'classification') != 'metric_learning':
    return 'eval_top1'
  metric = config['metric']
  keys = [metric_eval.few_shot_key(g, metric['ways'], metric['shots']) for g in metric_eval.GROUPS]
  logged = {k for row in reporting.read_metrics(workdir) for k in row}
  return next((k for k in keys if k in logged), keys[0])


def _latest_score(workdir: str, key: str) -> tuple[float | None, int | None]:
  """(eval score `key`, its step): results.json's, or metrics.jsonl's last eval if that is newer
  (a resumed run still training has evaluated after the results of its earlier end)."""
  found: list[tuple[int, float]] = []
  results_path = os.path.join(workdir, reporting.RESULTS_FILE)
  if os.path.isfile(results_path):
    with open(results_path) as f:
      results = json.load(f)
    if results.get(key) is not None:
      found.append((int(results['step']), float(results[key])))
  evals = [r for r in reporting.read_metrics(workdir) if key in r]
  if evals:
    found.append((int(evals[-1]['step']), float(evals[-1][key])))
  if not found:
    return None, None
  step, top1 = max(found, key=lambda pair: pair[0])  # max keeps the first (results) on a tie
  return top1, step


def run_facts(workdir: str) -> dict[str, Any]:
  """name, model, num_params, macs, top1 and step (top1's step; both None before any eval), and
  `metric`, what `top1` holds: eval_top1, or a metric-learning run's `headline_metric`.

  MACs come from config.json; runs that did not record them (older ones, or trained from code
  without `model_facts`) get them from the model summary.
  """
  record = read_record(workdir)
  derived = record['derived']
  macs = derived.get('macs')
  if macs is None:
    config = record_config(record)
    model = models.from_config(
        config.model, int(derived['num_classes']), precision=config.get('precision', 'float32')
    )
    macs = summary.model_facts(model, tuple(derived['image_shape']))['macs']
  metric = headline_metric(workdir, record['config'])
  top1, step = _latest_score(workdir, metric)
  return {
      'name': os.path.basename(os.path.abspath(workdir)),
      'model': record['config']['model']['name'],
      'num_params': int(derived['num_params']),
      'macs': int(macs),
      'top1': top1,
      'step': step,
      'metric': metric,
  }
