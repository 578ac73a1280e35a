"""Semantic segmentation of the digits as a task of the trainer: its checks, data, steps and eval.

Each pixel's class is made in the step from the (augmented) image and its label: the digit's
label + 1 where its stroke is, 0 (background) elsewhere. Because the targets are computed from
the very pixels the model sees, augmentations that move pixels (random crops, flips, shifts,
cutout) cannot desynchronise image and target. The loop, checkpoints and resume are
classification's (train.py); docs/segmentation.md shows the run.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import models
from common.errors import ConfigError
from train_lib import sharding, steps
from train_lib.state import TrainState

BACKGROUND = 0
SCORES = ('eval_loss', 'eval_pixel_accuracy', 'eval_miou')  # what a plateau schedule may watch


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, a segmentation config that cannot train or be evaluated."""
  name = config.model.name
  if not models.entry(name).per_pixel:
    per_pixel = [m for m in models.list_models() if models.entry(m).per_pixel]
    raise ConfigError(
        f"task='segmentation' needs a model with per-pixel logits, and {name!r} classifies whole "
        f'images: set config.model.name to one of {", ".join(per_pixel)}.'
    )
  if config.loss != 'softmax_xent' or config.label_smoothing:
    raise ConfigError(
        "task='segmentation' trains with per-pixel softmax cross-entropy: set "
        "loss='softmax_xent' and label_smoothing=0."
    )
  if 'mixup' in config.dataset.train_preprocess:
    raise ConfigError(
        'mixup blends two digits, whose pixels then have no single class: remove it from '
        "dataset.train_preprocess for task='segmentation'."
    )
  if 'ten_crop' in config.dataset.eval_preprocess:
    raise ConfigError(
        "task='segmentation' evaluates whole images, not averaged views: remove ten_crop from "
        'dataset.eval_preprocess.'
    )
  if config.distill.teacher:
    raise ConfigError("distillation's teacher gives image logits: unset distill.teacher.")


def stroke_targets(images: jax.Array, labels: jax.Array) -> jax.Array:
  """int32 [B, H, W]: label + 1 where the image is above the midpoint of its own min and max
  (the stroke), else 0. Any increasing affine normalisation leaves the result unchanged; a blank
  image is all background."""
  grey = jnp.mean(images.astype(jnp.float32), axis=-1)
  low = jnp.min(grey, axis=(1, 2), keepdims=True)
  high = jnp.max(grey, axis=(1, 2), keepdims=True)
  stroke = grey > (low + high) / 2
  return jnp.where(stroke, labels[:, None, None].astype(jnp.int32) + 1, BACKGROUND)


def pixel_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example mean over pixels of the softmax cross-entropy, [B]."""
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.mean(per_pixel, axis=(1, 2))


def segmentation_train_step(
    state: TrainState, batch: dict[str, jax.Array], *, learning_rate_fn: optax.Schedule
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the mean per-pixel cross-entropy of the batch's real images."""
  mask = batch['mask'].astype(jnp.float32)
  num_real = jnp.maximum(jnp.sum(mask), 1.0)
  targets = stroke_targets(batch['image'], batch['label'])
  rng = state.step_rng()

  def loss_and_outputs(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'],
        train=True,
        rngs={'dropout': rng},
        mutable=['batch_stats', 'intermediates'],
    )
    loss = jnp.sum(pixel_cross_entropy(logits, targets) * mask) / num_real
    return loss, (logits, updates.get('batch_stats', {}))

  grad_fn = jax.value_and_grad(loss_and_outputs, has_aux=True)
  (loss, (logits, batch_stats)), grads = grad_fn(state.params)
  new_state, step_metrics = steps._apply_gradients(  # pylint: disable=protected-access
      state, loss, grads, batch_stats, learning_rate_fn
  )
  correct = jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32), axis=(1, 2))
  return new_state, {**step_metrics, 'pixel_accuracy': jnp.sum(correct * mask) / num_real}


def confusion_matrix(
    targets: jax.Array, predictions: jax.Array, weights: jax.Array, num_classes: int
) -> jax.Array:
  """int32 [classes, classes]: pixels of true class i predicted as j, counting those of
  examples whose weight (the eval mask, [B]) is 1."""
  pairs = (targets * num_classes + predictions).reshape(targets.shape[0], -1)
  counts = jnp.broadcast_to(weights.astype(jnp.int32)[:, None], pairs.shape)
  flat = jnp.zeros(num_classes * num_classes, jnp.int32).at[pairs.ravel()].add(counts.ravel())
  return flat.reshape(num_classes, num_classes)


def segmentation_eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, Any]:
  """Masked sums over `batch`: the per-image loss, the image count and the confusion matrix."""
  logits = state.apply_fn(state.variables(), batch['image'], train=False)
  targets = stroke_targets(batch['image'], batch['label'])
  mask = batch['mask']
  return {
      'loss_sum': jnp.sum(pixel_cross_entropy(logits, targets) * mask.astype(jnp.float32)),
      'count': jnp.sum(mask.astype(jnp.int32)),
      'confusion': confusion_matrix(targets, jnp.argmax(logits, -1), mask, logits.shape[-1]),
  }


def confusion_scores(confusion: np.ndarray) -> dict[str, float]:
  """Pixel accuracy, and mean IoU: per class, intersection / union of its predicted and true
  pixels over the whole split, averaged over the classes present (a non-empty union)."""
  confusion = np.asarray(confusion, np.int64)
  intersection = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - intersection
  present = union > 0
  return {
      'pixel_accuracy': float(intersection.sum() / max(confusion.sum(), 1)),
      'miou': float(np.mean(intersection[present] / union[present])) if present.any() else 0.0,
  }


class SegmentationData:
  """The digits' pipeline, seen as `num_classes` + 1 pixel classes (0: background)."""

  def __init__(self, pipeline):
    self._pipeline = pipeline
    self.num_classes = pipeline.num_classes + 1

  def __getattr__(self, name: str):
    return getattr(self._pipeline, name)


def make_data(config: ml_collections.ConfigDict, eval_batch_size: int) -> SegmentationData:
  """This process's input pipeline (input_pipeline.InputPipeline), with the background class."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (the only TensorFlow user)

  return SegmentationData(
      input_pipeline.InputPipeline(
          config.dataset,
          global_batch_size=config.batch_size,
          eval_batch_size=eval_batch_size,
          seed=config.seed,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
      )
  )


def train_step(config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule):
  """The pure segmentation step (train.py compiles it)."""
  del config  # nothing of the step is configurable beyond the learning rate
  return functools.partial(segmentation_train_step, learning_rate_fn=learning_rate_fn)


class Evaluator:
  """Sums loss and the confusion matrix over the whole eval split; each image counts once."""

  def __init__(self, config: ml_collections.ConfigDict, data, mesh: jax.sharding.Mesh):
    del config
    self._data = data
    self._batch_sharding = sharding.batch_sharded(mesh)
    self._eval = jax.jit(
        segmentation_eval_step,
        in_shardings=(sharding.replicated(mesh), self._batch_sharding),
        out_shardings=sharding.replicated(mesh),
    )

  def __call__(self, state: TrainState) -> dict[str, float]:
    sums = None
    for batch in sharding.prefetch_to_devices(self._data.eval_batches(), self._batch_sharding):
      out = self._eval(state, batch)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = int(sums['count'])
    scores = confusion_scores(sums['confusion'])
    return {
        'eval_loss': float(sums['loss_sum']) / max(count, 1),
        'eval_pixel_accuracy': scores['pixel_accuracy'],
        'eval_miou': scores['miou'],
        'eval_count': count,
    }
