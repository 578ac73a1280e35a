"""Metric-learning losses and in-batch miners, written on distances between embeddings.

Conventions:
- Pair labels follow the contrastive loss of Hadsell, Chopra & LeCun (2006): 0 for a pair of the
  same class, 1 otherwise.
- Distances are Euclidean, ‖a − b‖, or cosine, 1 − cos(a, b).
- Miners take a distance matrix over the batch, the class labels and a validity mask (padded rows
  are never picked), and return indices; the losses then read the distances at those indices.

optax provides the triplet margin loss on embedding triplets (`optax.losses.triplet_margin_loss`,
Euclidean only); `triplet_margin_loss` here is the same formula on distances (the tests check the
two agree), which is what mining and the cosine distance need. No JAX library provides the
contrastive loss or the miners.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from common.errors import ConfigError
from models.embedding import l2_normalize

DISTANCES = ('euclidean', 'cosine')
MININGS = ('batch_all', 'batch_hard', 'semi_hard')
_SQRT_FLOOR = 1e-12  # keeps the gradient of √ finite at zero distance


def _check_distance(distance: str) -> None:
  if distance not in DISTANCES:
    raise ConfigError(f'Unknown distance {distance!r}; choose one of {", ".join(DISTANCES)}.')


def distances(a: jax.Array, b: jax.Array, distance: str = 'euclidean') -> jax.Array:
  """Distances between rows a[i] and b[i]: [..., D] × [..., D] → [...]."""
  _check_distance(distance)
  if distance == 'cosine':
    return 1.0 - jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)
  return jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(a - b), axis=-1), _SQRT_FLOOR))


def distance_matrix(x: jax.Array, distance: str = 'euclidean') -> jax.Array:
  """[B, D] → [B, B] distances between every two rows."""
  _check_distance(distance)
  if distance == 'cosine':
    u = l2_normalize(x)
    return 1.0 - u @ u.T
  squared = jnp.sum(jnp.square(x), axis=-1)
  gram = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
  return jnp.sqrt(jnp.maximum(gram, _SQRT_FLOOR))


def contrastive_loss(d: jax.Array, different: jax.Array, margin: float) -> jax.Array:
  """Per pair: ½d² for a same-class pair (label 0), ½·max(0, m − d)² for a different one (1)."""
  different = different.astype(d.dtype)
  return 0.5 * ((1.0 - different) * jnp.square(d) + different * jnp.square(jax.nn.relu(margin - d)))


def triplet_margin_loss(d_ap: jax.Array, d_an: jax.Array, margin: float) -> jax.Array:
  """Per triplet: max(0, d(anchor, positive) − d(anchor, negative) + m)."""
  return jax.nn.relu(d_ap - d_an + margin)


# --- Miners over a batch of labelled embeddings (P×K batches). ---------------------------------


def pair_masks(labels: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """([B, B] positive pairs: same class, two different real examples; [B, B] negative pairs)."""
  same = labels[:, None] == labels[None, :]
  both = valid[:, None] & valid[None, :]
  itself = jnp.eye(labels.shape[0], dtype=bool)
  return same & both & ~itself, ~same & both


def batch_all_triplets(labels: jax.Array, valid: jax.Array) -> jax.Array:
  """[B, B, B] mask of every valid (anchor, positive, negative) triplet in the batch."""
  positive, negative = pair_masks(labels, valid)
  return positive[:, :, None] & negative[:, None, :]


def batch_hard_triplets(
    d: jax.Array, labels: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Hermans et al. (2017): per anchor, its farthest positive and its closest negative.

  Returns (positive index [B], negative index [B], whether the anchor has both [B]).
  """
  positive, negative = pair_masks(labels, valid)
  hardest_positive = jnp.argmax(jnp.where(positive, d, -jnp.inf), axis=1)
  hardest_negative = jnp.argmin(jnp.where(negative, d, jnp.inf), axis=1)
  return hardest_positive, hardest_negative, positive.any(1) & negative.any(1)


