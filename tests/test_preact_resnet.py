"""Pre-activation ResNet (He et al. 2016b): ImageNet depths and CIFAR ResNet-110/164.

Full-size models are only traced (jax.eval_shape); compute runs on single units and a
reduced-depth network.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, fast_jit
from model_testing import count as param_count

import models
from models import preact_resnet

EPS = 1e-5  # layers.batch_norm's epsilon


def _out(tree, *path):
  for key in path:
    tree = tree[key]
  return tree['__call__'][0]


def _normal(*shape):
  return np.random.default_rng(1).standard_normal(shape, dtype=np.float32)


# Derived from the plain torchvision counts (test_resnet.py) by moving the BatchNorms, per
# unit: plain has BN(out) after each conv plus BN(out) on each projection; pre-activation has
# BN(in) before the first conv, BN(width) before the others, none on projections, no BN
# after the stem, and a final BN(last width).
#   bottleneck: Σ(in − 4w) over stage starts = (64−256)+(256−512)+(512−1024)+(1024−2048)
#               = −1984; − stem 64 + final 2048 − projections (256+512+1024+2048) = −3840
#               channels = −7,680 parameters;
#   basic: (64−128)+(128−256)+(256−512) − 64 + 512 − projections (128+256+512) = −896
#          channels = −1,792 parameters.
# timm's resnetv2_50 has this layout; its count was not available here to compare with.
@pytest.mark.parametrize(
    'name,plain,delta',
    [
        ('preact_resnet18', 11_689_512, -1_792),
        ('preact_resnet34', 21_797_672, -1_792),
        ('preact_resnet50', 25_557_032, -7_680),
        ('preact_resnet101', 44_549_160, -7_680),
        ('preact_resnet152', 60_192_808, -7_680),
    ],
)
def test_imagenet_parameter_counts_are_the_plain_counts_with_batch_norms_moved(name, plain, delta):
  expected = {
      'preact_resnet18': 11_687_720,
      'preact_resnet34': 21_795_880,
      'preact_resnet50': 25_549_352,
      'preact_resnet101': 44_541_480,
      'preact_resnet152': 60_185_128,
  }[name]
  assert plain + delta == expected
  assert param_count(name, 224) == expected


def test_cifar_parameter_counts_round_to_the_papers_1_7_million():
  # ResNet-110 (basic units, 16-32-64): the plain option-A ResNet-110 (1,727,962) plus two
  # bias-free 1×1 projections 16·32 + 32·64 = 2,560. Its BN channels are unchanged: BN(in)
  # instead of BN(out) at the two stage starts (−16 −32), no stem BN (−16), final BN(64) (+64).
  assert param_count('preact_resnet110', 32, num_classes=10) == 1_727_962 + 2_560 == 1_730_522

  # ResNet-164 (bottleneck units, n = 18): stem 3·9·16; per stage s with inner width w and
  # input width c_in: the first unit BN(c_in) + c_in·w + BN(w) + 9w² + BN(w) + 4w² +
  # projection c_in·4w; the other 17 with c_in = 4w; final BN(256); fc 256·10 + 10.
  def stage(w, c_in):
    unit = lambda c: 2 * c + c * w + 2 * w + 9 * w * w + 2 * w + w * 4 * w
    return unit(c_in) + c_in * 4 * w + 17 * unit(4 * w)

  expected = 3 * 9 * 16 + stage(16, 16) + stage(32, 64) + stage(64, 128) + 2 * 256 + 2_570
  assert expected == 1_703_258
  assert param_count('preact_resnet164', 32, num_classes=10) == expected
  assert round(1_730_522 / 1e6, 1) == round(1_703_258 / 1e6, 1) == 1.7  # the paper's "1.7M"


def test_imagenet_layout_bare_stem_preactivated_units_and_final_batch_norm():
  shapes = abstract('preact_resnet50', 224)
  params, inter = shapes['params'], shapes['intermediates']
  blocks = {f'layer{s}_{i}' for s, n in enumerate((3, 4, 6, 3), start=1) for i in range(n)}
  assert set(params) == {'conv1', 'final_bn', 'fc'} | blocks  # no BN after the stem conv
  assert params['final_bn']['scale'].shape == (2048,)
  for stage, size in enumerate([56, 28, 14, 7], start=1):
    assert _out(inter, f'layer{stage}_0').shape == (1, size, size, 256 * 2 ** (stage - 1))
  unit = params['layer2_0']
  assert unit['bn1']['scale'].shape == (256,)  # normalises the unit's input, not its output
  assert set(unit) == {'bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3', 'downsample_conv'}
  assert unit['downsample_conv']['kernel'].shape == (1, 1, 256, 512)
  assert set(params['layer2_1']) == {'bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3'}
  # Stride on the 3×3 (timm): conv1 keeps 56×56, conv2 halves it.
  assert _out(inter, 'layer2_0', 'conv1').shape == (1, 56, 56, 128)
  assert _out(inter, 'layer2_0', 'conv2').shape == (1, 28, 28, 128)
  basic = abstract('preact_resnet18', 224)['params']
  assert set(basic['layer1_0']) == {'bn1', 'conv1', 'bn2', 'conv2'}  # 64 → 64: identity
  assert basic['layer2_0']['bn1']['scale'].shape == (64,)


def test_cifar_layout_widths_and_stride_on_the_first_1x1():
  shapes = abstract('preact_resnet164', 32, num_classes=10)
  params, inter = shapes['params'], shapes['intermediates']
  for stage, (size, width) in enumerate([(32, 64), (16, 128), (8, 256)], start=1):
    assert _out(inter, f'layer{stage}_17').shape == (1, size, size, width)
  assert 'layer3_18' not in params
  # The authors' code strides the first 1×1 of a unit.
  assert _out(inter, 'layer2_0', 'conv1').shape == (1, 16, 16, 32)
  assert params['layer1_0']['downsample_conv']['kernel'].shape == (1, 1, 16, 64)
  inter = abstract('preact_resnet110', 32, num_classes=10)['intermediates']
  for stage, (size, width) in enumerate([(32, 16), (16, 32), (8, 64)], start=1):
    assert _out(inter, f'layer{stage}_17').shape == (1, size, size, width)
  with pytest.raises(ValueError, match='9n \\+ 2'):
    abstract('preact_resnet164', 32, depth=100)


def _units_with_closed_branch(block, x):
  """Initialises `block` on `x` and zeroes the branch's last conv; returns the eval output."""

  @fast_jit
  def run(key, x):
    variables = block.init(key, x)
    last = 'conv3' if 'conv3' in variables['params'] else 'conv2'
    params = {
        **variables['params'],
        last: {'kernel': jnp.zeros_like(variables['params'][last]['kernel'])},
    }
    return {**variables, 'params': params}, block.apply({**variables, 'params': params}, x)

  return run(FAST_KEY, x)


