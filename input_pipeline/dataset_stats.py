"""`python main.py --mode=dataset_stats`: the training split's statistics, into the workdir."""

import logging
import os

import ml_collections
import numpy as np

from common.errors import ConfigError
from input_pipeline import pipeline, stats


def write_dataset_stats(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Computes `config.dataset`'s statistics into `workdir`; returns the .npz path for the ops.

  The images are the training split as the eval pipeline's first statistics op sees them.
  A workdir that already holds statistics of the same images is reused, never overwritten;
  one holding statistics of other images is refused.
  """
  batches, source = pipeline.stats_images(config.dataset)
  path = os.path.join(workdir, stats.NPZ_NAME)
  if os.path.exists(path):
    existing = stats.load(path).source
    if existing != source:
      raise ConfigError(
          f'{path} already holds the statistics of {existing}, not of {source}. '
          'Choose another --workdir, or delete that file to recompute.'
      )
    logging.info('%s already holds these statistics; nothing to do.', path)
    return path
  logging.info('Computing the statistics of %s.', source)
  result = stats.compute(batches, source=source)
  path = stats.save(result, workdir)
  with np.printoptions(precision=4, suppress=True):
    logging.info(
        '%d images: mean %s, std %s, RGB eigval %s; written to %s (and %s).',
        result.num_examples,
        result.mean,
        result.std,
        result.eigval,
        path,
        stats.JSON_NAME,
    )
  return path
