"""Walking a traced program: the primitives that call a sub-jaxpr on their own operands.

The summary's layer graph (analysis/graph.py) and filter pruning's channel graph
(compression/channel_graph.py) both read a model's jaxpr and step into these calls (jit,
custom_jvp of relu, remat ...) as if their bodies were inline.
"""

from typing import Any

from jax.extend import core

CALLS = frozenset(
    {
        'pjit',
        'jit',
        'closed_call',
        'core_call',
        'custom_jvp_call',
        'custom_vjp_call',
        'custom_vjp_call_jaxpr',
        'remat',
        'checkpoint',
        'named_call',
    }
)


def sub_jaxpr(eqn) -> tuple[Any, list] | None:
  """(jaxpr, consts) that the call `eqn` runs, or None where `eqn` is not such a call."""
  if eqn.primitive.name not in CALLS:
    return None
  for value in eqn.params.values():
    if isinstance(value, core.ClosedJaxpr):
      return value.jaxpr, list(value.consts)
    if isinstance(value, core.Jaxpr):
      return value, []
  return None
