"""A reference's published weights → this zoo's variables (params and batch_stats), checked.

Every family converts the same way once `sources.py` has named its layers: a kernel goes from
PyTorch's OIHW (grouped and depthwise ones included: O, I/groups, H, W) or Keras's HWIO (its
depthwise H, W, C, 1) to flax's HWIO, a dense weight from (out, in) to (in, out) and, where a
flatten feeds it, from NCHW's (channel, row, column) input order to NHWC's (row, column,
channel); BatchNorm's weight/bias/running_mean/running_var (Keras: gamma/beta/moving_mean/
moving_variance) become scale/bias/mean/var. A 1×1 convolution standing in for a dense layer
(timm's SE gates, Keras MobileNet's classifier) is reshaped. Whatever does not fit stops the
conversion with one message naming the layer; nothing is written before all of it fits.
"""

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

import models
from common.errors import UserError
from pretrained import sources
from pretrained.sources import KERAS, Source

# Keys a PyTorch state dict carries that are not weights.
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$')
_TORCH_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}
_TORCH_STATS = {'mean': 'running_mean', 'var': 'running_var'}
_KERAS_LEAVES = {'scale': 'gamma', 'mean': 'moving_mean', 'var': 'moving_variance'}
# Heads used only in training: weights without them still convert, the heads left initialised.
_TRAINING_ONLY = re.compile(r'^(aux\d?|AuxLogits)\b')


class ConversionError(UserError, ValueError):
  """A weight file that does not fit the model: another architecture, a missing tensor, a shape."""


def _init(model_name: str):
  """A function initialising `model_name` as its source computes it (training heads too)."""
  entry = models.entry(model_name)
  model = sources.create_model(model_name)
  size, channels = entry.native_input.image_size, entry.native_input.channels
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  return lambda: model.init(rngs, jnp.zeros((1, size, size, channels)), train=True)


def model_shapes(model_name: str) -> dict[str, Any]:
  """The variables of `model_name` (1000 classes, training heads included) as shape structs."""
  return jax.eval_shape(_init(model_name))


def _their_key(
    source: Source, collection: str, layer: str, leaf: str, shape, norms: set[str]
) -> list[str]:
  """The keys the reference may store our (collection, layer, leaf) under, most likely first."""
  theirs = source.layer(layer)
  if source.library != KERAS:
    name = _TORCH_STATS[leaf] if collection == 'batch_stats' else _TORCH_LEAVES[leaf]
    return [f'{theirs}.{name}']
  if leaf == 'kernel':
    part = layer.rsplit('/', 1)[-1]
    if part in ('depthwise', 'pointwise'):  # one Keras SeparableConv2D holds both
      return [f'{theirs}/{part}_kernel']
    if len(shape) == 4 and shape[2] == 1 and shape[3] > 1:  # depthwise (Keras 2 and 3 names)
      return [f'{theirs}/depthwise_kernel', f'{theirs}/kernel']
    return [f'{theirs}/kernel']
  if leaf == 'bias' and layer in norms:
    return [f'{theirs}/beta']
  return [f'{theirs}/{_KERAS_LEAVES.get(leaf, leaf)}']


def _to_ours(
    array: np.ndarray, shape: tuple[int, ...], source: Source, layer: str, key: str
) -> np.ndarray:
  """The reference's tensor in our layout, or a ConversionError naming the layer."""
  array = np.asarray(array, np.float32)
  stored = array.shape
  torch = source.library != KERAS
  if len(shape) == 4 and array.ndim == 4:
    if torch:
      array = array.transpose(2, 3, 1, 0)
    elif array.shape[3] == 1 and shape[2] == 1:  # Keras depthwise (H, W, C, 1) → (H, W, 1, C)
      array = array.transpose(0, 1, 3, 2)
  elif len(shape) == 2 and array.ndim == 4 and array.shape[-2:] == (1, 1) and torch:
    array = array[:, :, 0, 0].T  # a 1×1 conv as a dense layer (timm's SE gates)
  elif len(shape) == 2 and array.ndim == 4 and array.shape[:2] == (1, 1):
    array = array[0, 0]  # Keras's 1×1 conv classifier
  elif len(shape) == 2 and array.ndim == 2 and torch:
    array = array.T
    if layer in source.flattened and array.shape == shape:
      height, width = source.flattened[layer]
      channels = shape[0] // (height * width)
      array = array.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(shape)
  if array.shape != tuple(shape):
    raise ConversionError(
        f'{key} has shape {stored} ({array.shape} in our layout), but {layer} needs '
        f'{tuple(shape)}: the file holds another variant of the architecture (check the model '
        'name, and that the weights have 1000 classes). Nothing was written.'
    )
  return array