def semi_hard_negatives(
    d: jax.Array, labels: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """FaceNet's semi-hard negatives (Schroff et al. 2015), as TensorFlow Addons picks them.

  For each positive pair (a, p): the closest negative farther from a than p (d_ap < d_an, so
  that the loss is below the margin but still positive when d_an < d_ap + m); where no negative
  is farther, the farthest negative. Returns (negative index [B, B], mask of the positive pairs
  [B, B] that have a negative).
  """
  positive, negative = pair_masks(labels, valid)
  farther = negative[:, None, :] & (d[:, None, :] > d[:, :, None])  # [a, p, n]
  closest_farther = jnp.argmin(jnp.where(farther, d[:, None, :], jnp.inf), axis=2)
  farthest = jnp.argmax(jnp.where(negative, d, -jnp.inf), axis=1)  # [a]
  picked = jnp.where(farther.any(2), closest_farther, farthest[:, None])
  return picked, positive & negative.any(1)[:, None]


def _mean_where(values: jax.Array, mask: jax.Array) -> jax.Array:
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mined_triplet_loss(
    d: jax.Array, labels: jax.Array, valid: jax.Array, *, mining: str, margin: float
) -> tuple[jax.Array, jax.Array]:
  """(loss, fraction of the mined triplets with a non-zero loss) over a labelled batch.

  batch_all: the mean over the triplets whose loss is not zero (pytorch-metric-learning's
  default reduction; the mean over all would be washed out by the many easy ones). batch_hard:
  the mean over anchors (Hermans et al.). semi_hard: the mean over positive pairs (FaceNet).
  """
  rows = jnp.arange(d.shape[0])
  if mining == 'batch_all':
    mask = batch_all_triplets(labels, valid)
    losses = triplet_margin_loss(d[:, :, None], d[:, None, :], margin)
    active = mask & (losses > 0)
    return _mean_where(losses, active), _mean_where(active, mask)
  if mining == 'batch_hard':
    p, n, mask = batch_hard_triplets(d, labels, valid)
    losses = triplet_margin_loss(d[rows, p], d[rows, n], margin)
  elif mining == 'semi_hard':
    n, mask = semi_hard_negatives(d, labels, valid)
    losses = triplet_margin_loss(d, d[rows[:, None], n], margin)
  else:
    raise ConfigError(f'Unknown mining {mining!r}; choose one of {", ".join(MININGS)}.')
  return _mean_where(losses, mask), _mean_where(losses > 0, mask)


def mined_contrastive_loss(
    d: jax.Array, labels: jax.Array, valid: jax.Array, *, mining: str, margin: float
) -> tuple[jax.Array, jax.Array]:
  """(loss, fraction of non-zero terms) of the contrastive loss over pairs in a labelled batch.

  batch_all: every positive and every negative pair, each kind averaged over its non-zero terms
  and the two added (pytorch-metric-learning's ContrastiveLoss), so the many negatives do not
  drown the few positives. batch_hard: per anchor its farthest positive and closest negative.
  """
  positive, negative = pair_masks(labels, valid)
  if mining == 'batch_all':
    pos_terms = contrastive_loss(d, jnp.zeros_like(d), margin)
    neg_terms = contrastive_loss(d, jnp.ones_like(d), margin)
    pos_active, neg_active = positive & (pos_terms > 0), negative & (neg_terms > 0)
    loss = _mean_where(pos_terms, pos_active) + _mean_where(neg_terms, neg_active)
    active = jnp.sum(pos_active) + jnp.sum(neg_active)
    return loss, active / jnp.maximum(jnp.sum(positive) + jnp.sum(negative), 1)
  if mining != 'batch_hard':
    raise ConfigError(
        f'The contrastive loss mines pairs with "batch_all" or "batch_hard", not {mining!r}.'
    )
  rows = jnp.arange(d.shape[0])
  p, n, mask = batch_hard_triplets(d, labels, valid)
  d_ap, d_an = d[rows, p], d[rows, n]
  terms = contrastive_loss(d_ap, jnp.zeros_like(d_ap), margin)
  terms += contrastive_loss(d_an, jnp.ones_like(d_an), margin)
  return _mean_where(terms, mask), _mean_where(terms > 0, mask)


# --- The objective a config names. -------------------------------------------------------------

SAMPLINGS = ('pairs', 'triplets', 'classes')
LOSSES = ('contrastive', 'triplet', 'softmax')

# Embeddings [B, n, D] (pairs, triplets) or [B, D] (P×K classes), labels [B, n] or [B], valid
# [B], the classifier's logits of the softmax baseline (or None) → (loss, {name: value}).
Objective = Callable[
    [jax.Array, jax.Array, jax.Array, jax.Array | None], tuple[jax.Array, dict[str, jax.Array]]
]


def check_objective(sampling: str, loss: str, mining: str, distance: str) -> None:
  """Refuses a combination of sampling, loss, mining and distance that cannot train."""
  for field, value, choices in (('sampling', sampling, SAMPLINGS), ('loss', loss, LOSSES)):
    if value not in choices:
      raise ConfigError(f'Unknown metric.{field} {value!r}; choose one of {", ".join(choices)}.')
  _check_distance(distance)
  wanted = {'pairs': 'contrastive', 'triplets': 'triplet'}.get(sampling)
  if wanted and loss != wanted:
    raise ConfigError(
        f"metric.sampling='{sampling}' trains the {wanted} loss: set metric.loss='{wanted}', "
        "or metric.sampling='classes' (P×K batches) for the others."
    )
  if wanted and mining:
    raise ConfigError(
        f'metric.mining picks pairs or triplets inside P×K batches; with metric.sampling='
        f"'{sampling}' the pipeline forms them, so set metric.mining=''."
    )
  if sampling == 'classes' and loss != 'softmax':
    allowed = MININGS if loss == 'triplet' else MININGS[:2]
    if mining not in allowed:
      raise ConfigError(
          f'metric.mining={mining!r} does not mine for the {loss} loss; choose one of '
          f'{", ".join(allowed)}.'
      )


def objective(sampling: str, loss: str, mining: str, distance: str, margin: float) -> Objective:
  """The training loss of a metric-learning config (checked by `check_objective` first)."""
  check_objective(sampling, loss, mining, distance)

  def fn(embeddings, labels, valid, class_logits):
    if loss == 'softmax':
      targets = jax.nn.one_hot(labels, class_logits.shape[-1])
      xent = optax.softmax_cross_entropy(class_logits, targets)
      hits = jnp.argmax(class_logits, axis=-1) == labels
      return _mean_where(xent, valid), {'top1': _mean_where(hits, valid)}
    if sampling == 'pairs':
      d = distances(embeddings[:, 0], embeddings[:, 1], distance)
      terms = contrastive_loss(d, labels[:, 0] != labels[:, 1], margin)
    elif sampling == 'triplets':
      d_ap = distances(embeddings[:, 0], embeddings[:, 1], distance)
      d_an = distances(embeddings[:, 0], embeddings[:, 2], distance)
      terms = triplet_margin_loss(d_ap, d_an, margin)
    else:
      mined = mined_triplet_loss if loss == 'triplet' else mined_contrastive_loss
      value, active = mined(
          distance_matrix(embeddings, distance), labels, valid, mining=mining, margin=margin
      )
      return value, {'active': active}
    return _mean_where(terms, valid), {'active': _mean_where(terms > 0, valid)}

  return fn
