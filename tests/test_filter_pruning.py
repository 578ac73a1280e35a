"""Filter pruning: slimmed models (models/slimming.py), channel groups read from the computation
(compression/channel_graph.py) and pruning by filter norms (compression/filter_pruning.py).

The key property: where the removed channels were already dead (zero filters, zero BatchNorm
scale and shift, zero biases), the pruned model computes exactly the original function.
"""

import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from common.errors import ConfigError
from compression import channel_graph
from compression import filter_pruning as fp
from models.slimming import slim


def _init(name, size, seed=0, **fields):
  """The model, random variables of its shapes (kernels N(0, 1/fan_in), faster than running
  its initialisers eagerly) and its input shape."""
  model = models.create_model(name, num_classes=10, **fields)
  shape = (size, size, models.native_input(name).channels)
  key = jax.random.key(0)
  abstract = jax.eval_shape(
      lambda: model.init({'params': key, 'dropout': key}, jnp.zeros((1, *shape)), train=True)
  )
  rng = np.random.default_rng(seed)
  leaves = {}
  for path, leaf in fp._leaves(abstract).items():
    fan_in = int(np.prod(leaf.shape[:-1])) or 1
    if path.endswith('/var'):
      leaves[path] = np.ones(leaf.shape, np.float32)
    elif path.endswith('/kernel'):
      leaves[path] = rng.normal(0, fan_in**-0.5, leaf.shape).astype(np.float32)
    else:
      leaves[path] = np.zeros(leaf.shape, np.float32) + path.endswith('/scale')
  return model, fp._nest(leaves), shape


def _shapes(tree):
  return jax.tree.map(np.shape, tree)


def _count(tree):
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _apply(model, variables, images):
  fast = {'xla_backend_optimization_level': 0}  # compiling dominates these tiny runs
  return jax.jit(lambda v, x: model.apply(v, x, train=False), compiler_options=fast)(
      variables, images
  )


def _trained_like(variables, rng):
  """Random BatchNorm statistics and affine parameters, as a trained network has."""
  leaves = fp._leaves(variables)
  for path, leaf in leaves.items():
    shape = np.shape(leaf)
    if path.endswith('/mean'):
      leaves[path] = rng.normal(0, 0.1, shape).astype(np.float32)
    elif path.endswith('/var'):
      leaves[path] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    elif path.endswith('/scale'):
      leaves[path] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif path.endswith('/bias'):
      leaves[path] = rng.normal(0, 0.3, shape).astype(np.float32)
    else:
      leaves[path] = np.asarray(leaf)
  return leaves


def _kill(model, variables, shape, fraction, seed=0):
  """Trained-like variables with floor(fraction · n) groups of every bundle of n made dead:
  their filters (kernel[..., c]), biases and BatchNorm scale/shift zeroed. Returns the
  variables, the graph and {layer: channels killed}."""
  rng = np.random.default_rng(seed)
  leaves = _trained_like(variables, rng)
  graph = channel_graph.analyse(model, variables, shape)
  bundles = collections.defaultdict(list)
  for g in graph.prunable_groups():
    bundles[graph.groups[g].layers].append(g)
  killed = collections.Counter()
  for groups in bundles.values():
    count = min(int(np.floor(fraction * len(groups))), len(groups) - 1)
    for g in rng.choice(groups, count, replace=False).tolist():
      for layer, c in graph.groups[g].members:
        kernel = leaves[f'params/{layer}/kernel'].copy()
        kernel[..., c] = 0.0
        leaves[f'params/{layer}/kernel'] = kernel
        killed[layer] += 1
      for leaf, axis, index in graph.groups[g].slices:
        if leaf.startswith('params/') and leaf.endswith(('/scale', '/bias')):
          vector = leaves[leaf].copy()
          vector[index] = 0.0
          leaves[leaf] = vector
        elif leaf.endswith('/kernel') and axis == np.ndim(leaves[leaf]) - 1:  # depthwise
          kernel = leaves[leaf].copy()
          np.moveaxis(kernel, axis, 0)[index] = 0.0
          leaves[leaf] = kernel
  return fp._nest(leaves), graph, killed


