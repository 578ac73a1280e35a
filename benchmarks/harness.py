"""What the benchmarks share: synthetic batches, timed windows and steps, the devices. No
TensorFlow here, so that a benchmark on synthetic arrays runs where it is not installed."""

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

try:
  import resource  # Unix only
except ImportError:
  resource = None

from train_lib import sharding, train
from train_lib.state import TrainState, init_state


def cpu_cores() -> int:
  """The cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def windows(
    run_one: Callable[[], Any], count: int, repeats: int, finish: Callable[[], Any] = lambda: None
) -> list[float]:
  """Seconds taken by each of `repeats` windows of `count` calls of `run_one`."""
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(count):
      run_one()
    finish()
    seconds.append(time.perf_counter() - start)
  return seconds


def rates(seconds: list[float], images_per_window: int) -> tuple[float, float]:
  """(best, mean) images/s over the windows."""
  return images_per_window / min(seconds), images_per_window * len(seconds) / sum(seconds)


def images_per_s(rate: float) -> str:
  """A rate for a table: whole images/s from 100 up, three significant figures below (a
  DenseNet-BC-100 step on one CPU core reads 2.19, not 2)."""
  return f'{rate:,.0f}' if rate >= 100 else f'{rate:.3g}'


def timed(run_one: Callable[[], Any]) -> float:
  """Seconds of one call of `run_one`, whose result is waited for (host and devices)."""
  start = time.perf_counter()
  jax.block_until_ready(run_one())
  return time.perf_counter() - start


def page_faults(run_one: Callable[[], Any]) -> float:
  """Minor page faults of the whole process during one call of `run_one` (waited for): pages
  mapped afresh, e.g. a scratch buffer that malloc took from the system and gave back
  (common/cpu_scratch.py); NaN where the system does not count them."""
  if resource is None:
    return float('nan')
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(run_one())
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def synthetic_batch(
    like: dict[str, np.ndarray], num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """Random arrays with the keys, shapes and dtypes of the pipeline batch `like`."""
  rng = np.random.default_rng(seed)
  batch = {}
  for key, value in like.items():
    if value.dtype == np.bool_:
      batch[key] = np.ones(value.shape, np.bool_)
    elif np.issubdtype(value.dtype, np.integer):
      batch[key] = rng.integers(0, num_classes, value.shape).astype(value.dtype)
    else:
      batch[key] = rng.random(value.shape).astype(value.dtype)
  return batch


def classification_batch(
    batch_size: int, image_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """A random batch of the training pipeline's layout: images, labels and an all-true mask."""
  like = {
      'image': np.zeros((batch_size, *image_shape), np.float32),
      'label': np.zeros(batch_size, np.int32),
      'mask': np.zeros(batch_size, np.bool_),
  }
  return synthetic_batch(like, num_classes, seed)


def devices() -> dict[str, Any]:
  """The kind, number and platform of the devices jax computes on."""
  found = jax.devices()
  return {
      'device_kind': found[0].device_kind,
      'device_count': len(found),
      'platform': found[0].platform,
  }


class _OneBatch:
  """A DataSource whose eval split is `batch`, already on the devices (to_global keeps it)."""

  def __init__(self, batch: dict[str, jax.Array], num_classes: int, image_shape: tuple[int, ...]):
    self.batch, self.num_classes, self.image_shape = batch, num_classes, image_shape
    self.steps_per_epoch = 1

  def train_batches(self, start_step: int):
    del start_step
    while True:
      yield self.batch

  def eval_batches(self):
    yield self.batch


class Steps:
  """A model's train state and its jitted train and eval steps, built as train_and_evaluate
  builds them (state, optimizer, schedule, mesh shardings, state donation), fed one batch that
  is already on the devices, so no host-to-device copy is timed."""

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      model: Any,
      image_shape: tuple[int, ...],
      num_classes: int,
      local_batch: dict[str, np.ndarray],
      mesh: jax.sharding.Mesh,
      steps_per_epoch: int = 1,
  ):
    _, _, learning_rate_fn = train.learning_rate_schedule(config, steps_per_epoch)
    self.state: TrainState = init_state(config, model, image_shape, mesh)
    self._train_step = train.jit_train_step(config, learning_rate_fn, mesh)
    batch = sharding.to_global(local_batch, sharding.batch_sharded(mesh))
    self.batch = batch
    self._evaluate = train.make_evaluator(config, _OneBatch(batch, num_classes, image_shape), mesh)

  def train(self) -> TrainState:
    """One train step on the batch; returns the new state (to wait for)."""
    self.state, _ = self._train_step(self.state, self.batch)
    return self.state

  def eval(self) -> dict[str, float]:
    """One eval step on the batch, its sums fetched to the host (the loop's evaluate)."""
    return self._evaluate(self.state)
