"""A few of the trainer's own train steps of a registered model on the offline digits, without
the input pipeline: the cheapest real run that shows a new model learns (one compile)."""

import functools

import jax
import numpy as np
from model_testing import fast_jit, host_state

import models
from input_pipeline import offline_digits
from train_lib import losses, steps


def digits_batch(count: int, size: int = 28, channels: int = 1) -> dict[str, np.ndarray]:
  """The first `count` training digits, standardised, resized to `size`² and repeated to
  `channels`, as a batch the train step takes."""
  images, labels = offline_digits.load_arrays()
  index = offline_digits.stratified_split(labels)['train'][:count]
  x = images[index].astype(np.float32) / 255.0
  x = (x - x.mean()) / x.std()
  if size != x.shape[1]:
    x = np.asarray(jax.image.resize(x, (count, size, size, 1), 'bilinear'))
  return {
      'image': np.repeat(x, channels, axis=-1),
      'label': labels[index].astype(np.int32),
      'mask': np.ones(count, bool),
  }


def train_losses(
    name: str,
    *,
    size: int = 28,
    channels: int = 1,
    num_steps: int = 3,
    batch: int = 8,
    lr: float = 0.01,
    **fields,
) -> list[float]:
  """The loss of each of `num_steps` SGD steps (steps.train_step) of `name` on one batch of
  digits, the same batch every step, so a model that learns shows a falling loss."""
  model = models.create_model(name, num_classes=10, **fields)
  data = digits_batch(batch, size, channels)
  state = host_state(model, data['image'].shape[1:])
  step = fast_jit(
      functools.partial(
          steps.train_step,
          loss_fn=losses.get_loss('softmax_xent'),
          learning_rate_fn=lambda _: lr,
      )
  )
  history = []
  for _ in range(num_steps):
    state, metrics = step(state, data)
    assert metrics['finite'] == 1
    history.append(float(metrics['loss']))
  return history