def _check_exact(name, size, fraction=0.5, **fields):
  """Prunes the dead channels of a trained-like model and compares logits; returns what the
  pruning returned, the layer widths before, and the channels killed per layer."""
  model, variables, shape = _init(name, size, **fields)
  dead, graph, killed = _kill(model, variables, shape, fraction)
  images = jax.random.normal(jax.random.key(1), (2, *shape))
  expected = _apply(model, dead, images)
  widths, sliced = fp.prune_filters(model, dead, shape, fraction)
  got = _apply(slim(model, widths), sliced, images)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  before = {layer: len(c) for layer, c in graph.layer_channels.items()}
  assert _count(sliced['params']) < _count(dead['params'])
  return widths, sliced, before, killed


# --- slim ------------------------------------------------------------------------------------


def test_slim_narrows_the_named_layers_and_what_follows_keeping_paths():
  model, variables, shape = _init('resnet20', 32)
  slimmed = slim(model, {'layer1_0/conv1': 5, 'layer2_1/conv1': 7})
  new = jax.eval_shape(lambda: slimmed.init(jax.random.key(0), jnp.zeros((1, *shape))))
  old_shapes, new_shapes = _shapes(variables), _shapes(new)
  assert jax.tree.structure(old_shapes) == jax.tree.structure(new_shapes)
  p = new_shapes['params']
  assert p['layer1_0']['conv1']['kernel'] == (3, 3, 16, 5)
  assert p['layer1_0']['bn1']['scale'] == (5,)
  assert new_shapes['batch_stats']['layer1_0']['bn1']['var'] == (5,)
  assert p['layer1_0']['conv2']['kernel'] == (3, 3, 5, 16)
  assert p['layer2_1']['conv2']['kernel'] == (3, 3, 7, 32)
  changed = [
      path
      for path, a, b in zip(
          fp._leaves(old_shapes), jax.tree.leaves(old_shapes), jax.tree.leaves(new_shapes)
      )
      if a != b
  ]
  assert len(changed) == 12  # per layer: its kernel, its BN's 4 vectors, the next kernel
  assert slim(model, {}) is model
  assert hash(slimmed) == hash(slim(model, {'layer2_1/conv1': 7, 'layer1_0/conv1': 5}))


def test_slim_depthwise_conv_follows_its_narrower_input():
  model, shape = models.create_model('mobilenet_v2', num_classes=10, width_mult=0.25), (32, 32, 3)
  slimmed = slim(model, {'features_2/expand/conv': 7})
  p = jax.eval_shape(lambda: slimmed.init(jax.random.key(0), jnp.zeros((1, *shape))))['params']
  block = p['features_2']
  assert block['expand']['conv']['kernel'].shape == (1, 1, 8, 7)
  assert block['depthwise']['conv']['kernel'].shape == (3, 3, 1, 7)  # 7 groups of one channel
  assert block['project']['conv']['kernel'].shape == (1, 1, 7, 8)


@pytest.mark.parametrize(
    'name, widths, message',
    [
        ('resnet20', {'layer1_0/conv3': 4}, 'layer1_0/conv2'),  # unknown, close names listed
        ('resnet20', {'bn1': 4}, 'BatchNorm'),
        ('resnet20', {'conv1': 0}, 'integer ≥ 1'),
        ('lenet5_1998', {'c3': 8}, 'TableConv'),  # a conv that is not nn.Conv
    ],
)
def test_slim_refuses_what_it_cannot_narrow(name, widths, message):
  model = models.create_model(name, num_classes=10)
  with pytest.raises(ConfigError, match=message):
    jax.eval_shape(slim(model, widths).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


# --- channel graph ---------------------------------------------------------------------------


def test_resnet20_groups_tie_each_stages_residual_stream():
  model, variables, shape = _init('resnet20', 32)
  graph = channel_graph.analyse(model, variables, shape)
  of = {m: graph.groups[g] for g in graph.prunable_groups() for m in graph.groups[g].members}
  blocks = lambda stage: [f'layer{stage}_{i}/conv2' for i in range(3)]
  # Option-A shortcuts pad with zeros: channel c < 16 runs from the stem through all stages.
  stem = of[('conv1', 3)]
  assert set(stem.members) == {('conv1', 3)} | {(l, 3) for s in (1, 2, 3) for l in blocks(s)}
  assert set(of[('layer2_0/conv2', 20)].members) == {(l, 20) for s in (2, 3) for l in blocks(s)}
  assert set(of[('layer3_1/conv2', 40)].members) == {(l, 40) for l in blocks(3)}
  assert of[('layer1_0/conv1', 5)].members == (('layer1_0/conv1', 5),)
  assert ('params/fc/kernel', 0, 3) in stem.slices
  assert ('batch_stats/layer2_2/bn2/mean', 0, 3) in stem.slices
  assert ('params/layer3_0/conv1/kernel', 2, 3) in stem.slices
  inner = of[('layer1_0/conv1', 5)].slices
  assert set(inner) == {
      ('params/layer1_0/conv1/kernel', 3, 5),
      ('params/layer1_0/bn1/scale', 0, 5),
      ('params/layer1_0/bn1/bias', 0, 5),
      ('batch_stats/layer1_0/bn1/mean', 0, 5),
      ('batch_stats/layer1_0/bn1/var', 0, 5),
      ('params/layer1_0/conv2/kernel', 2, 5),
  }
  fc = [graph.groups[g] for g in graph.layer_channels['fc']]
  assert all(not g.prunable and 'output' in g.reason for g in fc)


def test_flatten_before_dense_maps_kernel_rows_to_channels():
  model, variables, shape = _init('lenet5', 28)
  graph = channel_graph.analyse(model, variables, shape)
  group = graph.groups[graph.layer_channels['conv2'][7]]
  rows = sorted((axis, i) for leaf, axis, i in group.slices if leaf == 'params/fc1/kernel')
  assert rows == [(0, (h * 5 + w) * 16 + 7) for h in range(5) for w in range(5)]


class _Grouped(nn.Module):
  groups: int

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(8, (3, 3), name='a')(x))
    x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=self.groups, name='b')(x))
    return nn.Dense(3, name='head')(jnp.mean(x, axis=(1, 2)))


