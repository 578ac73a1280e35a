"""ResNeXt and Wide ResNet: torchvision's ResNet with grouped or widened bottlenecks.

Full-size models are only traced (jax.eval_shape); compute runs with one block.
"""

import pytest
from model_testing import abstract, count, train_and_eval_step

NAMES = ('resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2')


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0]


# torchvision's model cards (resnext50_32x4d and wide_resnet50_2 also in docs/published_figures.md).
@pytest.mark.parametrize(
    'name,published',
    [
        ('resnext50_32x4d', 25_028_904),
        ('resnext101_32x8d', 88_791_336),
        ('wide_resnet50_2', 68_883_240),
        ('wide_resnet101_2', 126_886_696),
    ],
)
def test_parameter_counts_match_torchvision(name, published):
  assert count(name, 224) == published


@pytest.mark.parametrize('name,d', [('resnext50_32x4d', 4), ('resnext101_32x8d', 8)])
def test_resnext_splits_each_3x3_into_32_groups(name, d):
  params = abstract(name, 224)['params']
  # "32xNd": 32 groups of d channels in stage 1; the group width doubles with each stage.
  assert params['layer1_0']['conv2']['kernel'].shape == (3, 3, d, 32 * d)
  for stage in range(1, 5):
    width = 32 * d * 2 ** (stage - 1)  # int(planes · d / 64) · 32, planes = 64 · 2^(stage-1)
    block = params[f'layer{stage}_0']
    # HWIO kernel: each output channel sees only the width / 32 channels of its own group.
    assert block['conv2']['kernel'].shape == (3, 3, width // 32, width)
    assert block['conv1']['kernel'].shape[-1] == width
    assert block['conv3']['kernel'].shape == (1, 1, width, 256 * 2 ** (stage - 1))


@pytest.mark.parametrize('name', ['wide_resnet50_2', 'wide_resnet101_2'])
def test_wide_resnet_doubles_the_inner_width_and_keeps_resnets_outputs(name):
  variables = abstract(name, 224)
  params, inter = variables['params'], variables['intermediates']
  for stage, size in enumerate([56, 28, 14, 7], start=1):
    inner = 128 * 2 ** (stage - 1)  # ResNet-50/101: 64 · 2^(stage-1)
    block = params[f'layer{stage}_0']
    assert block['conv1']['kernel'].shape[-1] == inner
    assert block['conv2']['kernel'].shape == (3, 3, inner, inner)  # one group, full width
    assert _out(inter, f'layer{stage}_0').shape == (1, size, size, 256 * 2 ** (stage - 1))
  assert _out(inter, 'fc').shape == (1, 1000)


# One block (stage_sizes=(1,)) with the 50-layer models' numbers: each 101-layer name then
# builds the same program as its 50-layer sibling, which the session's compilation cache
# compiles once (XLA's CPU compile dominates these tests). Their own widths are checked above.
@pytest.mark.parametrize(
    'name,fields',
    [
        ('resnext50_32x4d', {}),
        ('resnext101_32x8d', {'width_per_group': 4}),
        ('wide_resnet50_2', {}),
        ('wide_resnet101_2', {}),
    ],
)
def test_one_train_and_eval_step(name, fields):
  train_and_eval_step(name, 32, stage_sizes=(1,), **fields)