def _keras_unnamed(source: Source, tensors: dict[str, np.ndarray], ours: list[str]) -> dict:
  """Keras's unnamed layers (conv2d, conv2d_1, ...) matched in order to our layers that
  `source.layer` names '<kind>#<block>'."""
  renamed = {}
  for kind in ('conv2d', 'batch_normalization'):
    wanted = sorted(
        {source.layer(l) for l in ours if source.layer(l).startswith(f'{kind}#')},
        key=lambda n: int(n.split('#')[1]),
    )
    pattern = re.compile(rf'^{kind}(_(\d+))?$')
    present = sorted(
        {k.split('/')[0] for k in tensors if pattern.match(k.split('/')[0])},
        key=lambda n: int(pattern.match(n).group(2) or 0),
    )
    renamed.update(zip(wanted, present))
  return renamed


def convert(model_name: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
  """`tensors` (a reference's names → arrays, as `weight_files.read` gives them) as the
  variables of the registered `model_name`: {'params': ..., 'batch_stats': ...} of float32
  numpy arrays. Training-only heads missing from the file are left to the initialisers.

  Raises ConversionError naming the first layer that does not fit: weights of another
  architecture, a missing tensor, a shape that does not fit, tensors left over.
  """
  source = sources.source(model_name)
  tensors = _strip_wrappers(tensors)
  shapes = model_shapes(model_name)
  flat = flax.traverse_util.flatten_dict(shapes, sep='/')
  layers = [path.split('/', 1)[1].rsplit('/', 1)[0] for path in flat]
  unnamed = _keras_unnamed(source, tensors, layers) if source.library == KERAS else {}
  norms = {p.split('/', 1)[1].rsplit('/', 1)[0] for p in flat if p.startswith('batch_stats/')}
  converted, used, missing = {}, set(), []
  for path, struct in flat.items():
    collection, rest = path.split('/', 1)
    layer, leaf = rest.rsplit('/', 1)
    keys = _their_key(source, collection, layer, leaf, struct.shape, norms)
    keys = [_rename_unnamed(k, unnamed) for k in keys]
    found = next((k for k in keys if k in tensors), None)
    if found is None:
      missing.append((path, keys[0]))
      continue
    used.add(found)
    converted[path] = _to_ours(tensors[found], struct.shape, source, layer, found)
  required = [(p, k) for p, k in missing if not _TRAINING_ONLY.match(p.split('/', 1)[1])]
  if required:
    _refuse_missing(model_name, source, required, len(flat), tensors)
  left = sorted(k for k in tensors if k not in used and not _IGNORED.search(k))
  left = [k for k in left if not _TRAINING_ONLY.match(k)]
  if left:
    raise ConversionError(
        f'The file has {len(left)} tensor(s) that {model_name} has no place for ('
        f'{", ".join(left[:3])}{", ..." if len(left) > 3 else ""}): it holds another variant of '
        f'{source.title}. Nothing was written.'
    )
  if missing:  # training-only heads: fresh, as a new run would start them
    fresh = _initial_variables(model_name)
    converted.update({p: fresh[p] for p, _ in missing})
  return flax.traverse_util.unflatten_dict(converted, sep='/')


def _rename_unnamed(key: str, unnamed: dict[str, str]) -> str:
  layer, sep, leaf = key.partition('/')
  return unnamed.get(layer, layer) + sep + leaf


def _strip_wrappers(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the 'module.' prefix of weights saved from DataParallel / DistributedDataParallel."""
  if tensors and all(k.startswith('module.') for k in tensors):
    return {k.removeprefix('module.'): v for k, v in tensors.items()}
  return tensors


def _refuse_missing(model_name, source, missing, total, tensors) -> None:
  path, key = missing[0]
  example = ', '.join(list(tensors)[:2])
  if len(missing) > total // 2:
    raise ConversionError(
        f'This file does not hold {source.title} weights: '
        f'{len(missing)} of the {total} tensors {model_name} needs are not in it (the first, '
        f'{key!r}, for {path}; the file has e.g. {example}). Convert it with the model it was '
        'saved from. Nothing was written.'
    )
  more = f' and {len(missing) - 1} more' if len(missing) > 1 else ''
  raise ConversionError(
      f'The file lacks {key!r} (for {path}){more}; is it complete, and saved from '
      f'{source.title}? Nothing was written.'
  )


def _initial_variables(model_name: str) -> dict[str, np.ndarray]:
  variables = jax.jit(_init(model_name))()
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(variables, sep='/').items()}
