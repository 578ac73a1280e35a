"""Pure train and eval steps; train.py jit-compiles them once over the device mesh."""

import jax
import jax.numpy as jnp
import optax

from train_lib import losses, metrics
from train_lib.state import TrainState


def _aux_logits(intermediates) -> list[jax.Array]:
  """Logits published by auxiliary heads with `self.sow('intermediates', 'aux_logits', ...)`."""
  found = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(intermediates):
    if any(getattr(k, 'key', None) == 'aux_logits' for k in path):
      found.append(leaf)
  return found


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               loss_fn: losses.LossFn, learning_rate_fn: optax.Schedule,
               aux_loss_weight: float = 0.3) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on `batch`; `rng` is this step's dropout key.

  Auxiliary-head losses are added with `aux_loss_weight`. A step whose loss or gradient is
  not finite leaves the state unchanged and reports `finite = 0`, so the loop can stop with
  the last good state on disk.
  """
  mask = batch['mask'].astype(jnp.float32)
  num_real = jnp.maximum(jnp.sum(mask), 1.0)

  def loss_and_outputs(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        rngs={'dropout': rng}, mutable=['batch_stats', 'intermediates'])
    main_loss = jnp.sum(loss_fn(logits, batch['label']) * mask) / num_real
    aux = [jnp.sum(loss_fn(a, batch['label']) * mask) / num_real
           for a in _aux_logits(updates.get('intermediates', {}))]
    total = main_loss + aux_loss_weight * sum(aux) if aux else main_loss
    return total, (main_loss, logits, updates.get('batch_stats', {}))

  grad_fn = jax.value_and_grad(loss_and_outputs, has_aux=True)
  (loss, (main_loss, logits, batch_stats)), grads = grad_fn(state.params)
  direction, opt_state = state.tx.update(grads, state.opt_state, state.params)
  lr = learning_rate_fn(state.step) * state.plateau.lr_scale
  params = optax.apply_updates(state.params, jax.tree.map(lambda d: -lr * d, direction))

  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  stepped = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                          opt_state=opt_state)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), stepped, state)
  step_metrics = {
      'loss': loss, 'main_loss': main_loss, 'lr': lr, 'grad_norm': grad_norm,
      'top1': jnp.sum(metrics.topk_correct(logits, batch['label'], 1) * mask) / num_real,
      'finite': finite.astype(jnp.float32),
  }
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array], *,
              loss_fn: losses.LossFn) -> dict[str, jax.Array]:
  """Masked sums of loss and top-1/top-5 hits on `batch`, from the main head only."""
  logits = state.apply_fn(state.variables(), batch['image'], train=False)
  return metrics.classification_sums(logits, batch['label'], loss_fn(logits, batch['label']),
                                     batch['mask'])