def test_grouped_conv_blocks_its_channels_and_depthwise_ties_them():
  x = jnp.zeros((1, 6, 6, 2))
  grouped = _Grouped(2)
  graph = channel_graph.analyse(
      grouped, jax.eval_shape(grouped.init, jax.random.key(0), x), (6, 6, 2)
  )
  assert graph.prunable_groups() == []
  reasons = {graph.groups[g].reason for g in graph.layer_channels['a']}
  assert reasons == {'input of grouped conv b (2 groups)'}
  depthwise = _Grouped(8)
  graph = channel_graph.analyse(
      depthwise, jax.eval_shape(depthwise.init, jax.random.key(0), x), (6, 6, 2)
  )
  assert graph.layer_channels['a'] == graph.layer_channels['b']
  group = graph.groups[graph.layer_channels['a'][2]]
  assert group.prunable and group.members == (('a', 2),)
  assert {('params/b/kernel', 3, 2), ('params/b/bias', 0, 2), ('params/head/kernel', 0, 2)} <= set(
      group.slices
  )


# --- pruning ---------------------------------------------------------------------------------


def test_lenet5_prunes_the_smallest_l1_filters_and_counts_follow_the_widths():
  model, variables, shape = _init('lenet5', 28)
  widths, sliced = fp.prune_filters(model, variables, shape, 0.5)
  assert widths == {'conv1': 3, 'conv2': 8, 'fc1': 60, 'fc2': 42}
  params = jax.tree.map(np.asarray, variables['params'])

  def kept(layer, count):  # Li et al.: drop the `count` smallest sums of |weights| per filter
    kernel = params[layer]['kernel']
    norms = np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(0)
    return np.sort(np.argsort(norms)[count:])

  conv1, conv2, fc1 = kept('conv1', 3), kept('conv2', 8), kept('fc1', 60)
  np.testing.assert_array_equal(
      sliced['params']['conv2']['kernel'], params['conv2']['kernel'][:, :, conv1][..., conv2]
  )
  np.testing.assert_array_equal(sliced['params']['conv2']['bias'], params['conv2']['bias'][conv2])
  rows = [(h * 5 + w) * 16 + c for h in range(5) for w in range(5) for c in conv2]
  np.testing.assert_array_equal(
      sliced['params']['fc1']['kernel'], params['fc1']['kernel'][rows][:, fc1]
  )
  a, b, c, d = widths.values()
  slimmed = slim(model, widths)
  params = jax.eval_shape(lambda: slimmed.init(jax.random.key(0), jnp.zeros((1, *shape))))
  expected = (25 * a + a) + (25 * a * b + b) + (25 * b * c + c) + (c * d + d) + (d * 10 + 10)
  assert _count(params) == expected == _count(sliced)


