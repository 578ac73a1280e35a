"""Data parallelism as jit over a one-axis device mesh: batch sharded, state replicated."""

import collections
import os
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from common.errors import ConfigError

DATA_AXIS = 'data'


def is_multiprocess_launch() -> bool:
  """True when launched as one of several processes (explicitly, SLURM, MPI or a TPU pod)."""
  env = os.environ
  return bool(
      env.get('JAX_COORDINATOR_ADDRESS')
      or int(env.get('SLURM_NTASKS', '1')) > 1
      or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
      or ',' in env.get('TPU_WORKER_HOSTNAMES', '')
  )


def initialize_distributed_if_launched() -> None:
  """`jax.distributed.initialize()` when this is one of several processes; call it before
  anything touches a device. JAX_NUM_PROCESSES and JAX_PROCESS_ID are read where set."""
  if not is_multiprocess_launch():
    return
  env = os.environ
  jax.distributed.initialize(
      num_processes=int(env['JAX_NUM_PROCESSES']) if 'JAX_NUM_PROCESSES' in env else None,
      process_id=int(env['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in env else None,
  )


def make_mesh() -> Mesh:
  """A mesh of all devices of all processes along the `data` axis."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(batch_size: int, mesh: Mesh) -> None:
  if batch_size % mesh.size:
    raise ConfigError(
        f'batch_size={batch_size} must be a multiple of the number of devices '
        f'({mesh.size}); every device takes an equal share of the batch.'
    )


def to_global(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's share of the batch into one global, batch-sharded jax.Array."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def prefetch_to_devices(
    local_batches: Iterable[dict[str, np.ndarray]], sharding: NamedSharding, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
  """`to_global` of each batch, started `size` batches ahead: the copies to the devices run while
  the devices compute, so a step's batch is already there when the step starts."""
  queue = collections.deque()
  for batch in local_batches:
    queue.append(to_global(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
