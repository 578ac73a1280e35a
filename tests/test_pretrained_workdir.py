"""A converted model as a workdir: what it holds, predictions, fine-tuning with a frozen backbone,
evaluation on Imagenette with ImageNet's labels, and the command line."""

import os
import re

import jax
import numpy as np
import pretrained_testing
import pytest
from conftest import load_config
from safetensors.numpy import save_file

import models
from analysis import predict
from analysis.workdirs import load_trained
from common.errors import ConfigError
from pretrained import convert, seeded
from pretrained import workdir as pretrained_workdir
from train_lib import sharding, train
from train_lib.state import init_state


@pytest.fixture(scope='module')
def resnet18_tensors():
  return pretrained_testing.reference_tensors('resnet18')


# ---- a converted workdir ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def converted(tmp_path_factory, resnet18_tensors):
  """resnet18's fixture weights as a user's .safetensors file, converted into a workdir."""
  root = tmp_path_factory.mktemp('converted')
  weights = str(root / 'resnet18.safetensors')
  save_file(resnet18_tensors, weights)
  workdir = str(root / 'resnet18')
  config = load_config(f'--config={os.path.join("configs", "pretrained.py")}:resnet18')
  derived = pretrained_workdir.convert_into_workdir(config, weights, workdir)
  return workdir, weights, derived


def test_a_converted_model_is_a_workdir_with_its_weights(converted, resnet18_tensors):
  workdir, _, derived = converted
  assert derived['converted_from']['reference'] == 'resnet18'
  assert derived['num_params'] == 11_689_512
  trained = load_trained(workdir)
  assert trained.step == 0
  expected = convert.convert('resnet18', resnet18_tensors)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(trained.variables), expected)


def test_converting_into_a_used_workdir_or_from_a_bad_file_writes_nothing(converted, tmp_path):
  workdir, weights, _ = converted
  config = load_config(f'--config={os.path.join("configs", "pretrained.py")}:resnet18')
  before = sorted(os.listdir(workdir))
  with pytest.raises(ConfigError, match='already holds a run; nothing was changed'):
    pretrained_workdir.convert_into_workdir(config, weights, workdir)
  assert sorted(os.listdir(workdir)) == before
  vgg = load_config(f'--config={os.path.join("configs", "pretrained.py")}:vgg11')
  with pytest.raises(convert.ConversionError):
    pretrained_workdir.convert_into_workdir(vgg, weights, str(tmp_path / 'vgg'))
  assert not os.path.exists(tmp_path / 'vgg')


def test_predict_gives_the_top5_imagenet_classes(converted, tmp_path):
  import matplotlib.pyplot as plt

  workdir, _, _ = converted
  image = np.random.default_rng(0).random((300, 400, 3))
  plt.imsave(tmp_path / 'photo.png', image)
  rows = predict.top_classes(workdir, str(tmp_path / 'photo.png'))
  assert len(rows) == 5
  probabilities = [p for _, _, p in rows]
  assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
  with open(os.path.join('input_pipeline', 'imagenet_class_names.txt')) as f:
    names = f.read().splitlines()
  assert [name for name, _, _ in rows] == [names[i] for _, i, _ in rows]
  # The same numbers as the model applied by hand to the source's preprocessing.
  import input_pipeline

  trained = load_trained(workdir)
  x, _ = input_pipeline.model_input(
      trained.config.dataset, str(tmp_path / 'photo.png'), trained.image_shape
  )
  assert x.shape == (224, 224, 3)  # matplotlib's RGBA PNG, decoded to RGB
  logits = trained.model.apply(trained.variables, x[None], train=False)[0]
  best = int(np.argmax(logits))
  assert rows[0][1] == best
  np.testing.assert_allclose(rows[0][2], jax.nn.softmax(logits)[best], rtol=1e-5)


SMALL = "to_rgb|resize(32)|normalize('imagenet')"  # the digits at 32×32: a quick run


