"""Squeeze-and-excitation ResNets: counts, where the gate sits, and what it computes."""

import jax
import numpy as np
import pytest
from model_testing import FAST_KEY, abstract, count, fast_jit, train_and_eval_step

import models
from models import resnet

NAMES = ('seresnet50', 'seresnet101', 'seresnext50_32x4d')


def _se_params(stage_sizes, r=16):
  """2·C·C/r + C/r + C per block (fc1 and fc2 with biases), C = 256 · 2^stage."""
  return sum(n * (2 * c * c // r + c // r + c) for n, c in zip(stage_sizes, (256, 512, 1024, 2048)))


# timm's seresnet50, seresnet101 and seresnext50_32x4d. The same totals by arithmetic: the
# plain networks' torchvision counts (asserted in test_resnet.py / test_resnext.py) plus SE.
@pytest.mark.parametrize(
    'name,published,base,stage_sizes',
    [
        ('seresnet50', 28_088_024, 25_557_032, (3, 4, 6, 3)),
        ('seresnet101', 49_326_872, 44_549_160, (3, 4, 23, 3)),
        ('seresnext50_32x4d', 27_559_896, 25_028_904, (3, 4, 6, 3)),
    ],
)
def test_parameter_counts_match_timm(name, published, base, stage_sizes):
  assert count(name, 224) == published == base + _se_params(stage_sizes)


def test_every_block_has_an_se_module_with_a_16x_bottleneck():
  params = abstract('seresnet50', 224)['params']
  blocks = [k for k in params if k.startswith('layer')]
  assert len(blocks) == 16 and all('se' in params[b] for b in blocks)
  for stage in range(1, 5):
    c = 256 * 2 ** (stage - 1)
    se = params[f'layer{stage}_0']['se']
    assert se['fc1']['kernel'].shape == (c, c // 16) and se['fc1']['bias'].shape == (c // 16,)
    assert se['fc2']['kernel'].shape == (c // 16, c) and se['fc2']['bias'].shape == (c,)
  # The reduction is a field: from the command line, and through clone().
  small = abstract('seresnet50', 64, stage_sizes=(1,), se_reduction=8)['params']
  assert small['layer1_0']['se']['fc1']['kernel'].shape == (256, 32)
  model = models.create_model('seresnet50', num_classes=10, stage_sizes=(1,)).clone(se_reduction=4)
  params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']
  assert params['layer1_0']['se']['fc1']['kernel'].shape == (256, 64)
  # The same ResNet class as resnet50, whose blocks have no SE (se_reduction=None).
  assert models.entry('seresnet50').module is models.entry('resnet50').module
  assert 'se' not in abstract('resnet50', 64, stage_sizes=(1,))['params']['layer1_0']


def test_se_scales_the_branch_after_its_last_bn_by_a_per_channel_gate_before_the_addition():
  reduction = models.entry('seresnet50').fields['se_reduction']
  with_se, plain = resnet.BottleneckBlock(16, se_reduction=reduction), resnet.BottleneckBlock(16)
  x = np.random.default_rng(0).standard_normal((2, 8, 8, 64), dtype=np.float32)

  @fast_jit
  def run(key, x):
    out, variables = with_se.init_with_output(key, x, capture_intermediates=True)
    params = variables['params']
    opened = {
        **params,
        'se': {
            **params['se'],
            'fc2': {
                'kernel': params['se']['fc2']['kernel'],
                'bias': params['se']['fc2']['bias'] + 1e4,
            },
        },
    }
    without_se = {k: v for k, v in params.items() if k != 'se'}
    stats = variables['batch_stats']
    return (
        out,
        params,
        variables['intermediates'],
        with_se.apply({'params': opened, 'batch_stats': stats}, x),
        plain.apply({'params': without_se, 'batch_stats': stats}, x),
    )

  out, params, inter, out_gate_open, out_plain = jax.device_get(run(FAST_KEY, x))
  branch = inter['bn3']['__call__'][0]  # the SE input: the branch after its last BN
  se_out = inter['se']['__call__'][0]
  # The gate by hand: global average → fc1 → ReLU → fc2 → sigmoid, one per (example, channel).
  se = params['se']
  hidden = np.maximum(branch.mean(axis=(1, 2)) @ se['fc1']['kernel'] + se['fc1']['bias'], 0)
  gate = 1 / (1 + np.exp(-(hidden @ se['fc2']['kernel'] + se['fc2']['bias'])))
  assert gate.shape == (2, 64) and np.all((gate > 0) & (gate < 1))
  assert np.abs(gate[0] - gate[1]).max() > 1e-3  # it depends on the example
  np.testing.assert_allclose(se_out, branch * gate[:, None, None, :], rtol=1e-5, atol=1e-6)
  # Added to the identity shortcut, then ReLU.
  np.testing.assert_allclose(out, np.maximum(se_out + x, 0), rtol=1e-5, atol=1e-6)
  # A gate forced to 1 gives the block without SE.
  np.testing.assert_allclose(out_gate_open, out_plain, rtol=1e-6, atol=1e-6)
  assert np.abs(out_gate_open - out).max() > 1e-3


# One block (stage_sizes=(1,)): seresnet50 and seresnet101 then build the same program, which
# the session's compilation cache compiles once.
@pytest.mark.parametrize('name', NAMES)
def test_one_train_and_eval_step(name):
  train_and_eval_step(name, 32, stage_sizes=(1,))
