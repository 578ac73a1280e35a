"""The methods of --mode=compress: each takes the job (compression/run.py) and returns the
report's rows (the original first), its notes and anything else the record keeps.

A method is a few calls into the library that does its work: train_lib/sparsity.py (magnitude
pruning while training), compression/filter_pruning.py, low_rank.py, quantization.py (qwix),
weight_sharing.py, encoding.py and models/binary.py. Rows say what their latency measures, and
where a method saves storage only (XLA has no sparse or bit-packed kernels), they say so.
"""

import dataclasses
import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

import models
from common.errors import ConfigError, did_you_mean
from compression import (
    encoding,
    filter_pruning,
    low_rank,
    quantization,
    report,
    weight_sharing,
)
from models import binary, quantized
from train_lib import init_from, optim, sparsity

Result = tuple[list[report.Row], list[str], dict[str, Any]]

FLOAT_COMPUTE = 'float32, dense'
KEEP_SHARED = {'sparsity': 0.0, 'layer_sparsity': '', 'keep_shared': True}  # centroid fine-tuning
STORAGE_ONLY = 'float32, dense: XLA has no sparse kernels, so the zeros save storage only'


def _original(job) -> tuple[Any, dict[str, Any], report.Row]:
  """The trained run's model, variables and row."""
  variables = init_from.read_run(job.config.init_from).variables
  model = job.model()
  return model, variables, job.row('original', model, variables)


def _value_bits(config: ml_collections.ConfigDict) -> Callable[[str, np.ndarray], int | None]:
  """Bits of each kernel's shared values: conv_bits for conv kernels, dense_bits for dense ones
  (Deep Compression: 8 and 5); biases and BatchNorm stay float32."""
  c = config.compression
  return lambda path, array: (
      (c.conv_bits if np.ndim(array) == 4 else c.dense_bits) if path.endswith('kernel') else None
  )


def _with_params(variables: dict[str, Any], params: Any) -> dict[str, Any]:
  return {**variables, 'params': params}


def _sparsity_notes(params: Any, pattern: str) -> tuple[list[str], dict[str, float]]:
  layers = sparsity.layer_sparsity(params, pattern)
  notes = [
      f'{path}: {zeros / size:.1%} of {size:,} weights are zero'
      for path, (zeros, size) in layers.items()
  ]
  return notes, {path: zeros / size for path, (zeros, size) in layers.items()}


def prune(job) -> Result:
  """Unstructured magnitude pruning on Zhu & Gupta's schedule while fine-tuning."""
  _, _, original = _original(job)
  model, variables = job.train('prune')
  size = encoding.deep_compression_bytes(variables['params'], value_bits=None)['total']
  row = job.row(
      'pruned',
      model,
      variables,
      bytes_=size['sparse_bytes'],
      encoding='sparse: float32 values, relative indices',
      compute=STORAGE_ONLY,
  )
  notes, layers = _sparsity_notes(variables['params'], job.config.pruning.params)
  return [original, row], notes, {'layer_sparsity': layers}


def deep_compression(job) -> Result:
  """Han, Mao & Dally 2016: prune and retrain, share weights by k-means and retrain the
  centroids, Huffman-code the values and the relative indices."""
  config = job.config
  _, _, original = _original(job)
  model, pruned = job.train('prune')
  size = encoding.deep_compression_bytes(pruned['params'], value_bits=None)['total']
  rows = [
      original,
      job.row(
          'pruned',
          model,
          pruned,
          bytes_=size['sparse_bytes'],
          encoding='sparse: float32 values, 8/5-bit relative indices',
          compute=STORAGE_ONLY,
      ),
  ]
  shared, info = weight_sharing.share_weights(pruned['params'], _value_bits(config))
  variables = _with_params(pruned, shared)
  if config.compression.finetune_steps:  # the centroids retrained: equal weights move together
    model, variables = job.train('share', init_variables=variables, pruning=KEEP_SHARED)
  size = encoding.deep_compression_bytes(variables['params'], value_bits=_value_bits(config))
  total = size['total']
  shared_row = job.row(
      'pruned + shared',
      model,
      variables,
      bytes_=total['sparse_bytes'],
      encoding=f'sparse, {config.compression.conv_bits}/{config.compression.dense_bits}-bit '
      'shared values',
      compute=STORAGE_ONLY,
  )
  huffman_row = dataclasses.replace(
      shared_row,
      name='pruned + shared + Huffman',
      bytes=total['huffman_bytes'],
      encoding='as above, Huffman-coded',
  )
  notes, layers = _sparsity_notes(variables['params'], config.pruning.params)
  notes += [
      f'{path}: {t["nonzero"]:,} of {t["params"]:,} kept, {t["value_bits"]}-bit values, '
      f'{t["index_bits"]}-bit indices, {t["huffman_bytes"]:,} bytes after Huffman coding'
      for path, t in size['tensors'].items()
      if t['index_bits']
  ]
  return (
      rows + [shared_row, huffman_row],
      notes,
      {
          'layer_sparsity': layers,
          'tensors': size['tensors'],
          'codebook_sizes': {path: i['codebook_size'] for path, i in info.items()},
      },
  )


