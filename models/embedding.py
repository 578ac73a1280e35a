"""Any registered backbone as an embedding network, for Siamese and triplet training.

The backbone is built with `num_classes=embedding_dim`, so its classifier becomes the linear
projection to the embedding (FaceNet's "deep architecture → L2 normalisation → embedding"), and
the embedding is optionally L2-normalised. The twin towers of a Siamese network and the three of
a triplet network are this one module applied to every image of a pair or triplet: the weights
are shared because there is only one set.

Families whose classifier is a convolution followed by a ReLU and global pooling (NIN,
SqueezeNet) give embeddings with non-negative entries; every other family ends in a plain dense
layer.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / ‖x‖ along the last axis (x itself where ‖x‖ < eps)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class EmbeddingNet(nn.Module):
  """backbone (its classifier projecting to the embedding) → optional L2 normalisation.

  `num_classes` > 0 adds a linear classifier on the un-normalised embedding, used only in
  training (it publishes `class_logits` to the 'intermediates' collection): the softmax
  baseline, whose embedding is then evaluated exactly as the metric-learning ones are.
  """

  backbone: nn.Module
  normalize: bool = True
  num_classes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    embedding = self.backbone(x, train=train).astype(jnp.float32)
    if self.num_classes and (train or self.is_initializing()):
      logits = nn.Dense(self.num_classes, name='classifier')(embedding)
      self.sow('intermediates', 'class_logits', logits)
    return l2_normalize(embedding) if self.normalize else embedding
