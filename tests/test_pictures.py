"""Pictures of a network (filters, feature maps, runs compared) and reading a workdir back."""

import json
import os
import shutil

import jax
import matplotlib.image as mpimg
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from conftest import read_json, run_main, small_lenet5_config

from analysis import pictures, plots_cli, summary, workdirs
from input_pipeline import examples, stats
from train_lib import train


@pytest.fixture(scope='module')
def workdir(data_dir, tmp_path_factory) -> str:
  """LeNet-5 trained for 12 steps on the offline digits (checkpoints at 6 and 12), shared."""
  path = str(tmp_path_factory.mktemp('lenet5'))
  train.train_and_evaluate(small_lenet5_config(data_dir), path)
  return path


def _png(path: str) -> np.ndarray:
  """A PNG's RGB bytes."""
  return np.round(mpimg.imread(path)[..., :3] * 255).astype(np.uint8)


def _kernel(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _scaled(x: np.ndarray) -> np.ndarray:
  return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize('shape, columns', [((5, 5, 3, 7), 3), ((5, 5, 1, 6), 3)])
def test_filter_grid_tiles_are_the_min_max_scaled_filters(shape, columns):
  kernel, scale, gap = _kernel(shape), 2, 2
  grid = pictures.filter_grid(kernel, scale)
  rows, tile = -(-shape[3] // columns), shape[0] * scale
  assert grid.shape == (
      rows * tile + (rows + 1) * gap,
      columns * tile + (columns + 1) * gap,
      shape[2],
  )
  for k in range(shape[3]):
    top, left = pictures.tile_position(k, columns, (tile, tile), gap)
    want = np.kron(_scaled(kernel[..., k]), np.ones((scale, scale, 1)))  # jointly over RGB
    np.testing.assert_allclose(grid[top : top + tile, left : left + tile], want, atol=1e-6)
  assert (grid[:gap] == pictures.GAP_VALUE).all() and (grid[:, :gap] == pictures.GAP_VALUE).all()


def test_filter_tiles_of_other_channel_counts_show_each_channel_side_by_side():
  kernel = _kernel((3, 3, 4, 5))
  tiles = pictures.filter_tiles(kernel)
  assert tiles.shape == (5, 3, 4 * 3 + 3, 1)
  for k in range(5):
    scaled = _scaled(kernel[..., k])  # one scale for the whole filter
    for c in range(4):
      np.testing.assert_allclose(tiles[k, :, 4 * c : 4 * c + 3, 0], scaled[..., c], atol=1e-6)


def test_filter_png_is_the_grid_pixel_for_pixel_under_its_title(tmp_path):
  kernel = _kernel((5, 5, 1, 6))
  scale = pictures.filter_scale(kernel.shape)
  grid = pictures.filter_grid(kernel, scale)
  assert max(grid.shape[:2]) >= 480 > max(pictures.filter_grid(kernel, scale - 1).shape[:2])
  png = _png(pictures.plot_first_layer_filters(kernel, str(tmp_path / 'f.png'), title='conv1'))
  band = png.shape[0] - grid.shape[0]
  assert png.shape[1] == grid.shape[1] and band == 30
  np.testing.assert_array_equal(png[band:], np.round(np.repeat(grid, 3, -1) * 255))
  assert (png[:band] < 128).any()  # the title's text


def test_first_conv_kernel_follows_call_order_not_key_order():
  first, later = _kernel((3, 3, 3, 8), 1), _kernel((1, 1, 8, 8), 2)
  params = {
      'Conv_0': {'kernel': later, 'bias': np.zeros(8)},
      'head': {'kernel': np.zeros((8, 10))},
      'stem': {'conv': {'kernel': first}, 'bn': {'scale': np.ones(8)}},
  }
  name, kernel = pictures.first_conv_kernel(params, ['stem', 'Conv_0', 'head'])
  assert name == 'stem' and kernel is not None and np.array_equal(kernel, first)
  assert pictures.first_conv_kernel(params, ['head', 'Conv_0'])[0] == 'Conv_0'  # 2-D skipped
  with pytest.raises(ValueError, match='no convolution'):
    pictures.first_conv_kernel(params, ['head'])


def test_feature_map_channels_first_or_strongest_each_scaled_on_its_own(tmp_path):
  fmap = np.random.default_rng(0).uniform(size=(6, 6, 5)).astype(np.float32)
  fmap += np.array([0.0, 3.0, -1.0, 1.0, 2.0])  # channel means rank 1, 4, 3, 0, 2
  fmap[..., 2] = 7.0  # constant: shown black
  assert list(pictures.select_channels(fmap, 3)) == [0, 1, 2]
  assert list(pictures.select_channels(fmap, 3, strongest=True)) == [2, 1, 4]
  assert list(pictures.select_channels(fmap, 16)) == [0, 1, 2, 3, 4]
  grid = pictures.channel_grid(fmap, [4, 2])
  assert grid.shape == (1 + 6 + 1, 1 + 6 + 1 + 6 + 1, 1)  # two tiles side by side
  np.testing.assert_allclose(grid[1:7, 1:7, 0], _scaled(fmap[..., 4]), atol=1e-6)
  assert (grid[1:7, 8:14] == 0).all()
  path = pictures.plot_feature_maps(
      np.zeros((6, 6, 1)), {'conv1': fmap[None]}, str(tmp_path / 'maps.png'), strongest=True
  )
  assert _png(path).shape[2] == 3
  with pytest.raises(ValueError, match="'fc1' has shape \\(120,\\)"):
    pictures.plot_feature_maps(np.zeros((6, 6, 1)), {'fc1': np.zeros(120)}, path)


def test_comparison_plots_the_facts_given_on_log_axes(tmp_path):
  facts = [
      {'name': 'lenet5', 'model': 'lenet5', 'num_params': 61_706, 'macs': 416_520, 'top1': 0.98},
      {
          'name': 'wide',
          'model': 'resnet20',
          'num_params': 272_474,
          'macs': 40_813_184,
          'top1': 0.91,
      },
  ]
  fig = pictures.comparison_figure(facts)
  for ax, key in zip(fig.axes, ('num_params', 'macs')):
    assert ax.get_xscale() == 'log'
    np.testing.assert_array_equal(
        ax.collections[0].get_offsets(), [[f[key], f['top1']] for f in facts]
    )
    assert [t.get_text() for t in ax.texts] == ['lenet5', 'wide (resnet20)']
  assert _png(pictures.plot_comparison(facts, str(tmp_path / 'c.png'))).size
  with pytest.raises(ValueError, match='No eval accuracy recorded yet in wide'):
    pictures.comparison_figure([facts[0], {**facts[1], 'top1': None}])

  few_shot = [{**f, 'metric': 'eval_heldout_3way_1shot_accuracy'} for f in facts]
  assert pictures.comparison_figure(few_shot).axes[0].get_ylabel() == (
      'eval heldout_3way_1shot_accuracy'
  )
  with pytest.raises(ValueError, match='scored differently'):
    pictures.comparison_figure([facts[0], few_shot[1]])


@pytest.mark.filterwarnings('ignore:Sharding info not provided')  # the raw read, on purpose
def test_load_trained_restores_the_newest_checkpoint_exactly(workdir):
  trained = workdirs.load_trained(workdir)
  saved = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, 'checkpoints', '12', 'default'))
  assert trained.step == 12 and trained.image_shape == (28, 28, 1) and trained.num_classes == 10
  assert trained.config.model.name == 'lenet5' and trained.config.is_locked
  for collection in ('params', 'batch_stats'):
    got, want = trained.variables[collection], saved[collection]
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  logits = trained.model.apply(trained.variables, np.zeros((2, 28, 28, 1)), train=False)
  assert logits.shape == (2, 10)


