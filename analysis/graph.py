"""The forward pass as a graph of array operations, from its jaxpr, with receptive fields.

`jax.make_jaxpr` records every primitive a model applies, whatever Python built it: flax
modules, functional layers, branches and merges. Walking it once gives each operation's shapes,
its place in the module tree (flax runs every module method under `jax.named_scope`) and, by
`rules.propagate`, the receptive field of every array. Walking it again with values returns the
arrays of chosen operations (feature maps), so the summary and the pictures name layers alike.
"""

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.extend import core

from analysis import geometry, rules
from common import jaxprs
from models import fast_conv

_NAME = re.compile(r'[\w.\-]+')
_FOLD_LIMIT = 1 << 16  # constants up to this many elements are computed (pooling matrices)


@dataclasses.dataclass
class Slot:
  """What the walk knows about one array: a stable id, its receptive-field geometry, whether it
  is a compile-time constant (and its value when small), and its value when evaluating."""

  id: int | None
  shape: tuple[int, ...]
  geometry: rules.Geometry = None
  constant: bool = False
  known: Any = None
  value: Any = None


@dataclasses.dataclass
class Op:
  """One primitive applied to the network's data, in call order."""

  scope: tuple[str, ...]  # module path (flax names) and function scopes, outermost first
  eqn: Any
  inputs: list[Slot]
  outputs: list[Slot]


@dataclasses.dataclass
class Graph:
  ops: list[Op]
  input_id: int
  output_ids: list[int]
  module_types: dict[tuple[str, ...], str]  # module path → class name
  captured: dict[int, Any]


def _scope_names(name_stack) -> tuple[str, ...]:
  """Module and function scope names; transformation wrappers ('jvp(...)') and the scopes jnp
  functions open for themselves (einsum's 'nhwc,ih->...') are not layers."""
  return tuple(part for part in str(name_stack).split('/') if _NAME.fullmatch(part))


class _Walker:
  """Interprets a jaxpr equation by equation, tracking `Slot`s (and values, when evaluating)."""

  def __init__(self, evaluate: bool, capture: frozenset = frozenset()):
    self.evaluate, self.capture = evaluate, capture
    self.ops: list[Op] = []
    self.captured: dict[int, Any] = {}
    self._ids = 0

  def fresh(self) -> int:
    self._ids += 1
    return self._ids

  def run(self, jaxpr, consts: list, args: list[Slot], scope: tuple[str, ...]) -> list[Slot]:
    env: dict[Any, Slot] = {}

    def read(var) -> Slot:
      if isinstance(var, core.Literal):
        value = np.asarray(var.val)
        return Slot(None, value.shape, constant=True, known=value, value=var.val)
      return env[var]

    for var, const in zip(jaxpr.constvars, consts):
      small = np.size(const) <= _FOLD_LIMIT
      env[var] = Slot(
          self.fresh(),
          np.shape(const),
          constant=True,
          known=np.asarray(const) if small else None,
          value=const,
      )
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
      inputs = [read(v) for v in eqn.invars]
      inner_scope = scope + _scope_names(eqn.source_info.name_stack)
      sub = jaxprs.sub_jaxpr(eqn)
      if sub is not None:
        outputs = self.run(sub[0], sub[1], inputs, inner_scope)
      else:
        outputs = self.apply(eqn, inputs, inner_scope)
      env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]

  def apply(self, eqn, inputs: list[Slot], scope: tuple[str, ...]) -> list[Slot]:
    constant = all(s.constant for s in inputs)
    known_inputs = [s.known for s in inputs]
    values = [None] * len(eqn.outvars)
    if self.evaluate:
      values = bind(eqn, [s.value for s in inputs])
    known = [None] * len(eqn.outvars)
    if (
        constant
        and all(k is not None for k in known_inputs)
        and all(np.prod(v.aval.shape) <= _FOLD_LIMIT for v in eqn.outvars)
    ):
      with jax.ensure_compile_time_eval():  # computed now, also inside a jit-compiled walk
        known = [np.asarray(x) for x in bind(eqn, known_inputs)]
    geometries = rules.propagate(eqn, [s.geometry for s in inputs], known_inputs)
    outputs = [
        Slot(self.fresh(), var.aval.shape, geom, constant, k, v)
        for var, geom, k, v in zip(eqn.outvars, geometries, known, values)
    ]
    if not constant:
      self.ops.append(Op(scope, eqn, inputs, outputs))
      for slot in outputs:
        if slot.id in self.capture:
          self.captured[slot.id] = slot.value
    return outputs


def bind(eqn, args: list) -> list:
  """Applies one equation to `args` (as jax.core.eval_jaxpr does)."""
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns, params = params if isinstance(params, tuple) else ([], params)  # jax < 0.7: a pair
  out = eqn.primitive.bind(*subfuns, *args, **params)
  return list(out) if eqn.primitive.multiple_results else [out]


def forward(model: nn.Module):
  return lambda variables, images: model.apply(variables, images, train=False)


def trace(model: nn.Module, variables: Any, images: Any) -> tuple[Any, dict]:
  """The eval-mode forward pass's jaxpr, with flax's named scopes forced on, and the class of
  every module it calls (by path)."""
  module_types: dict[tuple[str, ...], str] = {}

  def record(next_fun, args, kwargs, context):
    module_types.setdefault(tuple(context.module.path), type(context.module).__name__)
    return next_fun(*args, **kwargs)

  # lax's convs everywhere (models/fast_conv.py): the network as written, whatever runs faster.
  with nn.override_named_call(True), nn.intercept_methods(record), fast_conv.plain():
    closed = jax.make_jaxpr(forward(model))(variables, images)
  return closed, module_types


def walk(
    model: nn.Module,
    variables: Any,
    images: Any,
    *,
    evaluate: bool = False,
    capture: frozenset = frozenset(),
) -> Graph:
  """The graph of `model`'s eval forward pass on `images` (arrays or ShapeDtypeStructs).

  With `evaluate`, values flow too and the outputs of the ops whose ids are in `capture` are
  returned in `Graph.captured` (call it under `jax.jit` to compile the walk).
  """
  closed, module_types = trace(model, variables, images)
  walker = _Walker(evaluate, capture)
  leaves = jax.tree.leaves(variables)
  params = [Slot(walker.fresh(), x.shape, value=x) for x in leaves]
  image = Slot(
      walker.fresh(), images.shape, value=images, geometry=(geometry.pixels(1), geometry.pixels(2))
  )
  outputs = walker.run(closed.jaxpr, closed.consts, [*params, image], ())
  return Graph(walker.ops, image.id, [s.id for s in outputs], module_types, walker.captured)
