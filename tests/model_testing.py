"""Helpers for the model tests: shapes and counts without compute, and cheap compiles."""

import functools

import jax
import jax.numpy as jnp

import models
from train_lib.state import num_params

# Compute tests compile small graphs that run once: LLVM -O0 and the rbg PRNG (whose init
# graphs compile several times faster than threefry's) keep XLA's CPU compile time down.
fast_jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
FAST_KEY = jax.random.key(0, impl='rbg')


@functools.lru_cache(maxsize=None)
def abstract(name: str, size: int, batch: int = 1, **kwargs):
  """Shapes of params and of every submodule's output ('intermediates'), without compute."""
  model = models.create_model(name, **{'num_classes': 1000, **kwargs})
  return jax.eval_shape(functools.partial(model.init, capture_intermediates=True),
                        jax.random.key(0), jnp.zeros((batch, size, size, 3)))


def count(name: str, size: int, **kwargs) -> int:
  """Trainable parameters of `name` at a `size`×`size` input."""
  return num_params(abstract(name, size, **kwargs)['params'])


def shapes(name: str, size: int, batch: int = 1, **kwargs):
  """(variables' shapes, {top-level submodule: output shape})."""
  variables = abstract(name, size, batch, **kwargs)
  outputs = {k: v['__call__'][0].shape for k, v in variables['intermediates'].items()
             if k != '__call__'}
  return variables, outputs
