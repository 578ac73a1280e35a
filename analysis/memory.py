"""Memory of a forward pass: the bytes of its activations and the memory access of its layers.

Both are counted on the summary's graph (`analysis.graph`) of one image (batch 1), before XLA
fuses or aliases anything:

- An array is an *activation* when it depends on the image; parameters, and what is computed
  from parameters alone (BatchNorm's folded scale), are not.
- *Live* bytes at an operation: every activation made so far and still to be read by a later
  operation (or returned), plus the operation's own results, as an interpreter that frees each
  array after its last use would hold. A residual block keeps its input alive across its
  branch until the add, which is the extra memory ResNet's shortcuts cost.
- *Memory access* of a convolution or matrix product: ShuffleNet v2's MAC (Ma et al. 2018, §2
  G1), the elements read and written once: input feature map, weights and output feature map,
  h·w·c1 + k·k·(c1/groups)·c2 + h'·w'·c2, which for a 1×1 convolution is h·w·(c1 + c2) + c1·c2.
  Elements, not bytes, as the paper counts them.
"""

import numpy as np

from analysis import macs as macs_lib


def memory_access(op) -> int:
  """Elements of a counted op's operands and results (its input, weights and output); 0 for any
  other op."""
  if not macs_lib.counted(op):
    return 0
  return sum(int(np.prod(v.aval.shape)) for v in (*op.eqn.invars, *op.eqn.outvars))


def activation_bytes(ops: list, input_id: int, input_bytes: int) -> dict[int, int]:
  """Bytes of every activation by slot id: the image's and every op result that depends on it."""
  sizes = {input_id: input_bytes}
  for op in ops:
    if any(s.id in sizes for s in op.inputs):
      for slot, var in zip(op.outputs, op.eqn.outvars):
        sizes[slot.id] = int(np.prod(var.aval.shape)) * np.dtype(var.aval.dtype).itemsize
  return sizes


def live_bytes(ops: list, sizes: dict[int, int], output_ids: list[int]) -> list[int]:
  """The activation bytes alive while each op runs: from the op that makes an array (the image:
  from the start) to the last op that reads it (the outputs: to the end)."""
  last = {i: -1 for i in sizes}  # an array nothing reads dies where it is made
  for i, op in enumerate(ops):
    for slot in op.inputs:
      if slot.id in last:
        last[slot.id] = i
  for slot_id in output_ids:
    if slot_id in last:
      last[slot_id] = len(ops) - 1
  first = {slot.id: i for i, op in enumerate(ops) for slot in op.outputs if slot.id in sizes}
  change = np.zeros(len(ops) + 1, np.int64)
  for slot_id, size in sizes.items():
    start = first.get(slot_id, 0)
    change[start] += size
    change[max(last[slot_id], start) + 1] -= size
  return [int(x) for x in np.cumsum(change)[:-1]]
