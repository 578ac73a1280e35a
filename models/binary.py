"""Binary networks: conv and dense layers that compute with the signs of their weights.

BinaryConnect (Courbariaux, Bengio & David 2015) keeps float ("latent") weights as the trained
parameters and runs the forward pass with sign(W) ∈ {−1, +1}; BNN (Hubara et al. 2016) also
binarizes the activations; XNOR-Net (Rastegari et al. 2016) scales each output filter's signs by
α = mean|W| and keeps the first conv and the last layer float. The sign's gradient is the
straight-through estimator of Htanh (Hubara et al. 2016): 1 where |x| ≤ 1, else 0.

Every `nn.Conv` and `nn.Dense` of a registered model is binarized through its own contraction
hook (`conv_general_dilated_cls`, `dot_general_cls`), so flax still computes the layer, every
padding form included, and the variable tree is exactly the float model's: weights from a float
run load as the latent weights. Where we differ from the papers:

- sign(0) = +1; with `scale`, α is differentiated as mean|W| (as XNOR-Net's code does, not its
  paper's simplified gradient) and each layer's bias stays float.
- Activations are binarized at each binarized layer's input, not by the network's activation.
  After a ReLU every input is ≥ 0 and binarizes to +1, so `activations` needs a network with a
  signed activation (lenet5 `activation='tanh'`): XNOR-Net reorders its blocks as BN → sign →
  conv → pool, which the zoo's architecture code does not. Scaling factors of the activations
  (XNOR-Net's K) are not computed.
- `keep_first_last` keeps the first and the last conv-or-dense layer in call order float (the
  last is a conv in NIN and SqueezeNet). Other contractions (lenet5_1998's connection-table
  conv, einsums) are never binarized.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.intercepted import Intercepted, layer_call

# The contraction hook of each layer type: flax calls `hook()` for the op when it is set.
_HOOKS = {nn.Conv: 'conv_general_dilated_cls', nn.Dense: 'dot_general_cls'}
_capture: dict[str, jax.Array] | None = None  # set by binary_weights while its forward pass runs


@jax.custom_vjp
def binary_sign(x: jax.Array) -> jax.Array:
  """sign(x) ∈ {−1, +1} with sign(0) = +1; its gradient is Htanh's, 1 where |x| ≤ 1, else 0."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _sign_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  return binary_sign(x), x


def _sign_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
  return (jnp.where(jnp.abs(x) <= 1, g, jnp.zeros_like(g)),)


binary_sign.defvjp(_sign_fwd, _sign_bwd)


def binary_kernel(kernel: jax.Array, scale: bool = False) -> jax.Array:
  """sign(W), times α = mean|W| of each output filter (the last axis) when `scale` (XNOR-Net)."""
  signs = binary_sign(kernel)
  if not scale:
    return signs
  alpha = jnp.mean(jnp.abs(kernel), axis=tuple(range(kernel.ndim - 1)), keepdims=True)
  return signs * alpha


def layer_order(model: nn.Module, *args: Any, **kwargs: Any) -> list[str]:
  """The paths of `model`'s nn.Conv and nn.Dense layers in the order a call with these
  arguments runs them (a shape-only trace of `model.init`; arrays may be tracers)."""
  order = []

  def record(next_fun, call_args, call_kwargs, context):
    path = layer_call(context)
    if path is not None and path not in order:
      order.append(path)
    return next_fun(*call_args, **call_kwargs)

  def init():
    zeros = jax.tree.map(
        lambda a: jnp.zeros(a.shape, a.dtype) if hasattr(a, 'shape') else a, (args, kwargs)
    )
    with nn.intercept_methods(record):
      rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
      return model.init(rngs, *zeros[0], **zeros[1])

  jax.eval_shape(init)
  return order


def _binary_layer(
    next_fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: Any,
    *,
    prefix: tuple[str, ...],
    weights: frozenset[str] | None,
    inputs: frozenset[str],
    scale: bool,
) -> Any:
  """Runs a conv's or dense's __call__ with its contraction fed binarized weights (the layers in
  `weights`, all if None) and binarized inputs (the layers in `inputs`)."""
  path = layer_call(context, prefix)
  if path is None or (weights is not None and path not in weights):
    return next_fun(*args, **kwargs)
  module = context.module
  hook = _HOOKS[nn.Conv if isinstance(module, nn.Conv) else nn.Dense]
  original = getattr(module, hook)
  if original is not None:
    contraction = original()
  elif isinstance(module, nn.Conv):
    contraction = module.conv_general_dilated or jax.lax.conv_general_dilated
  else:
    contraction = module.dot_general or jax.lax.dot_general
  calls = []

  def binary_contraction(lhs: jax.Array, rhs: jax.Array, *op_args: Any, **op_kwargs: Any):
    if path in inputs:
      lhs = binary_sign(lhs)
    rhs = binary_kernel(rhs, scale)
    if _capture is not None:  # a factorised layer has two contractions: path, path#1
      _capture[f'{path}#{len(calls)}' if calls else path] = rhs
    calls.append(path)
    return contraction(lhs, rhs, *op_args, **op_kwargs)

  object.__setattr__(module, hook, lambda: binary_contraction)
  try:
    return next_fun(*args, **kwargs)
  finally:
    object.__setattr__(module, hook, original)


class Binarized(Intercepted):
  """`base` with binarized conv and dense layers (`binarize`); `interceptor` is `_binary_layer`.

  Which layers are first and last is found at each call by a shape-only trace of the base
  model (only when `keep_first_last` or `activations` needs it; under jit, once per trace).
  """

  activations: bool = False
  scale: bool = False
  keep_first_last: bool = True

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    weights, inputs = None, frozenset()
    if self.keep_first_last or self.activations:
      order = layer_order(self.base.clone(parent=None), *args, **kwargs)
      binarized = order[1:-1] if self.keep_first_last else order
      weights = frozenset(binarized)
      if self.activations:  # the first layer's input is the image
        inputs = weights - {order[0]} if order else frozenset()
    interceptor = functools.partial(
        self.interceptor, prefix=self.path, weights=weights, inputs=inputs, scale=self.scale
    )
    with nn.intercept_methods(interceptor):
      return self.base(*args, **kwargs)


def binarize(
    model: nn.Module,
    *,
    activations: bool = False,
    scale: bool = False,
    keep_first_last: bool = True,
) -> nn.Module:
  """`model` computing each conv and dense with sign(W) (BinaryConnect), times the per-filter
  α = mean|W| if `scale` (XNOR-Net), on sign-binarized inputs if `activations` (BNN; not the
  image); `keep_first_last` leaves the first and last layer float, as XNOR-Net does."""
  return Binarized(
      model,
      _binary_layer,
      activations=activations,
      scale=scale,
      keep_first_last=keep_first_last,
  )


@contextlib.contextmanager
def _capturing() -> Iterator[dict[str, jax.Array]]:
  global _capture
  previous, _capture = _capture, {}
  try:
    yield _capture
  finally:
    _capture = previous


def binary_weights(
    model: nn.Module, variables: Any, image_shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
  """{layer path: the ±1 (×α) kernel its forward pass uses} for a `binarize`d model, read from
  one eager forward pass on zeros of `image_shape` ((H, W, C), or with a batch axis)."""
  if len(image_shape) == 3:
    image_shape = (1, *image_shape)
  with _capturing() as captured:
    model.apply(variables, jnp.zeros(image_shape, jnp.float32), train=False)
    return {path: np.asarray(kernel) for path, kernel in captured.items()}