def test_pruned_model_trains():
  model, variables, shape = _init('lenet5', 28)
  widths, sliced = fp.prune_filters(model, variables, shape, 0.5)
  slimmed = slim(model, widths)
  images = jax.random.normal(jax.random.key(2), (16, *shape))
  labels = jax.random.randint(jax.random.key(3), (16,), 0, 10)

  def loss(params):
    logits = slimmed.apply({'params': params}, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  tx = optax.sgd(0.05)
  params = jax.tree.map(jnp.asarray, sliced['params'])
  before, grads = jax.jit(jax.value_and_grad(loss))(params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert jax.jit(loss)(optax.apply_updates(params, updates)) < before


def test_lenet5_exact_when_the_removed_channels_are_dead():
  widths, _, before, killed = _check_exact('lenet5', 28)
  assert widths == {layer: before[layer] - n for layer, n in killed.items()}


def test_resnet20_exact_with_residual_streams_pruned_together():
  widths, sliced, before, killed = _check_exact('resnet20', 32)
  assert widths == {layer: before[layer] - n for layer, n in killed.items()}
  assert widths['conv1'] == widths['layer3_2/conv2'] - 24 == 8  # stream: 8 + 8 + 16 of 64
  slimmed = slim(models.create_model('resnet20', num_classes=10), widths)
  created = jax.eval_shape(lambda: slimmed.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert _shapes(created) == _shapes(sliced)


def test_densenet_exact_through_concatenations():
  widths, _, before, killed = _check_exact(
      'densenet_bc_100_k12', 16, block_config=(2, 2), growth_rate=6, num_init_features=8
  )
  assert widths == {layer: before[layer] - n for layer, n in killed.items()}


def test_vgg_exact_through_adaptive_pooling_and_flatten():
  widths, _, before, killed = _check_exact(
      'vgg11', 32, widths=(8, 8, 16, 16, 16), hidden_width=16, pool_size=2
  )
  assert widths == {layer: before[layer] - n for layer, n in killed.items()}


def test_mobilenet_v2_exact_leaving_streams_its_code_tests_for_width():
  # InvertedResidual adds its input only `if x.shape[-1] == self.features`: pruning a residual
  # stream would drop the addition, so those bundles are found and left whole.
  widths, _, before, killed = _check_exact('mobilenet_v2', 32, width_mult=0.25)
  assert widths['features_2/expand/conv'] == before['features_2/expand/conv'] - 24
  assert widths['features_2/depthwise/conv'] == widths['features_2/expand/conv']
  assert 'features_3/project/conv' not in widths and killed['features_3/project/conv'] > 0


def test_shufflenet_channel_shuffle_is_unprunable_and_the_rest_exact():
  widths, _, before, killed = _check_exact('shufflenet_v2_x0_5', 32)
  model, variables, shape = _init('shufflenet_v2_x0_5', 32)
  graph = channel_graph.analyse(model, variables, shape)
  shuffled = [graph.groups[g] for g in graph.layer_channels['stage2_1/branch2_2/conv']]
  assert all(not g.prunable for g in shuffled)
  assert 'stage2_1/branch2_2/conv' not in widths
  assert widths['stage2_1/branch2_0/conv'] == before['stage2_1/branch2_0/conv'] - 12


@pytest.mark.parametrize(
    'kwargs, message',
    [
        ({'fraction': 1.0}, r'\[0, 1\)'),
        ({'fraction': -0.1}, r'\[0, 1\)'),
        ({'fraction': 0.5, 'saliency': 'taylor'}, 'saliency'),
        ({'fraction': 0.5, 'layers': 'conv9'}, 'matches no conv'),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs, message):
  model, variables, shape = _init('lenet5', 28)
  with pytest.raises(ConfigError, match=message):
    fp.prune_filters(model, variables, shape, **kwargs)


def test_layers_restricts_pruning_and_zero_fraction_prunes_nothing():
  model, variables, shape = _init('lenet5', 28)
  widths, _ = fp.prune_filters(model, variables, shape, 0.5, layers='conv.')
  assert widths == {'conv1': 3, 'conv2': 8}
  widths, sliced = fp.prune_filters(model, variables, shape, 0.0)
  assert widths == {} and _shapes(sliced) == _shapes(dict(variables))
  widths, _ = fp.prune_filters(model, variables, shape, 0.99)  # floor(0.99 n), ≥ 1 kept
  assert widths == {'conv1': 1, 'conv2': 1, 'fc1': 120 - 118, 'fc2': 1}
