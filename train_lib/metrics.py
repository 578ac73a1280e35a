"""Classification metrics as masked sums, so batches and devices add up exactly."""

import jax
import jax.numpy as jnp


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits (k is capped at the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def classification_sums(
    logits: jax.Array, labels: jax.Array, per_example_loss: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
  """Sums over real (mask=True) examples: loss, top-1 and top-5 hits, and their count."""
  w = mask.astype(jnp.float32)
  return {
      'loss_sum': jnp.sum(per_example_loss * w),
      'top1_sum': jnp.sum(topk_correct(logits, labels, 1) * w),
      'top5_sum': jnp.sum(topk_correct(logits, labels, 5) * w),
      'count': jnp.sum(w),
  }


SUMMARY_NAMES = ('loss', 'top1', 'top5')


def summarize(sums: dict[str, float], prefix: str) -> dict[str, float]:
  """{'loss_sum', 'top1_sum', 'top5_sum', 'count'} → {prefix_loss, prefix_top1, prefix_top5}."""
  n = max(float(sums['count']), 1.0)
  return {f'{prefix}_{name}': float(sums[f'{name}_sum']) / n for name in SUMMARY_NAMES}
