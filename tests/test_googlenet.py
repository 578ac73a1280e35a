"""GoogLeNet / Inception v1: torchvision's layout, the paper's (Caffe bvlc_googlenet), and the
paper's with naive modules (no 1×1 reductions)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_testing import fast_jit, host_state

import models
from analysis import summary
from input_pipeline import offline_digits
from models import googlenet, layers
from train_lib import losses, steps
from train_lib import state as state_lib

LOSS = losses.get_loss('softmax_xent')
BLOCKS = ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')


@functools.lru_cache
def _shapes(name, aux_logits=True, size=224):
  """eval_shape of init in training mode (so aux heads get parameters): no compute."""
  model = models.create_model(name, num_classes=1000, aux_logits=aux_logits)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  return jax.eval_shape(
      functools.partial(model.init, train=True), rngs, jnp.zeros((1, size, size, 3))
  )


def _count(name, aux_logits=True):
  return state_lib.num_params(_shapes(name, aux_logits)['params'])


def test_torchvision_googlenet_parameter_counts():
  # torchvision (docs/published_figures.md).
  assert _count('googlenet', aux_logits=False) == 6_624_904
  # torchvision's googlenet(aux_logits=True): aux1 on 512 channels, aux2 on 528 channels, each
  # conv 1×1 128 (no bias) + BN 256 + fc 2048→1024 + fc 1024→1000:
  # (512·128 + 256 + 2_098_176 + 1_025_000) + (528·128 + 256 + 2_098_176 + 1_025_000)
  # = 3_188_968 + 3_191_016 = 6_379_984; 6_624_904 + 6_379_984 = 13_004_888.
  assert _count('googlenet', aux_logits=True) == 13_004_888
  params = _shapes('googlenet', aux_logits=False)['params']
  assert not {'aux1', 'aux2'} & set(params)


def test_torchvision_five_by_five_branch_is_three_by_three():
  params = _shapes('googlenet')['params']
  assert params['inception3a']['branch3_1']['conv']['kernel'].shape == (3, 3, 16, 32)
  assert 'bias' not in params['inception3a']['branch3_1']['conv']  # BN follows every conv
  assert params['inception3a']['branch3_1']['bn']['scale'].shape == (32,)
  paper = _shapes('googlenet_paper')['params']
  assert paper['inception3a']['branch3_1']['conv']['kernel'].shape == (5, 5, 16, 32)
  assert paper['inception3a']['branch3_1']['conv']['bias'].shape == (32,)
  assert 'batch_stats' not in _shapes('googlenet_paper')  # no BN anywhere in the paper's net


# Table 1 of Szegedy et al. 2015: params (K = 1024 weights, biases not counted) and ops (M
# multiply-adds) per row, transcribed from the paper. Its ops column matches the channel widths
# of the same table for every row except conv1 (2.7K / 34M: no 7×7×3→64 conv has that) and 5a
# (51.1 M from the widths); its params column is looser still (4a 367 K from the widths vs 364 K,
# 4c 498 vs 463, 4d 591 vs 580, 4e 847 vs 840, 5a 1018 vs 1072, 5b 1409 vs 1388).
TABLE1 = {
    'conv2': (112, 360),
    '3a': (159, 128),
    '3b': (380, 304),
    '4a': (364, 73),
    '4b': (437, 88),
    '4c': (463, 100),
    '4d': (580, 119),
    '4e': (840, 170),
    '5a': (1072, 54),
    '5b': (1388, 71),
    'fc': (1000, 1),
}
OUTPUT_SIDE = {
    'conv2': 56,
    '3a': 28,
    '3b': 28,
    '4a': 14,
    '4b': 14,
    '4c': 14,
    '4d': 14,
    '4e': 14,
    '5a': 7,
    '5b': 7,
    'fc': 1,
}


def test_paper_googlenet_parameter_count_and_table1():
  params = _shapes('googlenet_paper', aux_logits=False)['params']
  layer_params = {
      'conv2': [params['conv2'], params['conv3']],
      'fc': [params['fc']],
      **{b: [params[f'inception{b}']] for b in BLOCKS},
  }
  weights = {
      row: sum(
          int(leaf.size)
          for tree in trees
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
          if path[-1].key == 'kernel'
      )
      for row, trees in layer_params.items()
  }
  # Exact per-block weights from the widths, e.g. 3a: 192·64 + 192·96 + 9·96·128 + 192·16
  # + 25·16·32 + 192·32 = 163_328.
  assert weights == {
      'conv2': 114_688,
      '3a': 163_328,
      '3b': 388_096,
      '4a': 375_552,
      '4b': 448_512,
      '4c': 509_440,
      '4d': 604_672,
      '4e': 867_328,
      '5a': 1_042_432,
      '5b': 1_442_816,
      'fc': 1_024_000,
  }
  for row, (_, table_ops) in TABLE1.items():
    if row != '5a':
      assert abs(weights[row] * OUTPUT_SIDE[row] ** 2 / 1e6 - table_ops) < 1, row
  for row in ('conv2', '3a', '3b', '4b', 'fc'):
    assert abs(weights[row] / 1024 - TABLE1[row][0]) <= 1, row
  # Total with conv biases and no BN (Caffe bvlc_googlenet without the loss1/loss2 heads):
  # stem 9_472 + 4_160 + 110_784 = 124_416; inception weights 5_842_176 + biases 6_960;
  # classifier 1_024_000 + 1_000. 124_416 + 5_849_136 + 1_025_000 = 6_998_552.
  assert state_lib.num_params(params) == 6_998_552
  # Aux heads (conv 1×1 128 with bias, fc 2048→1024, fc 1024→1000) on 512 and 528 channels:
  # 3_188_840 + 3_190_888 = 6_379_728 more.
  assert _count('googlenet_paper', aux_logits=True) == 6_998_552 + 6_379_728


@pytest.mark.parametrize('name', ['googlenet', 'googlenet_paper'])
def test_output_sizes_and_block_widths_at_224(name):
  model = models.create_model(name, num_classes=1000)
  apply = functools.partial(model.apply, capture_intermediates=True, mutable=['intermediates'])
  logits, state = jax.eval_shape(apply, _shapes(name), jnp.zeros((1, 224, 224, 3)))
  out = {
      k: v['__call__'][0].shape[1:] for k, v in state['intermediates'].items() if k != '__call__'
  }
  assert out['conv1'] == (112, 112, 64)
  assert out['conv2'] == (56, 56, 64) and out['conv3'] == (56, 56, 192)
  sides = [out[f'inception{b}'][0] for b in BLOCKS]
  assert sides == [28, 28, 14, 14, 14, 14, 14, 7, 7]
  widths = [out[f'inception{b}'][2] for b in BLOCKS]
  assert widths == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
  assert 'aux1' not in out and logits.shape == (1, 1000)
  # In training the aux heads run on 4a and 4d, pooled to 4×4 (Caffe's 5×5 / 3 at 14×14).
  train_apply = functools.partial(
      model.apply, train=True, capture_intermediates=True, mutable=['intermediates', 'batch_stats']
  )
  _, state = jax.eval_shape(
      train_apply, _shapes(name), jnp.zeros((1, 224, 224, 3)), rngs={'dropout': jax.random.key(0)}
  )
  for head in ('aux1', 'aux2'):
    assert state['intermediates'][head]['conv']['__call__'][0].shape == (1, 4, 4, 128)
    assert state['intermediates'][head]['aux_logits'][0].shape == (1, 1000)
  # LRN (the only power in the network) after the first max pool and after conv3: paper only.
  jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=False))(
      _shapes(name), jnp.zeros((1, 224, 224, 3))
  )
  lrn_count = sum(eqn.primitive.name == 'pow' for eqn in jaxpr.jaxpr.eqns)
  assert lrn_count == (2 if name == 'googlenet_paper' else 0)


def test_paper_aux_head_initialises_as_caffe_and_trains_under_jit():
  head = googlenet.InceptionAux(10, style='paper')
  x = jax.random.normal(jax.random.key(0), (2, 14, 14, 512))
  params = jax.jit(head.init)(jax.random.key(1), x)['params']
  # Caffe's bias_filler: 0.2 on convs and the hidden fc, 0 on the classifier.
  np.testing.assert_array_equal(params['conv']['conv']['bias'], np.float32(0.2))
  np.testing.assert_array_equal(params['fc1']['bias'], np.float32(0.2))
  np.testing.assert_array_equal(params['fc2']['bias'], 0.0)
  limit = np.sqrt(3 / 2048)  # Caffe "xavier": U(±sqrt(3 / fan_in)), fan_in = 4·4·128
  assert 0.9 * limit < float(jnp.abs(params['fc1']['kernel']).max()) <= limit

  def loss(params, x):
    logits, _ = head.apply(
        {'params': params},
        x,
        train=True,
        rngs={'dropout': jax.random.key(2)},
        mutable=['intermediates'],
    )
    return jnp.sum(logits**2)

  # The gradient reaches 4a through the 5×5 / 3 average pool, differentiated under jit.
  grads, x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  assert float(jnp.abs(grads['conv']['conv']['kernel']).max()) > 0
  assert float(jnp.abs(x_grad).max()) > 0


SIZE = 64  # 4a and 4d are 4×4 at 64 px; torchvision's adaptive pool keeps them 4×4


@pytest.fixture(scope='module')
def googlenet_step():
  """One jitted program (one compile) holding train_step and the model applied by hand, run
  with two run keys (so two dropout keys): train_step's metrics next to independently computed
  losses."""
  model = models.create_model('googlenet', num_classes=10)
  plain = models.create_model('googlenet', num_classes=10, aux_logits=False)
  state = host_state(model, (SIZE, SIZE, 3))
  data = np.random.default_rng(1)
  batch = {
      'image': data.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32),
      'label': np.array([3, 7], np.int32),
      'mask': np.ones(2, bool),
  }

  # Unoptimised code generation: compiling this program is most of the file's time on a CPU.
  @functools.partial(
      jax.jit,
      compiler_options={
          'xla_backend_optimization_level': 0,
          'xla_llvm_disable_expensive_passes': True,
      },
  )
  def run(state, batch):
    rng = state.step_rng()  # the dropout key train_step draws
    new_state, metrics = steps.train_step(
        state,
        batch,
        loss_fn=LOSS,
        aux_loss_weight=0.3,
        learning_rate_fn=optax.constant_schedule(0.01),
    )
    mean_loss = lambda logits: LOSS(logits, batch['label']).mean()
    logits, updates = model.apply(
        state.variables(),
        batch['image'],
        train=True,
        rngs={'dropout': rng},
        mutable=['batch_stats', 'intermediates'],
    )
    sown = updates['intermediates']
    eval_logits, eval_updates = model.apply(
        state.variables(), batch['image'], mutable=['intermediates']
    )
    plain_params = {k: v for k, v in state.params.items() if k not in ('aux1', 'aux2')}
    plain_logits = plain.apply(
        {'params': plain_params, 'batch_stats': state.batch_stats}, batch['image']
    )
    moved = [
        jnp.abs(a - b).max()
        for a, b in zip(jax.tree.leaves(new_state.batch_stats), jax.tree.leaves(state.batch_stats))
    ]
    return metrics, {
        'main': mean_loss(logits),
        'aux1': mean_loss(sown['aux1']['aux_logits'][0]),
        'aux2': mean_loss(sown['aux2']['aux_logits'][0]),
        'n_sown': jnp.asarray(len(sown)),
        'train_logits': logits,
        'eval_logits': eval_logits,
        'plain_logits': plain_logits,
        'eval_sown': jnp.asarray(len(eval_updates.get('intermediates', {}))),
        'eval_step_loss': steps.eval_step(state, batch, loss_fn=LOSS)['loss_sum'],
        'eval_loss': LOSS(eval_logits, batch['label']).sum(),
        'bn_moved': jnp.max(jnp.stack(moved)),
    }

  other_key = jax.random.key_data(jax.random.key(4, impl=state.rng_impl))
  return run(state, batch), run(state.replace(rng=other_key), batch)


def test_train_step_adds_the_aux_losses_weighted_0_3(googlenet_step):
  (metrics, ref), _ = googlenet_step
  assert int(ref['n_sown']) == 2  # aux1 and aux2 (after 4a and 4d), in training
  assert float(ref['aux1']) > 0.5 and float(ref['aux2']) > 0.5  # the aux term is not negligible
  np.testing.assert_allclose(metrics['main_loss'], ref['main'], rtol=1e-5)
  np.testing.assert_allclose(
      metrics['loss'], ref['main'] + 0.3 * (ref['aux1'] + ref['aux2']), rtol=1e-5
  )


def test_eval_runs_the_main_head_only(googlenet_step):
  (_, ref), _ = googlenet_step
  assert int(ref['eval_sown']) == 0  # no aux heads at eval, nothing sown
  # A model built without aux heads gives the same eval logits, and eval_step scores them.
  np.testing.assert_allclose(ref['eval_logits'], ref['plain_logits'], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ref['eval_step_loss'], ref['eval_loss'], rtol=1e-5)


def test_batch_norm_and_dropout_act_in_training_only(googlenet_step):
  (_, ref), (_, other_key) = googlenet_step
  assert float(ref['bn_moved']) > 1e-3  # running averages updated by the train step
  assert not np.allclose(ref['train_logits'], ref['eval_logits'], atol=1e-4)
  assert not np.allclose(ref['train_logits'], other_key['train_logits'], atol=1e-6)  # dropout
  np.testing.assert_array_equal(ref['eval_logits'], other_key['eval_logits'])


def test_paper_aux_heads_need_5x5_maps():
  model = models.create_model('googlenet_paper', num_classes=10)
  with pytest.raises(ValueError, match='at least 79 px'):
    jax.eval_shape(
        functools.partial(model.init, train=True),
        {'params': jax.random.key(0), 'dropout': jax.random.key(0)},
        jnp.zeros((1, 64, 64, 3)),
    )
  with pytest.raises(ValueError, match='Unknown GoogLeNet style'):
    jax.eval_shape(
        models.create_model('googlenet', num_classes=10, style='caffe').init,
        jax.random.key(0),
        jnp.zeros((1, 64, 64, 3)),
    )


class _FiveByFive(nn.Module):
  """The notes' 256 5×5 filters, after a 1×1 reduction to `reduce` channels when it is > 0;
  no biases, as the notes count weights only."""

  reduce: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(layers.ConvNormAct, use_bias=False, norm=False)
    if self.reduce:
      x = conv(self.reduce, 1, name='reduce')(x, train)
    return conv(256, 5, name='conv5x5')(x, train)


def test_the_notes_1x1_reduction_before_a_5x5_conv():
  # The notes' example: a 100×100×128 input, 256 5×5 filters, directly or after a 1×1 to 32.
  direct = summary.summarize(_FiveByFive(), (100, 100, 128))
  reduced = summary.summarize(_FiveByFive(reduce=32), (100, 100, 128))
  assert direct.total_params == 128 * 5 * 5 * 256 == 819_200
  assert reduced.total_params == 128 * 1 * 1 * 32 + 32 * 5 * 5 * 256 == 208_896  # 3.9× fewer
  # Every weight meets each of the 100×100 output positions once (padding taps included).
  assert direct.total_macs == 819_200 * 100 * 100 == 8_192_000_000
  assert reduced.total_macs == 208_896 * 100 * 100 == 2_088_960_000
  assert reduced.layer('reduce/conv').output_shape == (100, 100, 32)
  assert direct.layer('conv5x5/conv').output_shape == reduced.layer('conv5x5/conv').output_shape


NAIVE_WIDTHS = [416, 832, 1280, 1728, 2176, 2640, 3344, 4048, 4944]


def test_naive_blocks_pass_their_input_on_and_grow():
  variables = _shapes('googlenet_naive')
  params = variables['params']
  for block in BLOCKS:
    assert sorted(params[f'inception{block}']) == ['branch1', 'branch2_1', 'branch3_1']
  # 3a sees conv3's 192 channels whole: 192·64 + 9·192·128 + 25·192·32 weights, 224 biases.
  assert state_lib.num_params(params['inception3a']) == 12_288 + 221_184 + 153_600 + 224
  assert params['inception3a']['branch3_1']['conv']['kernel'].shape == (5, 5, 192, 32)
  # Each block's output: its three convs' widths plus every input channel (the pool branch).
  widths, previous = [], 192
  for block in BLOCKS:
    c1, _, c3, _, c5, _ = googlenet.INCEPTION_BLOCKS[block]
    previous = c1 + c3 + c5 + previous
    widths.append(previous)
  assert widths == NAIVE_WIDTHS
  assert params['fc']['kernel'].shape == (4944, 1000)
  assert params['aux1']['conv']['conv']['kernel'].shape == (1, 1, 1280, 128)  # after 4a
  assert params['aux2']['conv']['conv']['kernel'].shape == (1, 1, 2640, 128)  # after 4d
  assert _count('googlenet_naive') == 104_274_376  # the pinned count, aux heads included
  assert _count('googlenet_naive', aux_logits=False) == 97_526_008


def test_the_summary_shows_what_the_reductions_save():
  naive = summary.summarize(models.create_model('googlenet_naive', num_classes=1000), (224, 224, 3))
  paper = summary.summarize(models.create_model('googlenet_paper', num_classes=1000), (224, 224, 3))
  assert [naive.layer(f'inception{b}/concat').output_shape[-1] for b in BLOCKS] == NAIVE_WIDTHS
  assert (naive.total_params, paper.total_params) == (104_274_376, 13_378_280)
  assert (naive.total_macs, paper.total_macs) == (12_568_061_056, 1_582_671_872)  # 7.9×
  # 5b's 5×5 convs: 25·4048·128 weights on the naive net's 7×7 maps, 25·48·128 after the 1×1.
  assert naive.layer('inception5b/branch3_1/conv').macs == 25 * 4048 * 128 * 49
  assert paper.layer('inception5b/branch3_1/conv').macs == 25 * 48 * 128 * 49


def test_googlenet_naive_trains_on_the_offline_digits():
  """Two train steps (aux heads on) on two digits padded to 80 px, enough for the paper's 5×5
  aux pools at 4a and 4d; one compiled step, run twice."""
  model = models.create_model('googlenet_naive', num_classes=10)
  images, labels = offline_digits.load_arrays()
  pad = (80 - 28) // 2
  batch = {
      'image': np.pad(images[:2] / np.float32(255), ((0, 0), (pad, pad), (pad, pad), (0, 0))),
      'label': labels[:2].astype(np.int32),
      'mask': np.ones(2, bool),
  }
  state = host_state(model, batch['image'].shape[1:])
  step = fast_jit(
      functools.partial(
          steps.train_step, loss_fn=LOSS, learning_rate_fn=optax.constant_schedule(1e-3)
      )
  )
  first, first_metrics = step(state, batch)
  second, metrics = jax.device_get(step(first, batch))
  assert int(second.step) == 2 and metrics['finite'] == 1
  assert metrics['loss'] > metrics['main_loss']  # the aux heads' losses, weighted 0.3, count
  assert metrics['loss'] < float(first_metrics['loss'])  # the same two digits, fitted better
  for layer in ('inception3a', 'inception5b', 'aux1'):
    moved = zip(jax.tree.leaves(state.params[layer]), jax.tree.leaves(second.params[layer]))
    assert any(not np.array_equal(a, b) for a, b in moved), layer
