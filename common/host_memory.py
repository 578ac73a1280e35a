"""glibc's malloc told to keep freed memory, so that XLA's CPU programs reuse their pages.

XLA's CPU client allocates a program's scratch buffer with malloc every time the program runs:
290 MB for ResNet-20's train step at batch 128. glibc serves an allocation that large with a
fresh `mmap` and unmaps it when it is freed, so every step faults the whole buffer in again,
page by page: 74,128 page faults a step, about 180 ms of an 860 ms step on one core (a fresh
290 MB mapping touched page by page took 177–193 ms here). With one arena, no `mmap`s and no
trimming below 2 GB, glibc serves the buffer from its heap and keeps it when freed; later
steps reuse the same pages: no page faults, ResNet-20's step 860 → 719 ms (one core, best of
4 steps, separate runs).

The price is memory. Small allocations settle in a freed scratch buffer's space, so the heap
grows by a few scratch buffers before steps find one free: ResNet-20's resident memory went
from 1.0 GB to 1.58 GB by its 8th step and stayed there (20 steps). Asking for huge pages
instead (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, read only when a process starts) kept the
memory as it was and ResNet-20's step at 700 ms, but made compiling ~15 % slower and
DenseNet-BC-100's step slower than with neither.

`main.py` and the benchmarks apply it before JAX starts its threads (`command_line.run`), on
a machine without an accelerator for JAX (JAX_PLATFORMS=cpu, or no GPU or TPU plugin
installed): there the scratch lives on the device, and one arena for all of tf.data's
threads would gain nothing (not measured). A `MALLOC_*` variable or `GLIBC_TUNABLES` in the
environment means you chose your own settings (`MALLOC_ARENA_MAX=8` turns this off): they are
left alone. Elsewhere than glibc on Linux nothing changes.
"""

import ctypes
import ctypes.util
import importlib.util
import os
import pkgutil
import sys

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP_BELOW = 2**31 - 1  # bytes of free heap top kept rather than returned to the system


def user_settings() -> list[str]:
  """The malloc settings the environment already makes."""
  return sorted(k for k in os.environ if k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES')


def cpu_only() -> bool:
  """Whether JAX will run on the CPU: told so, or no accelerator plugin installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return platforms == 'cpu'
  plugins = importlib.util.find_spec('jax_plugins')  # where jax finds its GPU plugins
  if plugins and any(pkgutil.iter_modules(plugins.submodule_search_locations)):
    return False
  return importlib.util.find_spec('libtpu') is None


def _glibc() -> bool:
  try:
    return (os.confstr('CS_GNU_LIBC_VERSION') or '').startswith('glibc')
  except (ValueError, OSError):
    return False


def keep_freed_memory() -> bool:
  """One malloc arena, no `mmap`ed chunks, no trimming of the heap below 2 GB, where the module
  says; call it before threads start. Returns whether the settings were made."""
  if not sys.platform.startswith('linux') or user_settings() or not cpu_only() or not _glibc():
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  # Arena first: other threads' arenas serve large chunks with mmap whatever the limit says.
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP_BELOW))
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
