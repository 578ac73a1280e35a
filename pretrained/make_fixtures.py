"""Makes the conversion fixtures (tests/fixtures/pretrained/<model>.json) with the reference
libraries themselves; rerun it where they are installed:

  pip install torch torchvision timm          # or keras (with TensorFlow) for the Keras models
  python -m pretrained.make_fixtures --library=torchvision [--models=resnet50,...]
  python -m pretrained.make_fixtures --library=timm
  python -m pretrained.make_fixtures --library=keras

For each model it builds the reference network (no download: weights=None / pretrained=False),
records its tensors' names and shapes with a range for each (`seeded.ranges`: He-uniform weights,
BatchNorm statistics away from 0 and 1), loads the tensors `seeded.tensors` draws from those
ranges, and records the reference's eval-mode logits for two seeded images. A fixture holds no
weights: tests/test_pretrained_*.py draws the same tensors, converts them with the project's
converter and compares the logits, without the reference library.

torchvision's GoogLeNet and Inception v3 are built with transform_input=False: with their
published weights torchvision sets it True, which is the same as normalising the pixels with
mean = std = 0.5 instead of ImageNet's, as sources.py's preprocessing for them does.
"""

import json
import os
import platform

import numpy as np
from absl import app, flags

from configs import pretrained as pretrained_config
from pretrained import seeded, sources

FLAGS = flags.FLAGS
flags.DEFINE_enum('library', None, ['torchvision', 'timm', 'keras'], 'Whose models to make.')
flags.DEFINE_list('models', None, 'Only these models (default: every one of the library).')
flags.DEFINE_string('output', 'tests/fixtures/pretrained', 'Where the fixtures go.')
SEED = 0
BATCH = 2


def _torch_reference(source: sources.Source):
  import timm  # pylint: disable=import-outside-toplevel
  import torchvision  # pylint: disable=import-outside-toplevel

  if source.library == sources.TIMM:
    return timm.create_model(source.name.split('.')[0], pretrained=False), timm.__version__
  extra = {'aux_logits': True, 'init_weights': False, 'transform_input': False}
  kwargs = extra if source.name in ('googlenet', 'inception_v3') else {}
  model = getattr(torchvision.models, source.name)(weights=None, **kwargs)
  return model, torchvision.__version__


def _torch_fixture(model_name: str, source: sources.Source) -> dict:
  import torch  # pylint: disable=import-outside-toplevel

  model, version = _torch_reference(source)
  spec = []
  for name, value in model.state_dict().items():
    if not value.is_floating_point():
      continue  # num_batches_tracked
    shape = tuple(value.shape)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    spec.append((name, shape, *_rounded(seeded.ranges(name, shape, fan_in))))
  weights = seeded.tensors(spec, SEED)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
  model.eval()
  images = torch.from_numpy(_images(model_name).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    _calibrate_batch_norm(model, images, spec)
    logits = model(images).numpy()
  return _fixture(model_name, source, spec, logits, f'torch {torch.__version__}, {version}')


def _redraw_statistics(spec, index, names, mean: float, var: float) -> dict[str, np.ndarray]:
  """One BatchNorm's running mean and variance, their ranges in `spec` set around the `mean`
  and `var` its input really has, drawn again; `names` maps (mean leaf, variance leaf), in that
  order, to the tensors' names in `spec`. Returns {leaf: values}."""
  ranges = ((mean - 0.2 * var**0.5, mean + 0.2 * var**0.5), (0.5 * var, 1.5 * var))
  drawn = {}
  for (leaf, name), (low, high) in zip(names.items(), ranges, strict=True):
    spec[index[name]] = (name, spec[index[name]][1], *_rounded((low, high)))
    drawn[leaf] = seeded.uniform(SEED, *spec[index[name]])
  return drawn


def _calibrate_batch_norm(model, images, spec) -> None:
  """Redraws each BatchNorm's running statistics, in forward order, around the mean and variance
  its input really has on the seeded images (a range per layer, in `spec`), so that activations
  keep their scale through a deep network as they do with trained statistics."""
  import torch  # pylint: disable=import-outside-toplevel

  index = {name: i for i, (name, *_) in enumerate(spec)}

  def redraw(module, args, prefix):
    x = args[0].double()
    mean, var = float(x.mean((0, 2, 3)).mean()), float(x.var((0, 2, 3)).mean())
    names = {leaf: f'{prefix}.{leaf}' for leaf in ('running_mean', 'running_var')}
    for leaf, value in _redraw_statistics(spec, index, names, mean, var).items():
      getattr(module, leaf).copy_(torch.from_numpy(value))

  hooks = [
      module.register_forward_pre_hook(lambda m, a, p=prefix: redraw(m, a, p))
      for prefix, module in model.named_modules()
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)  # pylint: disable=protected-access
  ]
  model(images)
  for hook in hooks:
    hook.remove()


