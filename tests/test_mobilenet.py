"""MobileNet v1 and v2: published counts and mult-adds, strides, widths, linear bottlenecks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_testing import FAST_KEY, count, fast_jit, macs, shapes, train_and_eval_step

import models
from models import mobilenet


# Keras `applications.MobileNet(weights=None, alpha=α)` trainable counts (BN γ and β counted;
# Keras's head is a 1×1 conv with bias, the same count as this dense `fc`).
@pytest.mark.parametrize(
    'alpha,keras_count', [(1.0, 4_231_976), (0.75, 2_585_560), (0.5, 1_331_592), (0.25, 470_072)]
)
def test_v1_parameter_counts_match_keras(alpha, keras_count):
  assert count('mobilenet_v1', 224, alpha=alpha) == keras_count


def test_v1_paper_size_and_mult_adds_at_four_resolutions():
  # Howard et al. 2017 (docs/published_figures.md): 1.0 MobileNet-224 has 4.2 M parameters and
  # 569 M mult-adds; TF-slim's mobilenet_v1.md: 569 / 418 / 291 / 186 M at 224 / 192 / 160 / 128.
  assert round(count('mobilenet_v1', 224, alpha=1.0) / 1e6, 1) == 4.2
  assert macs('mobilenet_v1', 224, alpha=1.0) == 568_740_352
  assert [round(macs('mobilenet_v1', size) / 1e6) for size in (192, 160, 128)] == [418, 291, 186]
  # Width multiplier α: cost falls roughly as α². Derived here: 325.4 / 149.5 / 41.0 M at 224
  # (TF-slim's table lists 317 / 150 / 41 M, with parameter counts that agree with ours).
  assert [round(macs('mobilenet_v1', 224, alpha=a) / 1e5) for a in (0.75, 0.5, 0.25)] == [
      3254,
      1495,
      410,
  ]


def test_v1_strides_widths_and_depthwise_kernels():
  variables, out = shapes('mobilenet_v1', 224, alpha=0.75)
  params = variables['params']
  sides = [out[f'conv_pw_{i}'][1] for i in range(1, 14)]
  assert sides == [112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]  # Table 1 (13th at s1)
  assert out['conv1'] == (1, 112, 112, 24)  # int(32 · 0.75)
  widths = [out[f'conv_pw_{i}'][-1] for i in range(1, 14)]
  assert widths == [48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768]
  # Depthwise: one 3×3 filter per channel; pointwise: a 1×1 across all channels; no biases.
  assert params['conv_dw_2']['kernel'].shape == (3, 3, 1, 48)
  assert params['conv_pw_2']['kernel'].shape == (1, 1, 48, 96)
  assert set(params['conv_dw_2']) == {'kernel'}
  assert params['conv_dw_2_bn']['scale'].shape == (48,)
  assert params['fc']['kernel'].shape == (768, 1000) and params['fc']['bias'].shape == (1000,)
  # ρ is the input size: the same network at 128 ends on 4×4 maps.
  assert shapes('mobilenet_v1', 128, alpha=0.75)[1]['conv_pw_13'] == (1, 4, 4, 768)


def test_v1_activation_is_the_papers_relu_or_keras_relu6():
  x = jnp.ones((1, 8, 8, 3))

  def primitives(jaxpr):
    """Every primitive of a traced program, nested calls included."""
    for eqn in jaxpr.eqns:
      yield eqn.primitive.name
      for param in eqn.params.values():
        inner = getattr(param, 'jaxpr', param)  # ClosedJaxpr or Jaxpr
        if hasattr(inner, 'eqns'):
          yield from primitives(inner)

  def clips(act):
    """How many times the program clips from above (ReLU6's min(·, 6))."""
    model = models.create_model('mobilenet_v1', num_classes=3, conv_defs=((8, 2),), act=act)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return list(primitives(jax.make_jaxpr(model.apply)(variables, x).jaxpr)).count('min')

  # One after each conv (conv1, conv_dw_1, conv_pw_1) with ReLU6, none with ReLU.
  assert clips('relu6') == 3 and clips('relu') == 0


def test_v2_parameter_counts_match_torchvision_and_keras():
  assert count('mobilenet_v2', 224) == 3_504_872  # docs/published_figures.md (torchvision)
  # Keras `applications.MobileNetV2(weights=None, alpha=α)` trainable counts: its widths round
  # as torchvision's make_divisible(c · α, 8), and the last conv widens only above α = 1.
  # (0.5, 0.75 and 1.3 also agree: 1,968,680, 2,636,424 and 5,386,792.)
  published = {0.35: 1_677_128, 1.4: 6_108_776}
  assert {w: count('mobilenet_v2', 224, width_mult=w) for w in published} == published


def test_v2_mult_adds_and_make_divisible():
  # torchvision (docs/published_figures.md).
  assert round(macs('mobilenet_v2', 224) / 1e9, 3) == 0.301
  assert macs('mobilenet_v2', 224) == 300_774_272
  # torchvision's _make_divisible: nearest multiple of 8, never more than 10 % below.
  assert [
      mobilenet.make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24 * 0.5, 1280 * 1.4, 10.0, 3.0)
  ] == [16, 8, 16, 1792, 16, 8]


