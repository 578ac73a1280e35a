"""task='segmentation' and its encoder_decoder: targets, the metric, the shapes and receptive
fields, a short run on the offline digits, resume, and the refusals."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import read_json

import models
from analysis import predict, summary, workdirs
from common.errors import ConfigError, UserError
from configs import segmentation_digits
from train_lib import reporting, segmentation_task, train


def test_targets_mark_the_stroke_with_label_plus_one_whatever_the_normalisation():
  raw = np.zeros((2, 4, 4, 1), np.float32)
  raw[0, 1:3, 2] = 255.0  # a two-pixel stroke
  raw[0, 0, 0] = 100.0  # below the midpoint 127.5 of 0 and 255: background
  labels = jnp.array([3, 7])
  expected = np.zeros((2, 4, 4), np.int32)
  expected[0, 1:3, 2] = 4  # digit 3 → class 4; the blank second image stays background
  for images in (raw, (raw / 255.0 - 0.13) / 0.31, np.repeat(raw, 3, axis=-1) * 0.5 + 7):
    np.testing.assert_array_equal(segmentation_task.stroke_targets(images, labels), expected)


def test_mean_iou_of_a_hand_computed_example():
  # true 0 0 1 1 2 2 / predicted 0 1 1 1 2 0 (class 3 appears in neither: left out of the mean)
  targets = jnp.array([[[0, 0, 1], [1, 2, 2]]])
  predictions = jnp.array([[[0, 1, 1], [1, 2, 0]]])
  confusion = segmentation_task.confusion_matrix(targets, predictions, jnp.array([True]), 4)
  assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
  scores = segmentation_task.confusion_scores(confusion)
  # IoU: class 0 1/(2+2−1), class 1 2/(3+2−2), class 2 1/(1+2−1).
  assert scores['miou'] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
  assert scores['pixel_accuracy'] == pytest.approx(4 / 6)
  masked = segmentation_task.confusion_matrix(targets, predictions, jnp.array([False]), 4)
  assert int(masked.sum()) == 0  # a padded eval example counts no pixel


@functools.cache
def _outputs(size: int):
  model = models.create_model('encoder_decoder', num_classes=11)
  logits, variables = jax.eval_shape(
      functools.partial(model.init_with_output, capture_intermediates=True),
      jax.random.key(0),
      jnp.zeros((2, size, size, 1)),
  )
  found = variables['intermediates']
  shapes = {k: v['__call__'][0].shape for k, v in found.items() if k != '__call__'}
  return logits, shapes


@pytest.mark.parametrize('size', [28, 27])
def test_transposed_convs_restore_the_input_resolution(size):
  logits, shapes = _outputs(size)
  half, quarter = -(-size // 2), -(-size // 4)
  assert logits.shape == (2, size, size, 11)
  assert shapes['down1'][1:3] == (half, half) and shapes['context3'][1:3] == (quarter, quarter)
  assert shapes['up2'][1:3] == (half, half) and shapes['up1'][1:3] == (size, size)


def test_dilated_context_grows_the_receptive_field_without_parameters():
  model = models.create_model('encoder_decoder', num_classes=11)
  s = summary.summarize(model, (28, 28, 1))
  # At 1/4 resolution (jump 4) a 3×3 conv at rate r adds 2·r·4 pixels: 9 → 17 → 33 → 65.
  assert s.layer('down2/conv').receptive_field == (9, 9)
  fields = [s.layer(f'context{i}/conv').receptive_field[0] for i in (1, 2, 3)]
  assert fields == [17, 33, 65]
  assert s.layer('context3/conv').kind == 'Conv 3×3 dilation 4'
  undilated = models.create_model('encoder_decoder', num_classes=11, dilation_rates=(1, 1, 1))
  plain = summary.summarize(undilated, (28, 28, 1))
  assert [plain.layer(f'context{i}/conv').receptive_field[0] for i in (1, 2, 3)] == [17, 25, 33]
  assert plain.total_params == s.total_params == models.entry('encoder_decoder').params


def _small(data_dir, **fields):
  """A few steps at batch 16; 100 test digits evaluated in padded batches of 64."""
  config = segmentation_digits.get_config()
  config.dataset.data_dir = data_dir
  config.update_from_flattened_dict(
      {
          'dataset.eval_split': 'test[:100]',
          'batch_size': 16,
          'eval_batch_size': 64,
          'total_steps': 4,
          'log_every_steps': 1,
          'eval_every_steps': 2,
          'checkpoint_every_steps': 2,
          'schedule.name': 'constant',
          'schedule.warmup_epochs': 0.0,
          **fields,
      }
  )
  return config


def test_a_short_run_learns_and_resumes_exactly(tmp_path, data_dir):
  straight = train.train_and_evaluate(_small(data_dir), str(tmp_path / 'straight'))
  assert straight['step'] == 4 and straight['eval_count'] == 100
  assert 0.0 < straight['eval_miou'] <= 1.0 and 0.0 < straight['eval_pixel_accuracy'] <= 1.0
  assert np.isfinite(straight['eval_loss'])
  losses = [
      r['train_loss']
      for r in reporting.read_metrics(str(tmp_path / 'straight'))
      if 'train_loss' in r
  ]
  assert losses[-1] < losses[0]  # from ln 11 ≈ 2.4 at the start
  workdir = str(tmp_path / 'resumed')
  train.train_and_evaluate(_small(data_dir, total_steps=2), workdir)
  resumed = train.train_and_evaluate(_small(data_dir), workdir)
  assert resumed['resumed_from_step'] == 2
  for key in ('eval_loss', 'eval_pixel_accuracy', 'eval_miou', 'train_loss'):
    assert resumed[key] == pytest.approx(straight[key], rel=1e-6, abs=1e-7), key


def test_the_run_records_eleven_pixel_classes_and_is_not_taken_for_a_classifier(tmp_path, data_dir):
  train.train_and_evaluate(_small(data_dir, total_steps=1), str(tmp_path))
  derived = read_json(tmp_path / 'config.json')['derived']
  assert derived['num_classes'] == 11 and derived['num_params'] == 180_843
  assert workdirs.run_facts(str(tmp_path))['metric'] == 'eval_miou'  # what --mode=compare plots
  with pytest.raises(UserError, match='holds a segmentation run'):
    predict.top_classes(str(tmp_path), 'digit.png')


@pytest.mark.parametrize(
    'fields, message',
    [
        ({'model': {'name': 'lenet5'}}, 'needs a model with per-pixel logits'),
        ({'dataset.train_preprocess': 'mixup(0.2)'}, 'mixup blends two digits'),
        ({'label_smoothing': 0.1}, 'per-pixel softmax cross-entropy'),
        ({'task': 'classification'}, "set task='segmentation'"),
    ],
)
def test_configs_that_cannot_segment_are_refused_before_any_work(
    tmp_path, data_dir, fields, message
):
  config = _small(data_dir)
  if 'model' in fields:
    config.model = ml_collections.ConfigDict(fields.pop('model'))
  config.update_from_flattened_dict(fields)
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