def kmeans(job) -> Result:
  """k-means weight sharing alone (Deep Compression §3): each kernel a codebook and indices."""
  config = job.config
  model, variables, original = _original(job)
  shared, _ = weight_sharing.share_weights(variables['params'], _value_bits(config))
  variables = _with_params(variables, shared)
  if config.compression.finetune_steps:
    model, variables = job.train('share', init_variables=variables, pruning=KEEP_SHARED)
  total = encoding.deep_compression_bytes(
      variables['params'], value_bits=_value_bits(config), index_bits=None
  )['total']
  row = job.row(
      'shared',
      model,
      variables,
      bytes_=total['sparse_bytes'],
      encoding=f'{config.compression.conv_bits}/{config.compression.dense_bits}-bit indices '
      'into float32 codebooks',
      compute=f'{FLOAT_COMPUTE} (weights decoded)',
  )
  return [original, row], [], {}


def pq(job) -> Result:
  """Product quantization of dense kernels (Gong et al. 2014)."""
  c = job.config.compression
  model, variables, original = _original(job)
  targets = low_rank.kernels(variables)
  layers = [
      path
      for path, k in targets.items()
      if np.ndim(k) == 2 and (not c.layers or re.fullmatch(c.layers, path))
  ]
  if not layers:
    raise ConfigError(
        f'compression.layers={c.layers!r} names no dense layer of {job.config.model.name}.'
    )
  params = jax.tree.map(np.asarray, variables['params'])
  saved = 0
  for path in layers:
    node = params
    for name in path.split('/'):
      node = node[name]
    kernel = node['kernel']
    if kernel.shape[0] % c.pq_dimension:
      raise ConfigError(
          f'compression.pq_dimension={c.pq_dimension} does not divide the {kernel.shape[0]} '
          f'inputs of {path}; pick a divisor.'
      )
    subvectors = kernel.shape[0] // c.pq_dimension
    _, _, node['kernel'] = weight_sharing.product_quantize(
        kernel, subvectors, c.pq_centroids, job.config.seed
    )
    saved += encoding.float_bytes(kernel.size) - encoding.product_quantization_bytes(
        *kernel.shape, subvectors, c.pq_centroids
    )
  variables = _with_params(variables, params)
  row = job.row(
      'product-quantized',
      model,
      variables,
      bytes_=original.bytes - saved,
      encoding=f'{", ".join(layers)}: sub-vectors of {c.pq_dimension}, {c.pq_centroids} '
      'centroids each',
      compute=f'{FLOAT_COMPUTE} (weights decoded)',
  )
  return [original, row], [], {'layers': layers}


def low_rank_method(job) -> Result:
  """Truncated SVD of dense kernels and factorised convolutions, then fine-tuning."""
  c = job.config.compression
  model, variables, original = _original(job)
  pick = low_rank.ranks_for_energy if c.energy else low_rank.ranks_for_fraction
  ranks = pick(variables, c.energy or c.fraction, c.layers or '.*', conv=c.conv_factorization)
  fields = {'low_rank': ranks, 'low_rank_conv': c.conv_factorization}
  factored = low_rank.low_rank_variables(variables, ranks, conv=c.conv_factorization)
  model = job.model(**fields)
  rows = [original, job.row('factorised', model, factored)]
  if c.finetune_steps:
    model, tuned = job.train('finetune', model=fields, init_variables=factored)
    rows.append(job.row('factorised + fine-tuned', model, tuned))
  return rows, [f'{path}: rank {rank}' for path, rank in ranks.items()], {'ranks': ranks}


