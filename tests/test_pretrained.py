"""Pretrained weights: reading the file formats, and converting, refusing what does not fit
(tests/test_pretrained_workdir.py: a converted model as a workdir)."""

import dataclasses
import io
import json
import os
import sys
import zipfile
import zlib

import h5py
import jax
import numpy as np
import pretrained_testing
import pytest
from safetensors.numpy import save_file

from common.errors import ConfigError
from configs import pretrained as pretrained_config
from pretrained import convert, seeded, sources, weight_files


@pytest.fixture(scope='module')
def resnet18_tensors():
  return pretrained_testing.reference_tensors('resnet18')


# ---- weight files ----------------------------------------------------------------------------


def _keras2_h5(path, tensors):
  """Keras 2's save_weights layout: a group per layer, 'layer_names' and 'weight_names'."""
  layers = sorted({k.split('/')[0] for k in tensors})
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [n.encode() for n in layers]
    for layer in layers:
      group = f.create_group(layer)
      names = [k for k in tensors if k.split('/')[0] == layer]
      group.attrs['weight_names'] = [f'{k}:0'.encode() for k in names]
      for k in names:
        group[f'{k}:0'] = tensors[k]


def test_every_format_reads_back_what_was_written(tmp_path, resnet18_tensors):
  some = dict(list(resnet18_tensors.items())[:6])
  save_file(some, str(tmp_path / 'w.safetensors'))
  np.savez(tmp_path / 'w.npz', **some)
  keras = {'conv1/kernel': some['conv1.weight'], 'conv1_bn/gamma': some['bn1.weight']}
  _keras2_h5(tmp_path / 'w.h5', keras)
  for name, expected in (('w.safetensors', some), ('w.npz', some), ('w.h5', keras)):
    read = weight_files.read(str(tmp_path / name))
    assert sorted(read) == sorted(expected), name
    for key, value in expected.items():
      np.testing.assert_array_equal(read[key], value)


def test_a_keras3_archive_gets_its_layer_names_from_its_config(tmp_path):
  """Keras 3 files name weights by class and rank (conv2d, batch_normalization_1): the archive's
  config.json gives the real names in that order."""
  layers = [('InputLayer', 'input'), ('Conv2D', 'stem'), ('BatchNormalization', 'stem_bn')]
  layers += [('Conv2D', 'head')]
  config = {'config': {'layers': [{'class_name': c, 'config': {'name': n}} for c, n in layers]}}
  weights = io.BytesIO()
  rng = np.random.default_rng(0)
  arrays = {
      'conv2d': [rng.normal(size=(3, 3, 3, 4))],
      'batch_normalization': [rng.normal(size=4) for _ in range(4)],
      'conv2d_1': [rng.normal(size=(1, 1, 4, 2)), rng.normal(size=2)],
  }
  with h5py.File(weights, 'w') as f:
    for layer, values in arrays.items():
      for i, value in enumerate(values):
        f[f'layers/{layer}/vars/{i}'] = value
  with zipfile.ZipFile(tmp_path / 'm.keras', 'w') as archive:
    archive.writestr('config.json', json.dumps(config))
    archive.writestr('model.weights.h5', weights.getvalue())
  read = weight_files.read(str(tmp_path / 'm.keras'))
  assert sorted(read) == [
      'head/bias',
      'head/kernel',
      'stem/kernel',
      'stem_bn/beta',
      'stem_bn/gamma',
      'stem_bn/moving_mean',
      'stem_bn/moving_variance',
  ]
  np.testing.assert_array_equal(read['stem_bn/moving_mean'], arrays['batch_normalization'][2])
  np.testing.assert_array_equal(read['head/kernel'], arrays['conv2d_1'][0])


def test_unreadable_files_are_refused_with_what_to_do(tmp_path, monkeypatch, resnet18_tensors):
  path = tmp_path / 'w.safetensors'
  save_file(dict(list(resnet18_tensors.items())[:4]), str(path))
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a download cut short
  with pytest.raises(weight_files.WeightFileError, match='truncated or damaged: download it again'):
    weight_files.read(str(path))
  with pytest.raises(weight_files.WeightFileError, match='No weight file'):
    weight_files.read(str(tmp_path / 'absent.safetensors'))
  (tmp_path / 'w.onnx').write_bytes(b'0')
  with pytest.raises(weight_files.WeightFileError, match='unknown kind of weight file'):
    weight_files.read(str(tmp_path / 'w.onnx'))
  (tmp_path / 'w.pth').write_bytes(b'0')
  monkeypatch.setitem(sys.modules, 'torch', None)  # torch is optional: not installed here
  with pytest.raises(weight_files.WeightFileError, match='only torch can read') as refused:
    weight_files.read(str(tmp_path / 'w.pth'))
  assert 'save_file' in str(refused.value)  # the one-line conversion to .safetensors