@pytest.mark.slow  # ~50 s end to end; tests/test_optim.py tests freezing by lr_multipliers
def test_fine_tuning_with_a_frozen_backbone_trains_only_the_new_classifier(
    converted, data_dir, tmp_path
):
  workdir, _, _ = converted
  config = load_config(
      f'--config={os.path.join("configs", "pretrained.py")}:resnet18,offline_digits',
      f'--config.init_from={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      f'--config.dataset.train_preprocess={SMALL}',
      f'--config.dataset.eval_preprocess={SMALL}',
      '--config.total_steps=3',
      '--config.batch_size=8',
      '--config.eval_batch_size=500',
  )
  assert config.optimizer.lr_multipliers == '(?!(fc)/).*=0'
  results = train.train_and_evaluate(config, str(tmp_path / 'digits'))
  assert np.isfinite(results['train_loss'])
  source = load_trained(workdir).variables['params']
  tuned = load_trained(str(tmp_path / 'digits')).variables['params']
  assert tuned['fc']['kernel'].shape == (512, 10)  # a new classifier for the ten digits
  np.testing.assert_array_equal(
      tuned['layer4_1']['conv2']['kernel'], source['layer4_1']['conv2']['kernel']
  )
  np.testing.assert_array_equal(tuned['conv1']['kernel'], source['conv1']['kernel'])
  model = models.from_config(config.model, 10)
  initial = init_state(config, model, (32, 32, 3), sharding.make_mesh()).params['fc']['kernel']
  assert np.abs(np.asarray(tuned['fc']['kernel']) - np.asarray(initial)).max() > 1e-4


def test_imagenet_labels_are_refused_for_a_dataset_of_other_classes():
  import input_pipeline

  config = load_config(
      f'--config={os.path.join("configs", "pretrained.py")}:resnet18,offline_digits',
      '--config.dataset.imagenet_labels=True',
  )
  with pytest.raises(ConfigError, match="offline_digits's classes are not ImageNet classes"):
    input_pipeline.check_preprocess(config.dataset)
  assert input_pipeline.pipeline.imagenet_classes('imagenette')[1] == 217  # English springer


@pytest.mark.slow  # ~40 s: main.py end to end; the library calls are tested above
def test_the_command_line_converts_predicts_and_refuses_in_one_line(tmp_path):
  from conftest import run_main

  weights = seeded.write_fixture_weights(
      os.path.join(pretrained_testing.FIXTURES, 'squeezenet1_1.json'),
      str(tmp_path / 'squeezenet1_1.safetensors'),
  )
  config = '--config=configs/pretrained.py:squeezenet1_1'
  workdir = str(tmp_path / 'squeezenet')
  done = run_main('--mode=convert', config, f'--weights={weights}', f'--workdir={workdir}')
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'squeezenet1_1 from torchvision squeezenet1_1 (1,235,496 parameters)' in done.stdout
  plt_image = tmp_path / 'photo.png'
  import matplotlib.pyplot as plt

  plt.imsave(plt_image, np.random.default_rng(1).random((120, 160, 3)))
  done = run_main('--mode=predict', f'--workdir={workdir}', f'--image={plt_image}')
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  assert lines[0] == f'{plt_image}, by {workdir}:' and len(lines) == 6
  assert all(re.match(r'^ +\d+\.\d\d%  \S.*\(class \d+\)$', line) for line in lines[1:])
  done = run_main('--mode=convert', config, f'--workdir={tmp_path / "w"}')
  assert done.stderr.strip().splitlines() == [
      "error: --mode=convert needs --weights=<file>, the reference's weights (e.g. "
      'resnet50-0676ba61.pth, or its .safetensors).'
  ]


def test_imagenette_is_evaluated_with_its_imagenet_labels(converted, monkeypatch):
  """The converted 1000-way model on Imagenette: each label becomes its ImageNet class."""
  import tensorflow_datasets as tfds

  import input_pipeline

  workdir, _, _ = converted
  config = load_config(
      f'--config={os.path.join("configs", "pretrained.py")}:resnet18,imagenette',
      '--config.eval_batch_size=4',
      '--config.batch_size=4',
  )
  imagenette = set(input_pipeline.pipeline.imagenet_classes('imagenette'))
  with tfds.testing.mock_data(num_examples=4):
    data = input_pipeline.InputPipeline(
        config.dataset, global_batch_size=4, eval_batch_size=4, seed=0
    )
    labels = next(data.eval_batches())['label']
    assert data.num_classes == 1000 and set(labels.tolist()) <= imagenette
    results = train.evaluate_checkpoint(config, workdir)
  assert results['eval_count'] == 4 and results['split'] == ''
  assert 0.0 <= results['eval_top1'] <= 1.0
