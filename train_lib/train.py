"""train_and_evaluate: the loop around the pure steps (data → steps → eval → checkpoints → logs)."""

import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

import models
from common import files
from common.errors import ConfigError, UserError
from train_lib import (
    checkpoint,
    config_checks,
    distillation,
    init_from,
    losses,
    metric_eval,
    metric_task,
    metrics,
    plots,
    preemption,
    reporting,
    schedules,
    segmentation_task,
    sharding,
    steps,
    workdir_lock,
)
from train_lib.state import TrainState, init_state, num_params


class NonFiniteLossError(UserError, RuntimeError):
  """The loss or gradient became NaN/inf; the newest checkpoint is the last good state."""


class DataSource(Protocol):
  """What the loop needs from the data (input_pipeline.InputPipeline, or synthetic arrays)."""

  num_classes: int
  image_shape: tuple[int, ...]
  steps_per_epoch: int

  def train_batches(self, start_step: int):
    ...

  def eval_batches(self):
    ...


def _eval_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> int:
  """config.eval_batch_size (or batch_size) rounded up to fill every device; eval pads anyway."""
  size = config.eval_batch_size or config.batch_size
  return -(-size // num_devices) * num_devices


TASKS = ('classification', 'metric_learning', 'segmentation')


def _recorded_config(workdir: str) -> dict[str, Any] | None:
  """The config that `workdir`'s config.json records, or None."""
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)['config']
  except (OSError, KeyError, ValueError):
    return None


def check_task(config: ml_collections.ConfigDict, workdir: str, trains: bool = True) -> None:
  """Refuses, before any work, a task this config cannot run, one other than the workdir's, an
  `init_from` or teacher that is not a trained workdir, or (when `trains`) a resume with another
  batch size."""
  if config.task not in TASKS:
    raise ConfigError(f'Unknown task {config.task!r}; choose one of {", ".join(TASKS)}.')
  if config.task == 'metric_learning':
    metric_task.check_config(config)
  elif config.dataset.holdout_classes or config.model.get('embedding_dim', 0):
    raise ConfigError(
        'dataset.holdout_classes and model.embedding_dim are for '
        "task='metric_learning'; a classifier trains on every class."
    )
  if config.task == 'segmentation':
    segmentation_task.check_config(config)
  elif config.model.name in models.list_models() and models.entry(config.model.name).per_pixel:
    raise ConfigError(
        f"{config.model.name} gives a class per pixel, not per image: set task='segmentation'."
    )
  if config.init_from:
    init_from.check_workdir(config.init_from, 'init_from')
  if config.distill.teacher:
    distillation.check_config(config)
  recorded = _recorded_config(workdir)
  if recorded is not None:
    if recorded.get('task', 'classification') != config.task:
      raise ConfigError(
          f'{workdir} holds a {recorded.get("task", "classification")} run, and this config '
          f'trains {config.task}: its checkpoints cannot continue here. Nothing was changed; use '
          'a new --workdir.'
      )
    resumes = checkpoint.has_checkpoint(os.path.join(workdir, 'checkpoints'))
    batch_size = recorded.get('batch_size', config.batch_size)
    if trains and resumes and batch_size != config.batch_size:
      raise ConfigError(
          f'{workdir} was trained with batch_size={batch_size}; resuming it with '
          f'batch_size={config.batch_size} would see examples again or skip them and shift the '
          f'schedule. Rerun with --config.batch_size={batch_size}, or use a new '
          '--workdir (config.init_from starts it from these weights).'
      )


def _check_before_work(
    config: ml_collections.ConfigDict, workdir: str, builds_pipeline: bool, trains: bool = True
) -> None:
  """Every check that needs no data and no compilation: the task against the workdir, the
  ranges of the numbers, and (where the real pipeline will be built) its preprocessing ops."""
  check_task(config, workdir, trains)
  config_checks.check_values(config)
  if builds_pipeline:
    import input_pipeline  # pylint: disable=import-outside-toplevel  (the only TensorFlow user)

    input_pipeline.check_preprocess(config.dataset)


