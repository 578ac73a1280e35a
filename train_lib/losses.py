"""Per-example losses: by name for the labels, and the soft targets of distillation."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from common.errors import ConfigError

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Cross-entropy against one-hot labels smoothed towards uniform by `label_smoothing`."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def l2(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """½‖outputs − targets‖²; integer targets are class indices compared as one-hot vectors."""
  if jnp.issubdtype(targets.dtype, jnp.integer):
    targets = jax.nn.one_hot(targets, outputs.shape[-1])
  targets = targets.reshape(outputs.shape)
  return 0.5 * jnp.sum(jnp.square(outputs - targets).reshape(outputs.shape[0], -1), axis=-1)


def soft_target_loss(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float
) -> jax.Array:
  """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) per example.

  Hinton et al. §2: the soft targets' gradients scale as 1/T², so T² keeps their share of the
  loss when T changes. KL differs from their cross-entropy with soft targets by the teacher's
  entropy, a constant: the same gradients, and 0 when the student matches the teacher.
  """
  teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  return temperature**2 * jnp.sum(jnp.exp(teacher) * (teacher - student), axis=-1)


def get_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
  if name == 'softmax_xent':
    return functools.partial(softmax_cross_entropy, label_smoothing=label_smoothing)
  if name == 'l2':
    return l2
  raise ConfigError(f'Unknown loss {name!r}; choose "softmax_xent" or "l2".')
