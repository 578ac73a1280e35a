"""Per-layer summaries: totals against docs/published_figures.md, the notes' hand arithmetic,
receptive fields across branches, dilated / transposed / grouped / depthwise convolutions, XLA's
cost analysis."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config, run_main
from model_testing import fast_jit

import models
from analysis import commands, report, summary
from models import convolutions, fast_conv, layers

# docs/published_figures.md: (name, input size, channels, classes, parameters, MACs in G or None).
REFERENCE = [
    ('lenet5', 28, 1, 10, 61_706, None),
    ('lenet_caffe', 28, 1, 10, 431_080, None),
    ('alexnet', 224, 3, 1000, 61_100_840, 0.714),
    ('vgg16', 224, 3, 1000, 138_357_544, 15.470),
    ('vgg16_bn', 224, 3, 1000, 138_365_992, 15.470),
    ('googlenet', 224, 3, 1000, 6_624_904, 1.498),
    ('inception_v3', 299, 3, 1000, 27_161_264, 5.713),
    ('resnet18', 224, 3, 1000, 11_689_512, 1.814),
    ('resnet50', 224, 3, 1000, 25_557_032, 4.089),
    ('resnext50_32x4d', 224, 3, 1000, 25_028_904, 4.230),
    ('wide_resnet50_2', 224, 3, 1000, 68_883_240, 11.398),
    ('densenet121', 224, 3, 1000, 7_978_856, 2.834),
    ('mobilenet_v2', 224, 3, 1000, 3_504_872, 0.301),
    ('shufflenet_v2_x1_0', 224, 3, 1000, 2_278_604, 0.145),
    ('squeezenet1_0', 224, 3, 1000, 1_248_424, 0.819),
    ('resnet20', 32, 3, 10, 269_722, 0.0406),
]


def _summarize(name: str, size: int, channels: int = 3, classes: int = 1000, **fields):
  model = models.create_model(name, num_classes=classes, **fields)
  return summary.summarize(model, (size, size, channels), name=name)


@pytest.mark.parametrize(
    'name,size,channels,classes,params,gmacs', REFERENCE, ids=[r[0] for r in REFERENCE]
)
def test_totals_equal_reference(name, size, channels, classes, params, gmacs):
  # The published googlenet has no aux heads; inception_v3's count includes its aux head, which
  # the eval pass does not run (so its MACs are not counted, as torchvision's are not).
  fields = {'aux_logits': False} if name == 'googlenet' else {}
  s = _summarize(name, size, channels, classes, **fields)
  assert s.total_params == params
  assert sum(l.params for l in s.layers) + s.unused_params == s.total_params
  assert s.unused_params == (3_326_696 if name == 'inception_v3' else 0)
  if gmacs is not None:
    decimals = len(str(gmacs).split('.')[1])
    assert round(s.total_macs / 1e9, decimals) == gmacs
  assert sum(l.macs for l in s.layers) == s.total_macs


def test_paper_alexnet_neurons_per_layer():
  s = _summarize('alexnet_paper', 227)
  neurons = [s.layer(f'conv{i}').neurons for i in range(1, 6)]
  assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264]  # the paper's §3.5 counts
  assert s.layer('conv1').output_shape == (55, 55, 96)  # (227 − 11) / 4 + 1 = 55
  assert s.layer('conv2').kind == 'Conv 5×5 groups 2'
  assert s.layer('lrn').kind == 'lrn across 5 channels'


def test_vgg_stacked_3x3_receptive_fields():
  # A VGG whose first stage stacks three 3×3 convolutions: they see 3, 5 and 7 pixels, as
  # one 7×7 convolution would, with 3·9C² instead of 49C² weights.
  s = _summarize('vgg11', 32, stage_sizes=(3, 1, 1, 1, 1))
  first_stage = [l for l in s.layers if l.kind == 'Conv 3×3'][:3]
  assert [l.receptive_field for l in first_stage] == [(3, 3), (5, 5), (7, 7)]
  assert [l.jump for l in first_stage] == [(1, 1)] * 3
  # In VGG-16 the stack after two poolings moves in steps of 4 pixels: 3×3 adds 2 × 4.
  s16 = _summarize('vgg16', 224)
  convs = [l.receptive_field[0] for l in s16.layers if l.kind.startswith('Conv')]
  assert convs[:7] == [3, 5, 10, 14, 24, 32, 40]
  assert s16.layers[[l.name for l in s16.layers].index('flatten') - 1].receptive_field == (212, 212)


def test_torchvision_alexnet_receptive_field_at_last_pool():
  s = _summarize('alexnet', 224)
  pool5 = s.layer('max_pool_2')
  assert pool5.receptive_field == (195, 195) and pool5.jump == (32, 32)
  assert pool5.output_shape == (6, 6, 256)
  # At 256 pixels pool5 is 7×7 and adaptive pooling averages 2×2 windows at stride 1 down to 6×6.
  adaptive = _summarize('alexnet', 256).layer('adaptive_avg_pool')
  assert adaptive.receptive_field == (227, 227) and adaptive.jump == (32, 32)
  assert adaptive.output_shape == (6, 6, 256)


def test_residual_block_takes_the_longer_path():
  s = _summarize('resnet18', 224)
  main, shortcut = s.layer('layer2_0/bn2'), s.layer('layer2_0/downsample_bn')
  assert main.receptive_field == (67, 67) and shortcut.receptive_field == (43, 43)
  assert s.layer('layer2_0/add').receptive_field == (67, 67)
  identity = s.layer('layer1_0/add')  # identity shortcut: the max pool's 11 against 27
  assert s.layer('max_pool').receptive_field == (11, 11) and identity.receptive_field == (27, 27)


class _TwoPaths(nn.Module):
  """A merge whose longer path is listed first or second, so order cannot decide."""

  long_first: bool
  merge: str = 'add'

  @nn.compact
  def __call__(self, x, train=False):
    long = nn.Conv(4, (3, 3), padding=1, name='b')(nn.Conv(4, (5, 5), padding=2, name='a')(x))
    short = nn.Conv(4, (1, 1), name='c')(x)
    pair = (long, short) if self.long_first else (short, long)
    if self.merge == 'concat':
      return jnp.concatenate(pair, axis=-1)
    return pair[0] + pair[1]


@pytest.mark.parametrize('long_first', [True, False])
@pytest.mark.parametrize('merge', ['add', 'concat'])
def test_merge_receptive_field_is_the_largest_over_paths(long_first, merge):
  s = summary.summarize(_TwoPaths(long_first, merge), (16, 16, 2))
  assert s.layer('b').receptive_field == (7, 7) and s.layer('c').receptive_field == (1, 1)
  assert s.layer(merge).receptive_field == (7, 7)


def test_inception_and_densenet_concatenations():
  g = _summarize('googlenet', 224, aux_logits=False)
  branches = [l for l in g.layers if l.name.startswith('inception3a/') and l.name.endswith('bn')]
  assert g.layer('inception3a/concat').receptive_field[0] == max(
      l.receptive_field[0] for l in branches + [g.layer('inception3a/branch4_1/bn')]
  )
  assert g.layer('inception3a/concat').output_shape == (28, 28, 256)
  d = _summarize('densenet_bc_100_k12', 32, classes=10)
  concats = [l for l in d.layers if l.kind == 'concat'][:3]
  # Each dense layer's 3×3 conv adds 2 pixels at jump 1; the concatenation keeps the longest.
  assert [l.receptive_field[0] for l in concats] == [5, 7, 9]
  assert [l.output_shape[-1] for l in concats] == [36, 48, 60]  # 2k stem + k per layer


class _Special(nn.Module):
  """Dilated, grouped, depthwise and transposed convolutions in a row."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), kernel_dilation=2, padding=2, name='dilated')(x)
    x = nn.Conv(8, (3, 3), padding=1, feature_group_count=4, name='grouped')(x)
    x = convolutions.DepthwiseConv(kernel_size=3, strides=2, padding=1, name='depthwise')(x)
    x = convolutions.ConvTranspose(6, kernel_size=3, strides=2, name='transposed')(x)
    return layers.pool(x, 'avg', 2, 2)


