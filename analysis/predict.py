"""--mode=predict: a trained or converted workdir's top classes for one image file."""

import jax
import numpy as np

from analysis.workdirs import load_trained
from common.errors import UserError


def top_classes(workdir: str, image: str, k: int = 5) -> list[tuple[str, int, float]]:
  """(class name, class index, probability) of the `k` likeliest classes for the image file
  `image`, preprocessed by the workdir's evaluation ops (for a converted model: its source's
  resize, crop, mean and std)."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow)

  trained = load_trained(workdir)
  if trained.config.get('task', 'classification') == 'segmentation':
    raise UserError(
        f'{workdir} holds a segmentation run, which labels pixels, not images: --mode=predict '
        'ranks the classes of a classifier; --mode=evaluate scores this run.'
    )
  model_image, _ = input_pipeline.model_input(trained.config.dataset, image, trained.image_shape)
  logits = trained.model.apply(trained.variables, model_image[None], train=False)
  probabilities = np.asarray(jax.nn.softmax(logits[0]))
  names = input_pipeline.class_names(trained.config.dataset, trained.num_classes)
  best = np.argsort(-probabilities)[:k]
  return [(names[i], int(i), float(probabilities[i])) for i in best]


def predict_text(workdir: str, image: str, k: int = 5) -> str:
  """The lines --mode=predict prints: the image, then one class per line, likeliest first."""
  rows = top_classes(workdir, image, k)
  width = max(len(name) for name, _, _ in rows)
  lines = [f'{image}, by {workdir}:']
  lines += [f'  {p:7.2%}  {name:<{width}}  (class {i})' for name, i, p in rows]
  return '\n'.join(lines)