def test_v2_block_layout_strides_and_widths():
  variables, out = shapes('mobilenet_v2', 224)
  params = variables['params']
  blocks = [out[f'features_{i}'] for i in range(1, 18)]
  assert [b[1] for b in blocks] == [112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 14, 7, 7, 7, 7]
  assert [b[-1] for b in blocks] == [
      16,
      24,
      24,
      32,
      32,
      32,
      64,
      64,
      64,
      64,
      96,
      96,
      96,
      160,
      160,
      160,
      320,
  ]
  assert out['features_0'] == (1, 112, 112, 32) and out['features_18'] == (1, 7, 7, 1280)
  # t = 1 in the first block: no expansion conv; elsewhere 1×1 expand to 6× the input width.
  assert set(params['features_1']) == {'depthwise', 'project'}
  assert params['features_2']['expand']['conv']['kernel'].shape == (1, 1, 16, 96)
  assert params['features_2']['depthwise']['conv']['kernel'].shape == (3, 3, 1, 96)
  assert params['features_2']['project']['conv']['kernel'].shape == (1, 1, 96, 24)
  assert params['classifier']['kernel'].shape == (1280, 1000)
  # Narrow widths round to multiples of 8; the last conv stays 1280 below width 1.
  _, narrow = shapes('mobilenet_v2', 224, width_mult=0.35)
  assert narrow['features_0'][-1] == 16 and narrow['features_1'][-1] == 8
  assert narrow['features_18'][-1] == 1280


def test_v2_linear_bottleneck_and_residual_only_where_stride_1_and_width_kept():
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 16)).astype(np.float32)
  cases = {'kept': (16, 1), 'strided': (16, 2), 'widened': (24, 1)}
  blocks = {k: mobilenet.InvertedResidual(f, s) for k, (f, s) in cases.items()}

  @fast_jit
  def run(key, x):
    results = {}
    for name, block in blocks.items():
      out, variables = block.init_with_output(key, x, capture_intermediates=True)
      results[name] = (out, variables['intermediates']['project']['__call__'][0])
    return results

  results = run(FAST_KEY, x)
  for name, (out, projected) in results.items():
    if name == 'kept':  # identity shortcut: the block adds its input to the projection
      np.testing.assert_allclose(out, x + projected, atol=1e-5)
    else:
      np.testing.assert_array_equal(out, projected)
    # Linear bottleneck: no ReLU after the projection, so outputs go negative.
    assert float(projected.min()) < -0.1, name


def test_every_mobilenet_trains_and_evaluates_at_32_pixels():
  # One depthwise-separable block (stride 2), alpha 0.25: conv1, conv_dw_1, conv_pw_1, fc.
  train_and_eval_step('mobilenet_v1', 32, alpha=0.25, conv_defs=((64, 2),))
  # One t = 6 block; at width 0.25 both the stem and the block are 8 wide, so it has its
  # identity shortcut.
  train_and_eval_step(
      'mobilenet_v2', 32, width_mult=0.25, inverted_residual_setting=((6, 16, 1, 1),)
  )