def binary_method(job) -> Result:
  """Weights in {−1, +1} (× α per filter with binary_scale) with the Htanh straight-through
  gradient, fine-tuned from the original's float weights (its latent weights)."""
  c = job.config.compression
  fields = {
      'binary': 'weights_and_activations' if c.binary_activations else 'weights',
      'binary_scale': c.binary_scale,
  }
  _, _, original = _original(job)
  model, variables = job.train('binary', model=fields)
  used = binary.binary_weights(model, variables, job.image_shape)
  flat = {
      optim.path_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(variables['params'])
  }
  size = sum(
      math.ceil(x.size / 8) + (4 * x.shape[-1] if c.binary_scale else 0)
      if path.removesuffix('/kernel') in used and path.endswith('kernel')
      else 4 * x.size
      for path, x in flat.items()
  ) + encoding.stored_bytes(variables.get('batch_stats', {}))
  levels = {  # distinct magnitudes in the filter that has the most: 1 for exactly ±α
      path: max(np.unique(f).size for f in np.abs(k).reshape(-1, k.shape[-1]).T)
      for path, k in used.items()
  }
  row = job.row(
      'binary',
      model,
      variables,
      bytes_=size,
      encoding=f'1 bit per weight of {len(used)} layers'
      + (', a float32 α per filter' if c.binary_scale else '')
      + '; first and last layer float32',
      compute=f'{FLOAT_COMPUTE} (±1 weights as floats: no bit-packed kernels in XLA)',
  )
  notes = [
      f'{path}: its forward pass uses {"±α per filter" if c.binary_scale else "±1"} '
      f'({used[path].shape[-1]} filters, {levels[path]} magnitude(s) in each)'
      for path in used
  ]
  return [original, row], notes, {'binarized_layers': sorted(used)}


def distill(job) -> Result:
  """The student trained alone and from the teacher, with the same steps and seed."""
  config = job.config
  teacher = init_from.read_run(config.distill.teacher, 'distill.teacher')
  teacher_model = models.from_config(
      teacher.config['model'],
      job.data.num_classes,
      precision=teacher.config.get('precision', 'float32'),
  )
  rows = [
      job.row(
          f'teacher ({teacher.config["model"]["name"]})',
          teacher_model,
          teacher.variables,
      )
  ]
  for stage, teacher_dir in (('alone', ''), ('distilled', config.distill.teacher)):
    model, variables = job.train(stage, finetune=False, distill={'teacher': teacher_dir})
    rows.append(job.row(f'student {stage}', model, variables))
  d = config.distill
  return (
      rows,
      [
          f'The student ({config.model.name}) trained twice with the same steps and seed '
          f'({config.seed}): alone, and from the teacher at T = {d.temperature} with soft weight '
          f'{d.soft_weight}.'
      ],
      {},
  )


def filter_prune(job) -> Result:
  """L1-norm filter pruning (Li et al. 2017) that rebuilds a narrower model, then fine-tuning."""
  c = job.config.compression
  model, variables, original = _original(job)
  widths, sliced = filter_pruning.prune_filters(
      model, variables, job.image_shape, c.fraction, c.saliency, c.layers or None
  )
  pruned = job.model(pruned_widths=widths)
  rows = [original, job.row('filters pruned', pruned, sliced)]
  if c.finetune_steps:
    pruned, tuned = job.train('finetune', model={'pruned_widths': widths}, init_variables=sliced)
    rows.append(job.row('filters pruned + fine-tuned', pruned, tuned))
  return rows, [f'{path}: {width} channels' for path, width in widths.items()], {'widths': widths}


def _calibration_images(job) -> list[np.ndarray]:
  """The first compression.calibration_batches training batches' images (augmented as trained)."""
  batches = job.data.train_batches(0)
  return [b['image'] for b in itertools.islice(batches, job.config.compression.calibration_batches)]


def _int_row(job, name: str, model, variables) -> report.Row:
  """The row of `model` with `variables` quantized after training (qwix PTQ)."""
  bits = job.config.compression.bits
  qmodel, qvariables = quantization.post_training_quantize(
      model, variables, _calibration_images(job), bits
  )
  return job.row(
      name,
      qmodel,
      qvariables,
      bytes_=encoding.stored_bytes(qvariables),
      encoding=f'int{bits} weights per output channel, int{bits} activations (static scales)',
      weights=variables['params'],
      macs_of=model,
      compute=f'qwix int{bits}',
  )