def test_workdirs_without_config_or_checkpoint_say_what_to_do(workdir, tmp_path):
  with pytest.raises(workdirs.WorkdirError, match='no config.json.*Train into it first'):
    workdirs.load_trained(str(tmp_path))
  shutil.copy(os.path.join(workdir, 'config.json'), tmp_path)
  with pytest.raises(workdirs.WorkdirError, match='no checkpoint yet'):
    workdirs.load_trained(str(tmp_path))


def test_run_facts_from_results_or_metrics_and_macs_from_the_summary(workdir, tmp_path):
  results = read_json(os.path.join(workdir, 'results.json'))
  facts = workdirs.run_facts(workdir)
  lenet_macs = summary.summarize(workdirs.load_trained(workdir).model, (28, 28, 1)).total_macs
  assert facts == {
      'name': os.path.basename(workdir),
      'model': 'lenet5',
      'num_params': results['num_params'],
      'macs': lenet_macs,
      'top1': results['eval_top1'],
      'step': 12,
      'metric': 'eval_top1',
  }
  record = read_json(os.path.join(workdir, 'config.json'))
  record['derived'].pop('macs', None)  # as written before config.json recorded MACs
  (tmp_path / 'config.json').write_text(json.dumps(record))
  (tmp_path / 'metrics.jsonl').write_text(
      '{"step": 5, "eval_top1": 0.5}\n{"step": 6, "train_loss": 1.0}\n'
      '{"step": 10, "eval_top1": 0.75}\n'
  )
  facts = workdirs.run_facts(str(tmp_path))
  assert (facts['macs'], facts['top1'], facts['step']) == (lenet_macs, 0.75, 10)


