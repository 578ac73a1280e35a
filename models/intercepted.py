"""A registered model with some of its layers' calls rewritten, its variable paths kept.

Compression changes layers, not architectures: a filter-pruned model is the registered model
with narrower convolutions, a low-rank one has some layers factorised, a binary one computes
with the signs of its weights. Each is the registered model run under a flax method
interceptor, with the base model's scope shared, so every variable keeps its path
(`conv1/kernel`, `layer1_0/conv1/kernel`) and a checkpoint, the summary and every analysis mode
see the same names as for the base model.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

Interceptor = Callable[..., Any]  # (next_fun, args, kwargs, context) → output, as flax passes


LAYERS = (nn.Conv, nn.Dense)  # the layers compression rewrites


def layer_call(context: Any, prefix: tuple[str, ...] = ()) -> str | None:
  """The path ('layer1_0/conv1', relative to the wrapper's own path `prefix`) of the nn.Conv or
  nn.Dense whose __call__ the interceptor's `context` holds, or None for any other call."""
  if context.method_name != '__call__' or not isinstance(context.module, LAYERS):
    return None
  return '/'.join(context.module.path[len(prefix) :])


class Intercepted(nn.Module):
  """`base` with its modules' methods routed through `interceptor`.

  Subclasses (Slimmed, Factorized, Binarized) add the fields their interceptor reads. They do not
  nest yet: a second one inside the first reserves the shared scope's name `base` twice.
  """

  base: nn.Module
  interceptor: Interceptor

  def setup(self):
    nn.share_scope(self, self.base)

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(self.interceptor):
      return self.base(*args, **kwargs)
