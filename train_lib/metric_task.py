"""Metric learning as a task of the trainer: its config checks, its data, its loss, its evaluation.

The loop, checkpoints, resume, devices and logs are classification's (train.py); what differs is
here. docs/metric_learning.md shows the runs.
"""

import functools

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from common.errors import ConfigError
from train_lib import metric_eval, metric_losses, plots, sharding, steps
from train_lib.state import TrainState

PROJECTIONS = ('tsne', 'pca')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, a metric-learning config that cannot train or be evaluated."""
  metric = config.metric
  metric_losses.check_objective(metric.sampling, metric.loss, metric.mining, metric.distance)
  if config.model.get('embedding_dim', 0) <= 0:
    raise ConfigError(
        "task='metric_learning' trains an embedding: set config.model.embedding_dim (e.g. 64)."
    )
  if metric.loss == 'softmax' and not config.model.get('embedding_classifier', False):
    raise ConfigError(
        "metric.loss='softmax' trains a classifier on the embedding: set "
        'config.model.embedding_classifier=True.'
    )
  if metric.margin < 0:
    raise ConfigError(f'metric.margin must be ≥ 0, not {metric.margin}.')
  if metric.projection not in PROJECTIONS:
    raise ConfigError(
        f'Unknown metric.projection {metric.projection!r}; choose one of {", ".join(PROJECTIONS)}.'
    )
  if not metric.recall_at or min(metric.recall_at) < 1 or metric.verification_pairs < 1:
    raise ConfigError('metric.recall_at needs values ≥ 1, and metric.verification_pairs ≥ 1.')


def make_data(config: ml_collections.ConfigDict, eval_batch_size: int):
  """This process's metric-learning pipeline (input_pipeline.MetricPipeline)."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (the only TensorFlow user)

  return input_pipeline.MetricPipeline(
      config.dataset,
      sampling_name=config.metric.sampling,
      examples_per_class=config.metric.examples_per_class,
      global_batch_size=config.batch_size,
      eval_batch_size=eval_batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def train_step(config: ml_collections.ConfigDict, learning_rate_fn):
  """The pure metric-learning step of `config` (train.py compiles it)."""
  metric = config.metric
  return functools.partial(
      steps.metric_train_step,
      objective=metric_losses.objective(
          metric.sampling, metric.loss, metric.mining, metric.distance, metric.margin
      ),
      learning_rate_fn=learning_rate_fn,
  )


class Evaluator:
  """Embeds the whole eval split and scores it (metric_eval); keeps the last embeddings for the
  picture. Checks at construction that the eval split can form the configured episodes."""

  def __init__(self, config: ml_collections.ConfigDict, data, mesh: jax.sharding.Mesh):
    self._metric, self._data = config.metric, data
    self.seen_classes = tuple(data.seen_classes)
    metric_eval.check_episodes(data.eval_labels, self.seen_classes, config.metric)
    self._batch_sharding = sharding.batch_sharded(mesh)
    self._embed = jax.jit(
        steps.embed_step,
        in_shardings=(sharding.replicated(mesh), self._batch_sharding),
        out_shardings=self._batch_sharding,
    )
    self.embeddings: np.ndarray | None = None
    self.labels: np.ndarray | None = None

  def _gather(self, out):
    if jax.process_count() == 1:
      return jax.device_get(out)
    return multihost_utils.process_allgather(out, tiled=True)

  def __call__(self, state: TrainState) -> dict[str, float]:
    parts = [
        self._gather(self._embed(state, batch))
        for batch in sharding.prefetch_to_devices(self._data.eval_batches(), self._batch_sharding)
    ]
    mask = np.concatenate([p['mask'] for p in parts]).astype(bool)
    self.embeddings = np.concatenate([p['embedding'] for p in parts])[mask].astype(np.float32)
    self.labels = np.concatenate([p['label'] for p in parts])[mask]
    return metric_eval.evaluate(self.embeddings, self.labels, self.seen_classes, self._metric)

  def plot(self, path: str, title: str) -> None:
    plots.plot_embedding(
        path,
        self.embeddings,
        self.labels,
        self.seen_classes,
        method=self._metric.projection,
        title=title,
    )
