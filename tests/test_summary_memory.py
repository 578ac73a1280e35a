"""The summary's memory: ShuffleNet v2's memory access (its guideline G1 on equal-FLOP 1×1
convolutions), activation bytes at the compute dtype, and the live bytes a residual block's kept
input adds."""

import json
import math

import flax.linen as nn
import jax.numpy as jnp
import pytest

import models
from analysis import report, summary
from models import convolutions

HW = 56 * 56  # ShuffleNet v2's Table 1 input: a 56×56 feature map


class _Pointwise(nn.Module):
  """One 1×1 convolution to `width` channels, no bias: G1's layer."""

  width: int

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Conv(self.width, (1, 1), use_bias=False, name='conv')(x)


def _pointwise(c1: int, c2: int) -> tuple[int, int]:
  """(memory access, MACs) of a 1×1 convolution c1 → c2 on 56×56, through the summary."""
  layer = summary.summarize(_Pointwise(c2), (56, 56, c1)).layer('conv')
  return layer.memory_access, layer.macs


@pytest.mark.parametrize(
    'widths',
    [
        # Table 1's ×1 column: ratios 1:1, 1:2, 1:6, 1:12 at about equal FLOPs (c1·c2 ≈ 16,384).
        [(128, 128), (90, 180), (52, 312), (36, 432)],
        # Exactly equal FLOPs, c1·c2 = 2^14: ratios 1:1, 1:4, 1:16, 1:64.
        [(128, 128), (64, 256), (32, 512), (16, 1024)],
    ],
    ids=['table1', 'equal_flops'],
)
def test_equal_channel_width_minimises_memory_access(widths):
  counted = [_pointwise(c1, c2) for c1, c2 in widths]
  for (c1, c2), (access, macs) in zip(widths, counted):
    assert macs == HW * c1 * c2  # B, the layer's FLOPs in the paper's sense
    assert access == HW * (c1 + c2) + c1 * c2  # §2 G1: feature maps in and out, and weights
    bound = 2 * math.sqrt(HW * macs) + macs / HW
    if c1 == c2:
      assert access == bound  # AM-GM holds with equality
    else:
      assert access > bound
  accesses = [access for access, _ in counted]
  assert accesses == sorted(accesses) and len(set(accesses)) == len(accesses)
  assert accesses[0] == 819_200  # 56·56·256 + 128²
  if widths[-1] == (36, 432):
    assert accesses[-1] == 1_483_200  # 56·56·468 + 36·432: 1.81× for 5% fewer FLOPs
  assert max(macs for _, macs in counted) <= 1.06 * min(macs for _, macs in counted)


class _Grouped(nn.Module):
  """One 1×1 convolution to `width` channels in `groups` groups, no bias: G2's layer."""

  width: int
  groups: int

  @nn.compact
  def __call__(self, x, train=False):
    conv = nn.Conv(self.width, (1, 1), feature_group_count=self.groups, use_bias=False)
    return conv(x)


def test_more_groups_cost_more_memory_access():
  """§2 G2, Table 2's ×1 column: c1 = c2 = 128, 180, 256, 360 in 1, 2, 4, 8 groups keep the
  FLOPs (c²/g ≈ 16,384) while the memory access h·w·2c + c²/g grows with the width."""
  rows = []
  for c, g in ((128, 1), (180, 2), (256, 4), (360, 8)):
    layer = summary.summarize(_Grouped(c, g), (56, 56, c)).layer('Conv_0')
    assert layer.macs == HW * c * c // g
    assert layer.memory_access == HW * 2 * c + c * c // g
    rows.append(layer.memory_access)
  assert rows == sorted(rows) and rows[-1] > 2.7 * rows[0]
  # The zoo's ShuffleNet v1 widens its channels with its groups to keep its MACs: within 5%
  # of each other, while its memory access at 224×224 grows by about half at each step.
  zoo = [
      summary.summarize(models.create_model(f'shufflenet_v1_g{g}', num_classes=1000), (224, 224, 3))
      for g in (1, 3, 8)
  ]
  assert [s.total_memory_access for s in zoo] == [5_299_840, 7_806_880, 11_635_792]
  assert max(s.total_macs for s in zoo) < 1.05 * min(s.total_macs for s in zoo)