def _keras_fixture(model_name: str, source: sources.Source) -> dict:
  import keras  # pylint: disable=import-outside-toplevel

  keras.backend.clear_session()  # unnamed layers count from conv2d again
  model = getattr(keras.applications, source.name)(weights=None, classifier_activation=None)
  spec = []
  for variable in model.weights:
    name, shape = variable.path, tuple(variable.shape)
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    if 'depthwise' in name or (len(shape) == 4 and shape[-1] == 1):
      fan_in = int(np.prod(shape[:2]))
    spec.append((name, shape, *_rounded(seeded.ranges(name, shape, fan_in))))
  weights = seeded.tensors(spec, SEED)
  model.set_weights([weights[v.path] for v in model.weights])
  _calibrate_keras_batch_norm(model, _images(model_name), spec)
  weights = seeded.tensors(spec, SEED)
  model.set_weights([weights[v.path] for v in model.weights])
  _check_keras_readers(model, weights)
  logits = np.asarray(model(_images(model_name), training=False))
  return _fixture(model_name, source, spec, logits, f'keras {keras.__version__}')


def _calibrate_keras_batch_norm(model, images, spec) -> None:
  """`_calibrate_batch_norm` for a Keras model: each BatchNormalization's moving statistics
  redrawn, in order, around what its input really is on the seeded images."""
  import keras  # pylint: disable=import-outside-toplevel

  index = {name: i for i, (name, *_) in enumerate(spec)}
  for layer in model.layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    x = np.asarray(keras.Model(model.inputs, layer.input)(images, training=False), np.float64)
    mean, var = float(x.mean((0, 1, 2)).mean()), float(x.var((0, 1, 2)).mean())
    names = {leaf: f'{layer.name}/{leaf}' for leaf in ('moving_mean', 'moving_variance')}
    for leaf, value in _redraw_statistics(spec, index, names, mean, var).items():
      getattr(layer, leaf).assign(value)


def _check_keras_readers(model, weights) -> None:
  """The project's reader gives back exactly what Keras itself saves: a .keras archive, and
  the Keras 2 .h5 layout keras.applications publishes its weights in."""
  import tempfile  # pylint: disable=import-outside-toplevel

  import h5py  # pylint: disable=import-outside-toplevel
  from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=import-outside-toplevel

  from pretrained import weight_files  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as tmp:
    for name in ('m.keras', 'w.h5'):
      path = os.path.join(tmp, name)
      if name.endswith('.keras'):
        model.save(path)
      else:
        with h5py.File(path, 'w') as f:
          legacy_h5_format.save_weights_to_hdf5_group(f, model)
      read = weight_files.read(path)
      keys = {k.replace('/depthwise_kernel', '/kernel') for k in read}
      assert keys >= {k.replace('/depthwise_kernel', '/kernel') for k in weights}, name
      for key, value in weights.items():
        got = read.get(key, read.get(key.replace('/kernel', '/depthwise_kernel')))
        np.testing.assert_array_equal(got, value, err_msg=f'{name}: {key}')


def _rounded(values) -> tuple[float, ...]:
  return tuple(float(f'{v:.8g}') for v in values)  # as the fixture stores them


def _images(model_name: str) -> np.ndarray:
  size = pretrained_config.MODELS[model_name].image_size
  return seeded.uniform(SEED, 'images', (BATCH, size, size, 3), -2.0, 2.0)


def _fixture(model_name, source, spec, logits, versions) -> dict:
  return {
      'model': model_name,
      'library': source.library,
      'reference': source.name,
      'made_with': f'{versions}, numpy {np.__version__}, Python {platform.python_version()}',
      'seed': SEED,
      'images': list(_images(model_name).shape),
      'logits': [[float(f'{v:.8g}') for v in row] for row in np.asarray(logits, np.float64)],
      'tensors': [[n, list(s), lo, hi] for n, s, lo, hi in spec],
  }


def main(_) -> None:
  libraries = {'torchvision': sources.TORCHVISION, 'timm': sources.TIMM, 'keras': sources.KERAS}
  wanted = libraries[FLAGS.library]
  names = FLAGS.models or sorted(n for n, s in sources.SOURCES.items() if s.library == wanted)
  os.makedirs(FLAGS.output, exist_ok=True)
  for name in names:
    source = sources.SOURCES[name]
    make = _keras_fixture if source.library == sources.KERAS else _torch_fixture
    fixture = make(name, source)
    path = os.path.join(FLAGS.output, f'{name}.json')
    with open(path, 'w') as f:
      json.dump(fixture, f, separators=(',', ':'))
      f.write('\n')
    print(f'{path}: {len(fixture["tensors"])} tensors, logits {np.ptp(fixture["logits"]):.3g} wide')


if __name__ == '__main__':
  flags.mark_flag_as_required('library')
  app.run(main)
