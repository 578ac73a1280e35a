"""Data parallelism as jit over a one-axis device mesh: batch sharded, state replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  """A mesh of all devices of all processes along the `data` axis."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(
        f'batch_size={batch_size} must be a multiple of the number of devices '
        f'({mesh.size}); every device takes an equal share of the batch.'
    )


def to_global(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's share of the batch into one global, batch-sharded jax.Array."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
