"""Weights and images drawn deterministically from a seed, the same with or without the
reference library: the conversion fixtures store only names, shapes and ranges, and the test
rebuilds the tensors the fixture script loaded into the reference.

Each tensor draws from its own PCG64 stream keyed by (seed, crc32 of its name) through
`random_raw`, whose output numpy keeps stable across releases (unlike the distributions of
`Generator`), and maps the 53 high bits to [low, high).
"""

import zlib
from collections.abc import Sequence

import numpy as np

Spec = Sequence[tuple[str, Sequence[int], float, float]]  # (name, shape, low, high)


_CHUNK = 1 << 20  # values drawn at a time: VGG's 103M-weight fc6 in 0.9 s instead of 18 s


def uniform(seed: int, name: str, shape: Sequence[int], low: float, high: float) -> np.ndarray:
  """float32 values in [low, high) for the tensor `name`, the same on every machine.

  Drawn a chunk at a time into the result: whole-tensor float64 temporaries (0.8 GB for VGG's
  fc6) spent most of their time faulting in fresh pages. The stream, and so every value, is
  the same as one draw of the whole tensor."""
  size = int(np.prod(shape))
  stream = np.random.PCG64([seed, zlib.crc32(name.encode())])
  values = np.empty(size, np.float32)
  for start in range(0, size, _CHUNK):
    bits = stream.random_raw(min(_CHUNK, size - start))
    unit = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    values[start : start + bits.size] = low + (high - low) * unit  # rounded to float32 here
  return values.reshape(shape)


def tensors(spec: Spec, seed: int) -> dict[str, np.ndarray]:
  """Every tensor of a fixture's `spec`, by name."""
  return {name: uniform(seed, name, shape, low, high) for name, shape, low, high in spec}


def ranges(name: str, shape: Sequence[int], fan_in: int) -> tuple[float, float]:
  """The range a tensor is drawn from, by what it is: He-uniform weights (so activations keep
  their scale through the depth), small biases, BatchNorm scales around 1 and running
  statistics away from a fresh model's 0 and 1, so that their conversion is tested."""
  leaf = name.rsplit('.', 1)[-1].rsplit('/', 1)[-1]
  if leaf in ('running_mean', 'moving_mean'):
    return -0.2, 0.2
  if leaf in ('running_var', 'moving_variance'):
    return 0.5, 1.5
  if leaf == 'gamma' or (leaf == 'weight' and len(shape) == 1):
    return 0.5, 1.5
  if leaf in ('bias', 'beta'):
    return -0.1, 0.1
  bound = float(np.sqrt(6.0 / max(fan_in, 1)))
  return -bound, bound


def write_fixture_weights(fixture: str, output: str) -> str:
  """Writes a conversion fixture's seeded tensors as the `.safetensors` file a user would
  download, with the reference's names: the whole flow (convert, predict, fine-tune) runs
  offline on them (random weights: the predictions mean nothing)."""
  import json  # pylint: disable=import-outside-toplevel

  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  with open(fixture) as f:
    spec = json.load(f)
  save_file(tensors(spec['tensors'], spec['seed']), output)
  return output


if __name__ == '__main__':
  import sys

  if len(sys.argv) != 3:
    sys.exit(
        'usage: python -m pretrained.seeded tests/fixtures/pretrained/<model>.json OUT.safetensors'
    )
  print(write_fixture_weights(sys.argv[1], sys.argv[2]))