def make_data(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> DataSource:
  """This process's input pipeline for `config.dataset`, with batch sizes that fit the mesh."""
  if config.task == 'metric_learning':
    return metric_task.make_data(config, _eval_batch_size(config, mesh.size))
  if config.task == 'segmentation':
    return segmentation_task.make_data(config, _eval_batch_size(config, mesh.size))
  import input_pipeline  # pylint: disable=import-outside-toplevel  (the only TensorFlow user)

  return input_pipeline.InputPipeline(
      config.dataset,
      global_batch_size=config.batch_size,
      eval_batch_size=_eval_batch_size(config, mesh.size),
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def _eval_scores(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The eval results a plateau schedule may watch."""
  if config.task == 'metric_learning':
    return metric_eval.score_names(config.metric)
  if config.task == 'segmentation':
    return segmentation_task.SCORES
  return schedules.PLATEAU_METRICS


def learning_rate_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[float, int, optax.Schedule]:
  """(base lr after linear batch scaling, total steps, the schedule) of `config`."""
  total_steps = (
      config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch
  )
  base_lr = config.optimizer.lr
  if config.optimizer.lr_reference_batch_size > 0:  # linear scaling rule
    base_lr *= config.batch_size / config.optimizer.lr_reference_batch_size
  return (
      base_lr,
      total_steps,
      schedules.create_learning_rate_fn(
          config.schedule, base_lr, steps_per_epoch, total_steps, _eval_scores(config)
      ),
  )


def jit_train_step(
    config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule, mesh: jax.sharding.Mesh
):
  """The task's train step with `config`'s loss, compiled for the mesh, donating the old state."""
  replicated = sharding.replicated(mesh)
  if config.task == 'metric_learning':
    step = metric_task.train_step(config, learning_rate_fn)
  elif config.task == 'segmentation':
    step = segmentation_task.train_step(config, learning_rate_fn)
  else:
    step = functools.partial(
        steps.train_step,
        loss_fn=losses.get_loss(config.loss, config.label_smoothing),
        learning_rate_fn=learning_rate_fn,
        aux_loss_weight=config.aux_loss_weight,
        distill=(
            (config.distill.temperature, config.distill.soft_weight)
            if config.distill.teacher
            else None
        ),
    )
  return jax.jit(
      step,
      in_shardings=(replicated, sharding.batch_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )


def _every(value: int, steps_per_epoch: int) -> int:
  """A period in steps: `value` if positive, else once per epoch."""
  return value if value > 0 else steps_per_epoch


def evaluate(eval_step, state: TrainState, data: DataSource, batch_sharding) -> dict[str, float]:
  """Loss and top-1/top-5 accuracy over the whole eval split, each example counted once."""
  sums = None
  for batch in sharding.prefetch_to_devices(data.eval_batches(), batch_sharding):
    out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  return {**metrics.summarize(sums, 'eval'), 'eval_count': int(sums['count'])}


def make_evaluator(
    config: ml_collections.ConfigDict, data: DataSource, mesh: jax.sharding.Mesh
) -> Callable[[TrainState], dict[str, float]]:
  """state → the task's eval results over the whole eval split."""
  if config.task == 'metric_learning':
    return metric_task.Evaluator(config, data, mesh)
  if config.task == 'segmentation':
    return segmentation_task.Evaluator(config, data, mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  eval_step = jax.jit(
      functools.partial(
          steps.eval_step,
          loss_fn=losses.get_loss(config.loss),
          average_softmax=config.loss == 'softmax_xent',
      ),
      in_shardings=(sharding.replicated(mesh), batch_sharding),
      out_shardings=sharding.replicated(mesh),
  )
  return lambda state: evaluate(eval_step, state, data, batch_sharding)


_NOT_LOGGED = re.compile(r'eval_count|.*_threshold|.*_recall_at_(?!1$)\d+')  # in the files only


def _eval_line(results: dict[str, float]) -> str:
  scores = ' | '.join(
      f'{k.removeprefix("eval_")} {v:.4f}'
      for k, v in results.items()
      if not _NOT_LOGGED.fullmatch(k)
  )
  return f'{scores} ({results["eval_count"]} examples)'


_NOT_AVERAGED = ('lr', 'finite', 'main_loss')


def _summarize_train(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Means over the steps since the last log line, and the latest learning rate."""
  fetched = jax.device_get(pending)
  return {
      'lr': float(fetched[-1]['lr']),
      **{
          f'train_{k}': float(np.mean([m[k] for m in fetched]))
          for k in fetched[-1]
          if k not in _NOT_AVERAGED
      },
  }


def _agreed_stop_signal(local_signum: int | None, at_sync_point: bool) -> int | None:
  """The signal every process acts on: its own alone, or on several hosts, any host's signal
  exchanged at the shared sync points (so that all stop at the same step)."""
  if jax.process_count() == 1:
    return local_signum
  if not at_sync_point:
    return None
  return int(multihost_utils.process_allgather(np.int32(local_signum or 0)).max()) or None


def _record_config(workdir: str, record: dict[str, Any], start_step: int) -> None:
  """Writes config.json; a different one from earlier steps is kept as config.until_step_N.json."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != json.loads(json.dumps(record)):
      os.replace(path, os.path.join(workdir, f'config.until_step_{start_step}.json'))
  files.write_json_atomic(path, record)


def _first_nonfinite(pending: list[dict[str, jax.Array]], first_step: int) -> int | None:
  flags = np.asarray(jax.device_get([m['finite'] for m in pending]))
  bad = np.flatnonzero(flags == 0)
  return first_step + int(bad[0]) + 1 if bad.size else None


def _finished_results(workdir: str, total_steps: int | None = None) -> dict[str, Any] | None:
  """The results of the run in `workdir` if it reached its last step (`total_steps`, or the
  one it recorded) and its final checkpoint is on disk; else None."""
  try:
    results = reporting.read_results(workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
      total = total_steps or json.load(f)['derived']['total_steps']
  except (OSError, KeyError, ValueError):
    return None
  saved = checkpoint.saved_steps(os.path.join(workdir, 'checkpoints'))
  return results if results.get('step') == total and total in saved else None


def _report_finished(workdir: str, results: dict[str, Any]) -> dict[str, Any]:
  logging.info(
      '%s finished at step %d: %s. Nothing was changed; --mode=evaluate evaluates its newest '
      'checkpoint again (into evaluation.json).',
      workdir,
      results['step'],
      _eval_line({k: v for k, v in results.items() if k.startswith('eval_')}),
  )
  return results


ModelFacts = Callable[[nn.Module, tuple[int, ...]], dict[str, Any]]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    data: DataSource | None = None,
    *,
    model_facts: ModelFacts | None = None,
    init_variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns the results.

  A fresh run starts from `init_variables` where given (a compressed model's, from
  `compression`), else from config.init_from's newest checkpoint, else from the initialisers.

  `model_facts(model, image_shape)` adds numbers about the model to config.json's `derived`
  record and to the first log line (main.py passes the summary's MACs per image: the analysis
  package sits above this one, so the trainer takes them rather than importing it).
  """
  start_time = time.perf_counter()
  _check_before_work(config, workdir, builds_pipeline=data is None)
  if _recorded_config(workdir) == json.loads(json.dumps(config.to_dict())):
    finished = _finished_results(workdir)
    if finished:
      return _report_finished(workdir, finished)
  workdir_lock.check_free(workdir)
  with contextlib.ExitStack() as stack:
    return _train(config, workdir, data, model_facts, init_variables, start_time, stack)


EVALUATION_FILE = 'evaluation.json'


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Evaluates the newest good checkpoint of `workdir` under `config`'s eval settings (another
  eval split or preprocessing may be given) into `<workdir>/evaluation.json`; writes nothing
  else, so it may run beside the training."""
  directory = os.path.join(workdir, 'checkpoints')
  if not checkpoint.has_checkpoint(directory):
    raise UserError(f'{workdir} holds no checkpoint to evaluate; train into it first.')
  _check_before_work(config, workdir, builds_pipeline=True, trains=False)
  mesh = sharding.make_mesh()
  data = make_data(config, mesh)
  evaluator = make_evaluator(config, data, mesh)
  model = models.from_config(config.model, data.num_classes, precision=config.precision)
  _, total_steps, _ = learning_rate_schedule(config, data.steps_per_epoch)
  state = init_state(config, model, data.image_shape, mesh, total_steps=total_steps)
  found = checkpoint.read_newest(directory)
  if found is None:
    raise UserError(f'{workdir} holds no readable checkpoint (see the warnings above).')
  step, saved = found
  state = jax.device_put(
      flax.serialization.from_state_dict(state, saved), sharding.replicated(mesh)
  )
  scores = evaluator(state)
  logging.info('eval of step %d: %s', step, _eval_line(scores))
  results = {
      'step': step,
      'split': config.dataset.eval_split,
      'preprocess': config.dataset.eval_preprocess,
      **scores,
  }
  if jax.process_index() == 0:
    files.write_json_atomic(os.path.join(workdir, EVALUATION_FILE), results)
  return results


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    data: DataSource | None,
    model_facts: ModelFacts | None,
    init_variables: dict[str, Any] | None,
    start_time: float,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
  """train_and_evaluate's work, once the config is checked; the workdir's lock joins `stack`
  just before the first write, so that a config refused while building writes nothing."""
  mesh = sharding.make_mesh()
  sharding.check_divisible(config.batch_size, mesh)
  data = data or make_data(config, mesh)
  evaluator = make_evaluator(config, data, mesh)  # checks what eval needs before training
  steps_per_epoch = data.steps_per_epoch
  model = models.from_config(config.model, data.num_classes, precision=config.precision)
  base_lr, total_steps, learning_rate_fn = learning_rate_schedule(config, steps_per_epoch)
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  state = init_state(config, model, data.image_shape, mesh, total_steps=total_steps)
  teacher = (
      distillation.Teacher(config.distill.teacher, data.num_classes, data.image_shape, mesh)
      if config.distill.teacher
      else None
  )

  checkpointer = checkpoint.Checkpointer(
      os.path.join(workdir, 'checkpoints'), max_to_keep=config.keep_checkpoints
  )
  if checkpointer.latest_step() is None:
    state = init_from.start(state, config, init_variables, mesh)
  stack.enter_context(workdir_lock.hold(workdir))
  state = checkpointer.restore_latest(state)  # refuses, untouched, on a mismatch
  start_step = int(state.step)
  finished = _finished_results(workdir, total_steps) if start_step >= total_steps else None
  if finished:  # the same length under another config: still nothing to train
    checkpointer.close()
    return _report_finished(workdir, finished)
  is_chief = jax.process_index() == 0
  derived = {
      'steps_per_epoch': steps_per_epoch,
      'total_steps': total_steps,
      'learning_rate': base_lr,
      'num_devices': mesh.size,
      'num_processes': jax.process_count(),
      'num_params': num_params(state.params),
      'num_classes': data.num_classes,
      'image_shape': list(data.image_shape),
      **(model_facts(model, data.image_shape) if model_facts else {}),
  }
  if is_chief:
    _record_config(workdir, {'config': config.to_dict(), 'derived': derived}, start_step)
  macs = f', {derived["macs"]:,} MACs per image' if 'macs' in derived else ''
  logging.info(
      '%s: %s parameters%s, %d steps (%d per epoch) on %d device(s)%s.',
      config.model.name,
      f'{derived["num_params"]:,}',
      macs,
      total_steps,
      steps_per_epoch,
      mesh.size,
      f', resuming at step {start_step}' if start_step else '',
  )

  train_step = jit_train_step(config, learning_rate_fn, mesh)

  writer = reporting.MetricWriter(workdir, start_step, enabled=is_chief)
  images_per_step = getattr(data, 'images_per_step', config.batch_size)  # 2× for pairs, ...
  progress = reporting.Progress(total_steps, steps_per_epoch, images_per_step, start_step)
  log_every = max(config.log_every_steps, 1)
  eval_every = _every(config.eval_every_steps, steps_per_epoch)
  checkpoint_every = _every(config.checkpoint_every_steps, steps_per_epoch)
  step, pending, eval_results, train_results = start_step, [], {}, {}
  last_saved = checkpointer.latest_step()

  def check_finite() -> None:
    bad = _first_nonfinite(pending, step - len(pending))
    if bad is not None:
      kept = (
          f'the newest checkpoint (step {last_saved}) holds the last good state'
          if last_saved is not None
          else 'no checkpoint was written yet, so a rerun starts over'
      )
      raise NonFiniteLossError(
          f'The loss or gradient became NaN/inf at step {bad}. Stopped without saving: {kept}. '
          'Lower optimizer.lr, set optimizer.grad_clip_norm, or check the inputs.'
      )

  def run_eval() -> None:
    nonlocal state, eval_results
    began = time.perf_counter()
    eval_results = evaluator(state)
    writer.write(step, {'epoch': step / steps_per_epoch, **eval_results})
    logging.info('eval at step %d: %s', step, _eval_line(eval_results))
    if config.schedule.name == 'plateau':
      if config.schedule.metric not in eval_results:  # e.g. a held-out score, none held out
        raise ConfigError(
            f"schedule.metric={config.schedule.metric!r} is not among this run's eval results: "
            f'{", ".join(k for k in eval_results if k != "eval_count")}.'
        )
      new = schedules.plateau_update_from_config(state.plateau, eval_results, config.schedule)
      state = state.replace(plateau=jax.device_put(new, replicated))
    progress.pause(time.perf_counter() - began)

  def save() -> None:
    nonlocal last_saved
    check_finite()
    began = time.perf_counter()
    if checkpointer.save(state, step):
      last_saved = step
    progress.pause(time.perf_counter() - began)

  try:
    with preemption.StopOnSignal() as stop:
      batches = sharding.prefetch_to_devices(
          data.train_batches(start_step), batch_sharding, config.prefetch_to_device
      )
      if teacher:
        batches = teacher.annotate(batches)
      while step < total_steps:
        state, step_metrics = train_step(state, next(batches))
        step += 1
        pending.append(step_metrics)
        if step % log_every == 0 or step == total_steps:
          check_finite()
          train_results = {'epoch': step / steps_per_epoch, **_summarize_train(pending)}
          pending = []
          writer.write(step, train_results)
          logging.info(progress.line(step, train_results))
        if step % eval_every == 0 or step == total_steps:
          run_eval()
        if step % checkpoint_every == 0 or step == total_steps:
          save()
        stop_signal = _agreed_stop_signal(stop.signum, at_sync_point=step % log_every == 0)
        if stop_signal and step < total_steps:
          save()
          raise preemption.StopRequested(stop_signal, step)
    if not eval_results:  # the workdir held the last checkpoint but not the results
      run_eval()
    checkpointer.wait()  # results.json only claims a step whose checkpoint is on disk
    results = {
        'step': step,
        **eval_results,
        'train_loss': train_results.get('train_loss'),
        'wall_time_s': time.perf_counter() - start_time,
        'images_per_s': progress.images_per_s,
        'num_params': derived['num_params'],
        'model': config.model.name,
        'dataset': config.dataset.name,
        'resumed_from_step': start_step,
    }
    if is_chief:
      reporting.write_results(workdir, results)
      plots.plot_training_curves(workdir, os.path.join(workdir, 'curves.png'))
      if isinstance(evaluator, metric_task.Evaluator):
        evaluator.plot(
            os.path.join(workdir, 'embedding.png'),
            f'{config.model.name} on {config.dataset.name}, step {step}',
        )
    logging.info(
        'Done: step %d, %s in %.1f s.', step, _eval_line(eval_results), results['wall_time_s']
    )
    return results
  finally:
    writer.close()
    checkpointer.close()
