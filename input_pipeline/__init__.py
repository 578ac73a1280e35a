"""Input pipeline: the only package that imports TensorFlow."""

import tensorflow as tf

from input_pipeline.datasets import DatasetError, get_spec, registered_names
from input_pipeline.examples import class_names, model_input
from input_pipeline.metric_pipeline import MetricPipeline
from input_pipeline.pipeline import InputPipeline, check_preprocess, input_signature, pad_batch

__all__ = [
    'DatasetError',
    'InputPipeline',
    'MetricPipeline',
    'check_preprocess',
    'class_names',
    'get_spec',
    'hide_accelerators_from_tf',
    'input_signature',
    'model_input',
    'pad_batch',
    'registered_names',
]


def hide_accelerators_from_tf() -> None:
  """Keeps tf.data on the CPU so that TensorFlow takes no GPU/TPU memory from JAX."""
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
