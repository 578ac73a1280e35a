"""Reading published weight files into {name: numpy array}, whatever library wrote them.

`.safetensors` (timm's and Hugging Face's format; `safetensors`), Keras's `.h5` (Keras 2's
`save_weights` and keras.applications' files) and Keras 3's `.keras` archives (`h5py`), `.npz`,
and PyTorch's pickled `.pth` / `.pt` / `.bin` state dicts, which only torch can read: torch is
an optional extra (an 8 GB install), and a `.pth` file turns into a `.safetensors` one with it
once (`TO_SAFETENSORS`). Names come back as the library wrote them: 'layer1.0.conv1.weight'
(PyTorch), 'block1_conv1/kernel' (Keras; Keras 3's numbered vars are named by the layer's kind).
"""

import io
import json
import os
import re
import zipfile

import numpy as np

from common.errors import UserError

TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt')
KERAS_SUFFIXES = ('.h5', '.hdf5', '.keras')
SUFFIXES = ('.safetensors', '.npz', *KERAS_SUFFIXES, *TORCH_SUFFIXES)

TO_SAFETENSORS = (
    'python -c "import sys, torch; from safetensors.torch import save_file; '
    "sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
    "sd = sd.get('state_dict', sd.get('model', sd)); "
    'save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])" IN.pth OUT.safetensors'
)


class WeightFileError(UserError, ValueError):
  """A weight file that cannot be read: missing, of an unknown kind, truncated or damaged."""


def read(path: str) -> dict[str, np.ndarray]:
  """The tensors of the weight file at `path`, by name."""
  if not os.path.isfile(path):
    raise WeightFileError(f'No weight file at {path}.')
  suffix = next((s for s in SUFFIXES if path.endswith(s)), None)
  if suffix is None:
    raise WeightFileError(
        f'{path}: unknown kind of weight file; give a {", ".join(SUFFIXES)} file.'
    )
  try:
    if suffix == '.safetensors':
      return _safetensors(path)
    if suffix == '.npz':
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    if suffix in KERAS_SUFFIXES:
      return _keras(path)
    return _torch(path)
  except WeightFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (every reader's own error types)
    raise WeightFileError(
        f'{path} could not be read as a {suffix} file ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else "no detail"}); it may be truncated or '
        'damaged: download it again.'
    ) from e


def _safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  return load_file(path)


def _torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise WeightFileError(
        f'{path} is a pickled PyTorch file, which only torch can read, and torch is not '
        'installed (it is optional: an 8 GB install). Turn it into .safetensors once where '
        f'torch is: {TO_SAFETENSORS}'
    ) from None
  state = torch.load(path, map_location='cpu', weights_only=True)
  for wrapper in ('state_dict', 'model', 'model_state_dict'):
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  if not isinstance(state, dict):
    raise WeightFileError(f'{path} holds a {type(state).__name__}, not a state dict of tensors.')
  return {k: v.float().numpy() for k, v in state.items() if hasattr(v, 'numpy')}


# Keras 3 stores a layer's variables as vars/0, vars/1, ... in the order the layer creates them.
_KERAS3_ORDER = {
    'norm': ('gamma', 'beta', 'moving_mean', 'moving_variance'),
    'separable': ('depthwise_kernel', 'pointwise_kernel', 'bias'),
    'depthwise': ('kernel', 'bias'),
    'other': ('kernel', 'bias'),
}


def _keras(path: str) -> dict[str, np.ndarray]:
  import h5py  # pylint: disable=import-outside-toplevel

  if path.endswith('.keras'):
    with zipfile.ZipFile(path) as archive:
      data = io.BytesIO(archive.read('model.weights.h5'))
      config = json.loads(archive.read('config.json'))
    with h5py.File(data, 'r') as f:
      return _keras3(f, _keras3_names(config))
  with h5py.File(path, 'r') as f:
    if 'layer_names' in f.attrs or 'layer_names' in f.get('model_weights', f).attrs:
      return _keras2(f.get('model_weights', f))
  raise WeightFileError(
      f'{path} is a Keras 3 .weights.h5 file, which stores no layer names (only conv2d_7, '
      'batch_normalization_3, ...): convert the .keras file saved with it (model.save), which '
      'carries them, or the Keras 2 .h5 file that keras.applications publishes.'
  )


def _keras2(f) -> dict[str, np.ndarray]:
  """Keras 2's layout: a group per layer, datasets named by their 'weight_names' attribute."""
  tensors = {}
  for layer in f.attrs['layer_names']:
    group = f[_text(layer)]
    for weight in group.attrs.get('weight_names', []):
      name = _text(weight).split(':')[0]  # 'block1_conv1/kernel:0'
      layer_name = _text(layer)
      tensors[f'{layer_name}/{name.rsplit("/", 1)[-1]}'] = np.asarray(group[_text(weight)])
  return tensors


def _keras3_names(config: dict) -> dict[str, str]:
  """Keras 3 files name each layer's weights by its class and rank among the layers of that
  class (conv2d, conv2d_1, ...); the model's config.json gives the real names in that order."""
  names, counts = {}, {}
  for layer in config['config']['layers']:
    kind = re.sub(r'\W+', '', layer['class_name'])
    kind = re.sub(r'(.)([A-Z][a-z]+)', r'\1_\2', kind)
    kind = re.sub(r'([a-z])([A-Z])', r'\1_\2', kind).lower()  # Keras's to_snake_case
    count = counts.get(kind, 0)
    counts[kind] = count + 1
    names[kind if count == 0 else f'{kind}_{count}'] = layer['config']['name']
  return names


def _keras3(f, names: dict[str, str]) -> dict[str, np.ndarray]:
  """Keras 3's layout: layers/<class-based name>/vars/<i>; the tensors' names come from the
  layer's real name and its kind."""
  tensors = {}
  for stored, group in f['layers'].items():
    name = names.get(stored, stored)
    if 'vars' not in group or not len(group['vars']):
      continue
    arrays = [np.asarray(group['vars'][str(i)]) for i in range(len(group['vars']))]
    leaves = _KERAS3_ORDER[_keras3_kind(arrays)]
    tensors.update({f'{name}/{leaf}': a for leaf, a in zip(leaves, arrays)})
  return tensors


def _keras3_kind(arrays: list[np.ndarray]) -> str:
  if len(arrays) == 4 and all(a.ndim == 1 for a in arrays):
    return 'norm'
  if len(arrays) >= 2 and arrays[0].ndim == 4 and arrays[1].ndim == 4:
    return 'separable'
  return 'other'


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)
