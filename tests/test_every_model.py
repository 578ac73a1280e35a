"""Every registered model, at its native input (`jax.make_jaxpr`: no compute).

Its parameter count is the one its registry entry is pinned to, its logits have one entry per
class (at every pixel, for a model registered `per_pixel`), and its parameter tree (every
variable's path and shape) is pinned by a digest recorded in `param_trees.json`, so that a
refactor cannot rename or reshape a variable unnoticed: renamed paths would orphan every
checkpoint written before, and published counts live in the shapes.
The one trace is taken at precision=bfloat16, so it also shows mixed precision holding for every
model (tests/test_mixed_precision.py has the rest): convolutions and matrix multiplies in
bfloat16, parameters, BatchNorm statistics and logits in float32.
"""

import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import model_testing
import pytest

import models
from train_lib.state import num_params

TREES_FILE = os.path.join(os.path.dirname(__file__), 'param_trees.json')


@functools.cache
def native_trace(name: str):
  """(logits, variables, {dtypes of each conv and matmul's operands}) of one training forward
  pass of `name` at precision=bfloat16 on a native input image, that also creates the variables
  and updates the BatchNorm statistics; all abstract."""
  native = models.native_input(name)
  model = models.from_config({'name': name}, native.num_classes, precision='bfloat16')
  x = jax.ShapeDtypeStruct((1, native.image_size, native.image_size, native.channels), jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  forward = functools.partial(model.apply, {}, train=True, rngs=rngs, mutable=True)
  jaxpr, (logits, variables) = jax.make_jaxpr(forward, return_shape=True)(x)
  return logits, variables, model_testing.operand_dtypes(jaxpr)


def native_variables(name: str):
  """Abstract logits and variables (params, batch_stats) of `name` on one native input image."""
  logits, variables, _ = native_trace(name)
  return logits, {k: v for k, v in variables.items() if k != 'intermediates'}


def logits_shape(name: str) -> tuple[int, ...]:
  """One native image's logits: a score per class, at every pixel for a per-pixel model."""
  size, _, classes = models.native_input(name)
  return (1, size, size, classes) if models.entry(name).per_pixel else (1, classes)


def tree_digest(variables) -> str:
  """sha256 of the sorted (path, shape) pairs of every variable, first 16 hex digits."""
  leaves = sorted(
      (jax.tree_util.keystr(path), list(leaf.shape))
      for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
  )
  return hashlib.sha256(json.dumps(leaves).encode()).hexdigest()[:16]


def test_every_model_has_a_recorded_tree():
  with open(TREES_FILE) as f:
    assert sorted(json.load(f)) == models.list_models()


@pytest.mark.parametrize('name', models.list_models())
def test_parameter_tree_is_unchanged(name):
  with open(TREES_FILE) as f:
    recorded = json.load(f)[name]
  logits, variables = native_variables(name)
  assert tree_digest(variables) == recorded
  assert logits.shape == logits_shape(name)


@pytest.mark.parametrize('name', models.list_models())
def test_parameter_count_is_the_pinned_one(name):
  entry = models.entry(name)
  _, variables = native_variables(name)
  assert num_params(variables['params']) == entry.params, entry.reference
  assert entry.reference.strip(), 'every entry names the implementation it follows'


@pytest.mark.parametrize('name', models.list_models())
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state_and_logits(name):
  logits, variables, operands = native_trace(name)
  assert operands == {jnp.dtype(jnp.bfloat16)}, 'a conv or matmul left out of bfloat16'
  assert logits.dtype == jnp.float32
  kept = {c: {leaf.dtype for leaf in jax.tree.leaves(variables.get(c, {}))} for c in variables}
  assert kept['params'] == {jnp.dtype(jnp.float32)}
  assert kept.get('batch_stats', {jnp.dtype(jnp.float32)}) == {jnp.dtype(jnp.float32)}
  assert kept.get('intermediates', set()) <= {jnp.dtype(jnp.float32)}  # auxiliary heads' logits


def record_new_trees(names: list[str]) -> None:
  """Adds the trees of newly registered models to TREES_FILE; never rewrites a recorded one."""
  with open(TREES_FILE) as f:
    recorded = json.load(f)
  for name in names:
    if name in recorded:
      raise SystemExit(f'{name} is recorded already: a changed tree breaks its checkpoints.')
    recorded[name] = tree_digest(native_variables(name)[1])
  with open(TREES_FILE, 'w') as f:
    json.dump(recorded, f, indent=1, sort_keys=True)
    f.write('\n')


if __name__ == '__main__':  # python tests/test_every_model.py <new model name> ...
  import sys

  record_new_trees(sys.argv[1:])