def ptq(job) -> Result:
  """Post-training quantization with qwix: weights per output channel, activation ranges
  calibrated on training batches."""
  model, variables, original = _original(job)
  return (
      [original, _int_row(job, f'int{job.config.compression.bits} PTQ', model, variables)],
      [],
      {},
  )


def qat(job) -> Result:
  """Quantization-aware fine-tuning with qwix's fake quantization and straight-through gradients,
  then the trained weights quantized for real."""
  bits = job.config.compression.bits
  model, _, original = _original(job)
  qat_model, variables = job.train('qat', model={'quantization_bits': bits})
  rows = [
      original,
      job.row(
          f'QAT int{bits} (fake-quantized)',
          qat_model,
          variables,
          compute=f'float32 with fake int{bits}',
      ),
      _int_row(job, f'QAT → int{bits}', model, variables),
  ]
  return rows, [], {}


METHODS: dict[str, Callable[[Any], Result]] = {
    'deep_compression': deep_compression,
    'prune': prune,
    'filter_prune': filter_prune,
    'low_rank': low_rank_method,
    'ptq': ptq,
    'qat': qat,
    'kmeans': kmeans,
    'pq': pq,
    'binary': binary_method,
    'distill': distill,
}
FINE_TUNED = ('deep_compression', 'prune', 'qat', 'binary')  # nothing without training


def _in(name: str, value: float, low: float, high: float, closed_high: bool = False) -> None:
  if not (low < value <= high if closed_high else low < value < high):
    raise ConfigError(
        f'compression.{name}={value} is outside ({low}, {high}{"]" if closed_high else ")"}.'
    )


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, a method or a setting it cannot use."""
  c = config.compression
  if not c.method:
    raise ConfigError(
        f'--mode=compress needs --config.compression.method, one of {", ".join(METHODS)} '
        "(configs/compression.py:<method> sets it for Caffe's LeNet-5)."
    )
  if c.method not in METHODS:
    raise ConfigError(
        f'Unknown compression.method {c.method!r}.{did_you_mean(c.method, METHODS)} Choose one '
        f'of {", ".join(METHODS)}.'
    )
  if c.method in FINE_TUNED and c.finetune_steps <= 0:
    raise ConfigError(f'compression.method={c.method} trains: set compression.finetune_steps > 0.')
  if c.method in ('prune', 'deep_compression'):
    if not (config.pruning.sparsity or config.pruning.layer_sparsity):
      raise ConfigError(
          f'compression.method={c.method} needs pruning.sparsity in (0, 1) or '
          'pruning.layer_sparsity, e.g. --config.pruning.sparsity=0.9.'
      )
    sparsity.pruning_transform(config.pruning, c.finetune_steps)  # checks every setting
  if c.method == 'filter_prune':
    _in('fraction', c.fraction, 0.0, 1.0)
  if c.method == 'low_rank':
    if c.energy:
      _in('energy', c.energy, 0.0, 1.0, closed_high=True)
    else:
      _in('fraction', c.fraction, 0.0, 1.0, closed_high=True)
  if c.method in ('ptq', 'qat') and c.bits not in quantized.SUPPORTED_BITS:
    raise ConfigError(
        f'compression.bits={c.bits}: {c.method} quantizes to '
        f'{" or ".join(map(str, quantized.SUPPORTED_BITS))} bits (the integer types XLA has).'
    )
  if c.method in ('kmeans', 'deep_compression'):
    for name in ('conv_bits', 'dense_bits'):
      if not 1 <= c[name] <= 16:
        raise ConfigError(f'compression.{name}={c[name]}: shared weights take 1 to 16 bits.')
  if c.method == 'pq' and (c.pq_dimension < 1 or c.pq_centroids < 2):
    raise ConfigError('compression.pq_dimension must be ≥ 1 and pq_centroids ≥ 2.')
  if c.method == 'distill' and not config.distill.teacher:
    raise ConfigError(
        'compression.method=distill needs --config.distill.teacher=<trained workdir>.'
    )


def run(job) -> Result:
  return METHODS[job.config.compression.method](job)