# ---- conversion -------------------------------------------------------------------------------


def test_weights_of_another_architecture_are_refused_naming_a_layer(resnet18_tensors):
  with pytest.raises(convert.ConversionError, match='does not hold torchvision vgg11 weights'):
    convert.convert('vgg11', resnet18_tensors)
  with pytest.raises(convert.ConversionError, match=r"lacks 'layer1\.2\..* and 79 more"):
    convert.convert('resnet34', resnet18_tensors)


def test_a_missing_tensor_a_wrong_shape_and_leftovers_are_refused(resnet18_tensors):
  missing = {k: v for k, v in resnet18_tensors.items() if k != 'layer2.0.bn1.running_var'}
  with pytest.raises(convert.ConversionError) as refused:
    convert.convert('resnet18', missing)
  assert "'layer2.0.bn1.running_var' (for batch_stats/layer2_0/bn1/var)" in str(refused.value)
  ten_classes = {**resnet18_tensors, 'fc.weight': np.zeros((10, 512), np.float32)}
  with pytest.raises(
      convert.ConversionError,
      match=r'fc\.weight has shape \(10, 512\) \(\(512, 10\) in our layout\), but fc needs',
  ):
    convert.convert('resnet18', ten_classes)
  extra = {**resnet18_tensors, 'layer5.0.conv1.weight': np.zeros((1,), np.float32)}
  with pytest.raises(convert.ConversionError, match='1 tensor.*no place for.*layer5'):
    convert.convert('resnet18', extra)


def test_models_without_published_weights_are_refused():
  with pytest.raises(ConfigError, match='resnet20 has no published weights.*Convertible'):
    sources.source('resnet20')


def test_dataparallel_prefixes_are_dropped(resnet18_tensors):
  plain = convert.convert('resnet18', resnet18_tensors)
  wrapped = convert.convert('resnet18', {f'module.{k}': v for k, v in resnet18_tensors.items()})
  jax.tree.map(np.testing.assert_array_equal, plain, wrapped)


def test_the_fixtures_catch_a_wrong_batch_norm_statistic_or_flatten_order(monkeypatch):
  """The equality tests can fail: mean and variance swapped in one BN layer, or AlexNet's first
  dense layer read in NCHW order, move the logits far beyond the tolerance."""
  variables = convert.convert('resnet18', pretrained_testing.reference_tensors('resnet18'))
  stats = variables['batch_stats']['layer3_1']['bn2']
  stats['mean'], stats['var'] = stats['var'], stats['mean']
  assert pretrained_testing.relative_difference('resnet18', variables) > 1e-2
  unflattened = dataclasses.replace(sources.SOURCES['alexnet'], flattened={})
  monkeypatch.setitem(sources.SOURCES, 'alexnet', unflattened)
  variables = convert.convert('alexnet', pretrained_testing.reference_tensors('alexnet'))
  assert pretrained_testing.relative_difference('alexnet', variables) > 1e-2


@pytest.mark.slow  # ~24 s: a full-size GoogLeNet conversion
def test_auxiliary_heads_missing_from_a_file_are_left_initialised():
  tensors = pretrained_testing.reference_tensors('googlenet')
  without_aux = {k: v for k, v in tensors.items() if not k.startswith('aux')}
  variables = convert.convert('googlenet', without_aux)
  assert variables['params']['aux1']['fc2']['kernel'].shape == (1024, 1000)
  assert np.all(np.isfinite(variables['params']['aux1']['fc2']['kernel']))
  assert pretrained_testing.relative_difference('googlenet', variables) <= 1e-4


def test_every_source_has_its_config_entry_and_a_fixture():
  assert set(sources.SOURCES) == set(pretrained_config.MODELS)
  assert set(sources.SOURCES) == {
      f.removesuffix('.json') for f in os.listdir(pretrained_testing.FIXTURES)
  }


def test_seeded_values_are_one_stream_whatever_the_chunk(monkeypatch):
  """A tensor drawn a chunk at a time is the one draw of the whole tensor: the fixtures'
  recorded logits depend on every value."""
  whole = seeded.uniform(3, 'features.0.weight', (5, 11), -0.5, 0.5)
  monkeypatch.setattr(seeded, '_CHUNK', 7)
  assert np.array_equal(seeded.uniform(3, 'features.0.weight', (5, 11), -0.5, 0.5), whole)
  bits = np.random.PCG64([3, zlib.crc32(b'features.0.weight')]).random_raw(55)
  expected = (-0.5 + ((bits >> np.uint64(11)) * 2.0**-53)).astype(np.float32)
  assert np.array_equal(whole.ravel(), expected)