def test_dilated_grouped_depthwise_transposed():
  s = summary.summarize(_Special(), (16, 16, 4), cross_check=True)
  dilated, grouped, depthwise, transposed = (
      s.layer(n) for n in ('dilated', 'grouped', 'depthwise/conv', 'transposed')
  )
  assert dilated.receptive_field == (5, 5) and dilated.kind == 'Conv 3×3 dilation 2'
  assert dilated.macs == 16 * 16 * 9 * 4 * 8
  assert grouped.receptive_field == (7, 7) and grouped.kind == 'Conv 3×3 groups 4'
  assert grouped.macs == 16 * 16 * 9 * (8 // 4) * 8
  assert depthwise.output_shape == (8, 8, 8) and 'depthwise' in depthwise.kind
  assert depthwise.macs == 8 * 8 * 9 * 8 and depthwise.jump == (2, 2)
  assert depthwise.receptive_field == (9, 9)
  # (8 − 1)·2 + 3 = 17 outputs; every input pixel meets the 3×3 kernel once (scatter view).
  assert transposed.output_shape == (17, 17, 6) and 'transposed/2' in transposed.kind
  assert transposed.macs == 8 * 8 * 9 * 8 * 6
  assert transposed.jump == (1, 1)  # half of the input's 2 pixels
  assert transposed.receptive_field == (11, 11)  # a window reaches 2 inputs 2 pixels apart
  assert s.layer('avg_pool').receptive_field == (12, 12)
  # XLA counts the same multiply-accumulates on real pixels, two flops each.
  assert s.xla['layer_flops'] == pytest.approx(2 * s.xla['real_macs'], rel=1e-6)
  assert s.xla['real_macs'] < s.total_macs  # the padding taps


class _Linear(nn.Module):
  """Linear layers only, so an output unit's input gradient covers exactly its receptive field."""

  @nn.compact
  def __call__(self, x, train=False):
    ones = nn.initializers.ones
    x = nn.Conv(2, (3, 3), padding=1, kernel_init=ones, name='c1')(x)
    x = nn.Conv(2, (3, 3), strides=2, padding=((0, 1), (0, 1)), kernel_init=ones, name='c2')(x)
    x = layers.pool(x, 'avg', 3, 2, padding=1)
    y = nn.Conv(2, (3, 3), kernel_dilation=2, padding=2, kernel_init=ones, name='c3')(x)
    x = y + nn.Conv(2, (1, 1), kernel_init=ones, name='shortcut')(x)
    return nn.Conv(2, (5, 5), padding='VALID', kernel_init=ones, name='c4')(x)


def test_receptive_field_equals_gradient_support():
  """Field size, jump and start against where d output / d input is non-zero (linear net, ones)."""
  model, size = _Linear(), 64
  variables = fast_jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 1)))
  s = summary.summarize(model, (size, size, 1), variables)
  for name in ('c1', 'c2', 'avg_pool', 'c3', 'add', 'c4'):
    layer = s.layer(name)
    row = layer.output_shape[0] // 2
    grad = jax.grad(lambda image, name=name, row=row: _unit(model, variables, image, name, row))(
        jnp.zeros((1, size, size, 1))
    )
    rows = np.flatnonzero(np.abs(np.asarray(grad[0, :, :, 0])).sum(axis=1))
    centre = layer.start[0] + row * layer.jump[0]
    half = (layer.receptive_field[0] - 1) / 2
    lo, hi = centre - half, centre + half
    # Taps that fall into padding are part of the field but have no pixel behind them.
    assert rows[0] == max(lo, 0) and rows[-1] == min(hi, size - 1), name