def _digits_config(data_dir: str = '', eval_preprocess: str = "normalize('offline_digits')"):
  from configs import lenet5_mnist

  config = lenet5_mnist.get_config().dataset
  config.data_dir, config.eval_preprocess = data_dir, eval_preprocess
  return config


def test_model_input_of_a_png_is_preprocessed_as_evaluation_does(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
  path = str(tmp_path / 'digit.png')
  tf.io.write_file(path, tf.io.encode_png(pixels))
  image, display = examples.model_input(_digits_config(), path, (28, 28, 1))
  digits = stats.load('offline_digits')
  np.testing.assert_allclose(image, (pixels / 255 - digits.mean) / digits.std, atol=1e-5)
  np.testing.assert_allclose(display, pixels / 255, atol=1e-6)

  # Ten views: the first is the centre crop; an RGB file becomes grey for a grey model.
  rgb = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
  tf.io.write_file(path, tf.io.encode_png(rgb))
  config = _digits_config(eval_preprocess='ten_crop(20)|normalize((0.5,), (0.25,))')
  image, display = examples.model_input(config, path, (20, 20, 1))
  grey = tf.io.decode_png(tf.io.encode_png(rgb), channels=1).numpy()[4:24, 4:24] / 255
  np.testing.assert_allclose(image, (grey - 0.5) / 0.25, atol=1e-5)
  np.testing.assert_allclose(display, grey, atol=1e-6)
  with pytest.raises(ValueError, match='is 20x20x1 after dataset.eval_preprocess.*takes 28x28x1'):
    examples.model_input(config, path, (28, 28, 1))


def test_model_input_without_a_file_is_the_first_eval_example(data_dir):
  from input_pipeline import InputPipeline  # pylint: disable=import-outside-toplevel

  config = _digits_config(data_dir)
  image, display = examples.model_input(config)
  first = next(
      InputPipeline(config, global_batch_size=8, eval_batch_size=8, seed=0).eval_batches()
  )['image'][0]
  np.testing.assert_array_equal(image, first)
  assert display.shape == (28, 28, 1) and display.min() >= 0 and display.max() <= 1


def test_picture_modes_write_into_the_workdir(workdir, tmp_path):
  trained = workdirs.load_trained(workdir)
  path = plots_cli.write_filters(workdir)
  assert path == os.path.join(workdir, 'filters.png')
  kernel = trained.variables['params']['conv1']['kernel']
  grid = pictures.filter_grid(np.asarray(kernel), pictures.filter_scale(kernel.shape))
  np.testing.assert_array_equal(
      _png(path)[-grid.shape[0] :], np.round(np.repeat(grid, 3, -1) * 255)
  )

  rows = summary.summarize(trained.model, trained.image_shape).layers
  assert plots_cli.default_layers([r for r in rows if plots_cli.is_conv(r)]) == ['conv1', 'conv2']
  assert plots_cli.write_feature_maps(workdir) == os.path.join(workdir, 'feature_maps.png')
  with pytest.raises(ValueError, match="No layer named 'conv9'"):
    plots_cli.write_feature_maps(workdir, layers=['conv9'], output=str(tmp_path / 'x.png'))

  assert plots_cli.write_comparison([workdir]) == os.path.join(workdir, 'comparison.png')
  with pytest.raises(ValueError, match='--output'):
    plots_cli.write_comparison([workdir, workdir])
  for name in ('filters', 'feature_maps', 'comparison'):
    assert _png(os.path.join(workdir, f'{name}.png')).size


def test_picture_modes_from_the_command_line(workdir, tmp_path):
  out = tmp_path / 'curves.png'
  done = run_main('--mode=curves', f'--workdir={workdir}', f'--output={out}')
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip().splitlines()[-1] == str(out) and _png(str(out)).size
  with pytest.raises(ValueError, match='metrics.jsonl'):
    plots_cli.write_curves(str(tmp_path))