@pytest.mark.parametrize('kind', ['basic', 'bottleneck'])
def test_projection_takes_the_preactivated_input_and_identity_the_raw_input(kind):
  block_cls = preact_resnet.BLOCKS[kind]
  x = _normal(2, 8, 8, 16)  # negative values tell raw from activated inputs
  features = {'basic': 32, 'bottleneck': 16}[kind]
  out_width = features * block_cls.expansion
  variables, out = _units_with_closed_branch(block_cls(features, strides=2), x)
  # BN at init in eval mode divides by sqrt(1 + eps); then ReLU; then the strided 1×1.
  kernel = np.asarray(variables['params']['downsample_conv']['kernel'])[0, 0]
  pre = np.maximum(x / np.sqrt(1 + EPS), 0)[:, ::2, ::2, :]
  np.testing.assert_allclose(out, pre @ kernel, atol=1e-4)
  assert out.shape == (2, 4, 4, out_width)
  # An identity unit adds its raw input, negative values included.
  _, out = _units_with_closed_branch(block_cls(16 // block_cls.expansion), x)
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_batch_norm_uses_batch_statistics_in_training_only():
  model = models.create_model('preact_resnet110', num_classes=10, depth=8)  # n = 1
  x = 2.0 + _normal(4, 8, 8, 3)

  @fast_jit
  def run(key, x):
    eval_out, variables = model.init_with_output(key, x)
    train_out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return eval_out, train_out, variables, updates

  eval_out, train_out, variables, updates = run(FAST_KEY, x)
  assert eval_out.dtype == train_out.dtype == jnp.float32
  assert train_out.shape == eval_out.shape == (4, 10)
  assert not np.allclose(train_out, eval_out, atol=1e-3)
  moved = jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()), updates['batch_stats'], variables['batch_stats']
  )
  assert max(jax.tree.leaves(moved)) > 0.01
  assert set(variables['batch_stats']) == {'layer1_0', 'layer2_0', 'layer3_0', 'final_bn'}