def _unit(model, variables, image, name, row):
  return summary.layer_outputs(model, variables, image, [name])[name][0, row, row, 0]


def test_layer_outputs_are_the_layers_activations():
  model = models.create_model('lenet5', num_classes=10)
  images = np.random.default_rng(0).random((2, 28, 28, 1), np.float32)
  variables = fast_jit(model.init)(jax.random.key(0), images)
  out = summary.layer_outputs(model, variables, images, ['conv1', 'max_pool', 'fc1'])
  with fast_conv.plain():  # the summary reads the network on lax's convs
    apply = fast_jit(functools.partial(model.apply, capture_intermediates=True))
    _, state = apply(variables, images)
  conv1 = state['intermediates']['conv1']['__call__'][0]
  np.testing.assert_allclose(out['conv1'], conv1, rtol=1e-6)
  np.testing.assert_allclose(out['max_pool'], layers.pool(nn.relu(conv1), 'max', 2, 2), rtol=1e-6)
  np.testing.assert_allclose(out['fc1'], state['intermediates']['fc1']['__call__'][0], rtol=1e-5)
  with pytest.raises(ValueError, match="No layer named 'conv9'"):
    summary.layer_outputs(model, variables, images, ['conv9'])


@pytest.mark.parametrize(
    'name,size', [('mobilenet_v2', 64), ('resnext50_32x4d', 64), ('alexnet_paper', 227)]
)
def test_xla_cost_analysis_agrees(name, size):
  """Depthwise, grouped and two-tower convolutions: XLA's flops = 2 × MACs on real pixels, and
  the whole forward pass costs more (bias, BN, activations, pooling) but not much more."""
  s = summary.summarize(
      models.create_model(name, num_classes=1000), (size, size, 3), cross_check=True
  )
  assert s.xla['layer_flops'] == pytest.approx(2 * s.xla['real_macs'], rel=1e-6)
  assert s.xla['real_macs'] <= s.total_macs
  assert s.xla['layer_flops'] < s.xla['forward_flops'] < 1.1 * 2 * s.total_macs


