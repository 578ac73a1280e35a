"""Pure train and eval steps; train.py jit-compiles them once over the device mesh."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from train_lib import losses, metric_losses, metrics, sparsity
from train_lib.state import TrainState


def _sown(intermediates, name: str) -> list[jax.Array]:
  """Arrays published with `self.sow('intermediates', name, ...)` (auxiliary heads' logits)."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(intermediates):
    if any(getattr(k, 'key', None) == name for k in path):
      found.append(leaf)
  return found


def _targets_loss(
    loss_fn: losses.LossFn, logits: jax.Array, batch: dict[str, jax.Array]
) -> jax.Array:
  """Per-example loss against `label`, or against both labels of a mixup batch, weighted."""
  loss = loss_fn(logits, batch['label'])
  if 'mix_label' not in batch:
    return loss
  weight = batch['mix_weight']
  return (1.0 - weight) * loss + weight * loss_fn(logits, batch['mix_label'])


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    loss_fn: losses.LossFn,
    learning_rate_fn: optax.Schedule,
    aux_loss_weight: float = 0.3,
    distill: tuple[float, float] | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on `batch`; dropout draws from `state.step_rng()`.

  Auxiliary-head losses are added with `aux_loss_weight`. Mixup batches carry `mix_label` and
  `mix_weight`, and the loss mixes the two labels' losses with that weight. With `distill` =
  (temperature T, soft weight w) the batch carries `teacher_logits`, and the main head's loss is
  w·(soft-target loss) + (1 − w)·(label loss). A step whose loss or gradient is not finite
  leaves the state unchanged and reports `finite = 0`, so the loop can stop with the last good
  state on disk.
  """
  mask = batch['mask'].astype(jnp.float32)
  num_real = jnp.maximum(jnp.sum(mask), 1.0)
  rng = state.step_rng()

  def loss_and_outputs(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'],
        train=True,
        rngs={'dropout': rng},
        mutable=['batch_stats', 'intermediates'],
    )
    per_example = _targets_loss(loss_fn, logits, batch)
    if distill:
      temperature, soft_weight = distill
      soft = losses.soft_target_loss(logits, batch['teacher_logits'], temperature)
      per_example = soft_weight * soft + (1.0 - soft_weight) * per_example
    main_loss = jnp.sum(per_example * mask) / num_real
    aux = [
        jnp.sum(_targets_loss(loss_fn, a, batch) * mask) / num_real
        for a in _sown(updates.get('intermediates', {}), 'aux_logits')
    ]
    total = main_loss + aux_loss_weight * sum(aux) if aux else main_loss
    return total, (main_loss, logits, updates.get('batch_stats', {}))

  grad_fn = jax.value_and_grad(loss_and_outputs, has_aux=True)
  (loss, (main_loss, logits, batch_stats)), grads = grad_fn(state.params)
  new_state, step_metrics = _apply_gradients(state, loss, grads, batch_stats, learning_rate_fn)
  top1 = jnp.sum(metrics.topk_correct(logits, batch['label'], 1) * mask) / num_real
  return new_state, {**step_metrics, 'main_loss': main_loss, 'top1': top1}


def _apply_gradients(
    state: TrainState,
    loss: jax.Array,
    grads: Any,
    batch_stats: Any,
    learning_rate_fn: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """The optimizer step, or `state` unchanged where the loss or gradient is not finite."""
  direction, opt_state = state.tx.update(grads, state.opt_state, state.params)
  lr = learning_rate_fn(state.step) * state.plateau.lr_scale
  params = optax.apply_updates(state.params, jax.tree.map(lambda d: -lr * d, direction))
  params = sparsity.constrain(params, opt_state)  # pruned weights to exactly zero
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  stepped = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
  return new_state, {
      'loss': loss,
      'lr': lr,
      'grad_norm': grad_norm,
      'finite': finite.astype(jnp.float32),
  }


def metric_train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    objective: metric_losses.Objective,
    learning_rate_fn: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of metric learning: every image of the batch through the one embedding
  network (the shared weights of the Siamese or triplet towers), then `objective` on the
  embeddings, [B, n, D] for pairs and triplets or [B, D] for P×K batches."""
  images = batch['image']
  rng = state.step_rng()

  def loss_and_outputs(params):
    flat = images.reshape(-1, *images.shape[-3:])
    embeddings, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats},
        flat,
        train=True,
        rngs={'dropout': rng},
        mutable=['batch_stats', 'intermediates'],
    )
    embeddings = embeddings.reshape(*images.shape[:-3], -1)
    class_logits = _sown(updates.get('intermediates', {}), 'class_logits')
    loss, extra = objective(
        embeddings, batch['label'], batch['mask'], class_logits[0] if class_logits else None
    )
    return loss, (extra, updates.get('batch_stats', {}))

  grad_fn = jax.value_and_grad(loss_and_outputs, has_aux=True)
  (loss, (extra, batch_stats)), grads = grad_fn(state.params)
  new_state, step_metrics = _apply_gradients(state, loss, grads, batch_stats, learning_rate_fn)
  return new_state, {**step_metrics, **extra}


def embed_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The evaluation embeddings of `batch`'s images, with their labels and mask."""
  embeddings = state.apply_fn(state.variables(), batch['image'], train=False)
  return {'embedding': embeddings, 'label': batch['label'], 'mask': batch['mask']}


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    loss_fn: losses.LossFn,
    average_softmax: bool = True,
) -> dict[str, jax.Array]:
  """Masked sums of loss and top-1/top-5 hits on `batch`, from the main head only.

  Images [batch, views, H, W, C] (ten_crop) are classified by their views' averaged softmax,
  whose log then stands in for the logits (so cross-entropy scores the average); with
  `average_softmax=False` (an l2 loss) the raw outputs are averaged.
  """
  images = batch['image']
  if images.ndim == 5:
    b, v = images.shape[:2]
    logits = state.apply_fn(
        state.variables(), images.reshape(b * v, *images.shape[2:]), train=False
    )
    logits = logits.astype(jnp.float32).reshape(b, v, -1)
    if average_softmax:
      logits = jnp.log(jnp.mean(jax.nn.softmax(logits), axis=1))
    else:
      logits = jnp.mean(logits, axis=1)
  else:
    logits = state.apply_fn(state.variables(), images, train=False)
  return metrics.classification_sums(
      logits, batch['label'], loss_fn(logits, batch['label']), batch['mask']
  )
