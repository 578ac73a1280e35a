"""`--reuse_cpu_scratch`: XLA's CPU programs run on the calling thread, and glibc keeps the
memory they free, so that every step reuses its scratch pages instead of faulting them in anew.

XLA's CPU client mallocs a program's scratch buffer every time the program runs: 290 MB for
ResNet-20's train step at batch 128. By default the program runs on one of the client's worker
threads, whose malloc arena serves any chunk over 64 MB with a fresh `mmap` and unmaps it when
it is freed: every step faults its 74,128 pages in again, about 180 ms of ResNet-20's ~900 ms
step on one core. On the calling thread the buffer comes from glibc's main arena, which, told
never to `mmap` and never to trim its heap, keeps it for later steps: after the first few, once
the heap has grown room for it beside what else it holds, a step faults nothing in. (A trim
threshold of 2 GB is not enough: DenseNet-BC-100's step at batch 64 then still faulted 792,617
pages.) One arena for all threads (`MALLOC_ARENA_MAX=1`) also removes the faults, but tf.data's
threads then wait on it.

The price is the overlap of asynchronous dispatch: Python no longer prepares step k+1 while
step k runs. On two cores, `train_and_evaluate` on random host batches at batch 128: ResNet-20
282 → 344 img/s, LeNet-5 11,870 → 12,760; fed by tf.data, LeNet-5's quick start took 37–40 s
against 34–35 (the README has the runs). So it is off unless asked for: worth it where a step's
scratch is far over glibc's 32 MB `mmap` ceiling (most networks at CIFAR or ImageNet sizes), not
for LeNet-5. On an accelerator it gains nothing (the scratch lives on the device). Where malloc
is not glibc's (another C library, or an allocator preloaded in its place) only the dispatch
changes, and the command line warns.
"""

import ctypes
import ctypes.util
import os

import jax
from jax._src import xla_bridge

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = -1  # M_TRIM_THRESHOLD: never give the heap's free top back (mallopt(3))
_applied = False


def _glibc() -> ctypes.CDLL | None:
  """glibc, where it is the C library and its malloc is the process's: an allocator preloaded
  in its place (jemalloc, tcmalloc via `LD_PRELOAD`) takes the calls that mallopt would tune."""
  try:
    if not (os.confstr('CS_GNU_LIBC_VERSION') or '').startswith('glibc'):
      return None
  except (ValueError, OSError):
    return None
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  process_malloc = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
  return libc if process_malloc == ctypes.cast(libc.malloc, ctypes.c_void_p).value else None


def reuse_scratch() -> bool:
  """Switches JAX's CPU client to run programs on the calling thread and glibc to keep freed
  memory. Must run before JAX starts its backends. Returns whether glibc took the settings."""
  if xla_bridge.backends_are_initialized():
    raise RuntimeError('reuse_scratch() must run before JAX starts its backends.')
  global _applied
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  _applied = True
  libc = _glibc()
  if libc is None:
    return False
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER))
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)


def applied() -> bool:
  """Whether `reuse_scratch()` ran in this process."""
  return _applied