class _Convs(nn.Module):
  """A strided k×k, a grouped, a depthwise convolution and a dense layer."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(8, (3, 3), strides=2, padding=1, name='strided')(x)
    x = nn.Conv(8, (3, 3), padding=1, feature_group_count=4, use_bias=False, name='grouped')(x)
    x = convolutions.DepthwiseConv(kernel_size=3, strides=2, padding=1, name='depthwise')(x)
    return nn.Dense(10, name='fc')(x.reshape(x.shape[0], -1))


def test_memory_access_of_kxk_grouped_depthwise_and_dense():
  """h·w·c1 + weights + h'·w'·c2: the input as read, the output as written, the kernel once."""
  s = summary.summarize(_Convs(), (16, 16, 4))
  assert s.layer('strided').memory_access == 16 * 16 * 4 + 9 * 4 * 8 + 8 * 8 * 8
  assert s.layer('grouped').memory_access == 8 * 8 * 8 + 9 * (8 // 4) * 8 + 8 * 8 * 8
  assert s.layer('depthwise/conv').memory_access == 8 * 8 * 8 + 9 * 8 + 4 * 4 * 8
  assert s.layer('fc').memory_access == 128 + 128 * 10 + 10  # the bias add is not the matmul's
  assert s.layer('flatten').memory_access == 0
  assert s.total_memory_access == sum(l.memory_access for l in s.layers)


class _Block(nn.Module):
  """conv → relu → conv on 16 channels, with or without the identity shortcut."""

  shortcut: bool

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(16, (3, 3), padding=1, use_bias=False, name='conv1')(x)
    y = nn.Conv(16, (3, 3), padding=1, use_bias=False, name='conv2')(nn.relu(y))
    return nn.relu(y + x if self.shortcut else y)


def test_a_shortcut_keeps_the_block_input_live():
  plain, residual = (summary.summarize(_Block(s), (8, 8, 16)) for s in (False, True))
  feature_map = 8 * 8 * 16 * 4  # float32
  # While conv2 runs: its input and output, and for the residual block the block's input too.
  assert plain.layer('conv2').live_bytes == 2 * feature_map
  assert residual.layer('conv2').live_bytes == 3 * feature_map
  assert (plain.peak_live_bytes, residual.peak_live_bytes) == (2 * feature_map, 3 * feature_map)
  # First reached by the inline relu, where the block input, conv1's output and relu's coexist.
  assert residual.peak_live_at == 'max after conv1'
  assert residual.layer('add').activation_bytes == feature_map


def test_resnet20_keeps_each_block_input_until_its_add():
  s = summary.summarize(models.create_model('resnet20', num_classes=10), (32, 32, 3))
  feature_map = 32 * 32 * 16 * 4  # float32, one image
  assert s.layer('conv1').live_bytes == 32 * 32 * 3 * 4 + feature_map  # image and stem output
  for block in ('layer1_0', 'layer1_1', 'layer1_2'):
    assert s.layer(f'{block}/conv1').live_bytes == 2 * feature_map  # block input = its input
    # conv2 runs with its input, its output, and the block's input held for the add: 3 maps.
    assert s.layer(f'{block}/conv2').live_bytes == 3 * feature_map
    assert s.layer(f'{block}/add').activation_bytes == feature_map
  assert (s.peak_live_bytes, s.peak_live_at) == (3 * feature_map, 'layer1_0/bn1')
  assert s.activation_bytes == sum(l.activation_bytes for l in s.layers) == 1_851_688
  half = summary.summarize(
      models.create_model('resnet20', num_classes=10, dtype=jnp.bfloat16), (32, 32, 3)
  )
  assert half.layer('layer1_0/conv2').activation_bytes == feature_map // 2  # bfloat16 compute
  assert half.layer('fc').activation_bytes == 10 * 2  # the cast to float32 logits follows


def test_memory_in_every_format():
  s = summary.summarize(models.create_model('lenet5', num_classes=10), (28, 28, 1), name='lenet5')
  record = json.loads(report.render(s, 'json'))
  assert record['total_memory_access'] == s.total_memory_access > 0
  assert record['activation_bytes'] == s.activation_bytes > 0
  assert record['peak_live_bytes'] == s.peak_live_bytes and record['peak_live_at']
  fc1 = record['layers'][[l['name'] for l in record['layers']].index('fc1')]
  assert fc1['memory_access'] == 400 + 400 * 120 + 120
  assert fc1['activation_bytes'] == 120 * 4
  header = report.render(s, 'table').splitlines()[0].split()
  assert header[header.index('MACs') + 1] == 'mem_access'
  assert 'Memory access (ShuffleNet v2\'s "MAC", not MACs)' in report.render(s, 'markdown')