def test_formats():
  s = summary.summarize(models.create_model('lenet5', num_classes=10), (28, 28, 1), name='lenet5')
  record = json.loads(report.render(s, 'json'))
  assert record['total_params'] == 61_706 and record['total_macs'] == s.total_macs
  assert [l['name'] for l in record['layers']] == [l.name for l in s.layers]
  fc1 = record['layers'][[l['name'] for l in record['layers']].index('fc1')]
  assert fc1 == {
      **fc1,
      'output_shape': [120],
      'params': 400 * 120 + 120,
      'macs': 400 * 120,
      'receptive_field': [32, 32],
      'jump': None,
  }
  table = report.render(s, 'table').splitlines()
  assert table[0].split() == list(report.COLUMNS) and len(table) >= 2 + len(s.layers)
  assert table[2].split()[:3] == ['conv1', 'Conv', '5×5']
  markdown = report.render(s, 'markdown').splitlines()
  assert markdown[0].startswith('| layer | kind |')
  assert markdown[2].startswith('| conv1 | Conv 5×5 |')
  with pytest.raises(ValueError, match='Unknown format'):
    report.render(s, 'yaml')


def test_native_inputs():
  assert tuple(models.native_input('lenet5')) == (28, 1, 10)
  assert tuple(models.native_input('resnet20')) == (32, 3, 10)
  assert tuple(models.native_input('inception_v3')) == (299, 3, 1000)
  assert tuple(models.native_input('resnet50')) == (224, 3, 1000)
  with pytest.raises(models.UnknownModelError, match='Did you mean'):
    models.native_input('resnet5')


def test_summary_command_line(tmp_path):
  out = tmp_path / 'lenet5.json'
  done = run_main('--mode=summary', '--model=lenet5', '--format=json', f'--output={out}')
  assert done.returncode == 0, done.stderr
  record = json.loads(done.stdout)
  assert record['model'] == 'lenet5' and record['input_shape'] == [28, 28, 1]
  assert record['total_params'] == 61_706 and json.loads(out.read_text()) == record
  both = run_main('--mode=summary', '--model=lenet5', '--config=configs/lenet5_mnist.py')
  assert both.returncode != 0 and 'one of them' in both.stderr


def test_summary_of_a_config_takes_its_model_and_input():
  config = load_config('--config=configs/resnet_cifar10.py')
  record = json.loads(commands.summary_text(config, fmt='json'))
  assert record['model'] == 'resnet20' and record['input_shape'] == [32, 32, 3]
  assert record['total_params'] == 269_722  # docs/published_figures.md, 10 classes
  wider = json.loads(commands.summary_text(config, num_classes=100, image_size=64, fmt='json'))
  assert wider['total_params'] == 269_722 + 90 * 64 + 90
  assert wider['total_macs'] == pytest.approx(4 * record['total_macs'], rel=1e-3)
