"""common.cpu_scratch: with `--reuse_cpu_scratch` a CPU program's large scratch buffer is
reused from step to step instead of being faulted in anew."""

import json
import os
import shutil
import subprocess
import sys

import jax
import pytest
from conftest import REPO

from common import cpu_scratch

# A jitted program whose scratch (the 128 MB product, read by two reductions) is over the 64 MB
# that a worker thread's malloc arena serves from its heap. It prints its scratch bytes and the
# page faults of each call until three calls in a row fault under 5 % of the scratch's pages
# (malloc has kept it), or of `argv[2]` calls.
PROGRAM = """
import json, sys
from common import cpu_scratch
if sys.argv[1] == 'reuse':
  assert cpu_scratch.reuse_scratch()
import jax, jax.numpy as jnp
from benchmarks import harness
f = jax.jit(lambda a, w: (lambda y: y.max() - y.min())(a @ w))
a, w = jnp.ones((1 << 21, 16)), jnp.ones((16, 16))
scratch = f.lower(a, w).compile().memory_analysis().temp_size_in_bytes
faults, kept = [], 0.05 * scratch / 4096
while len(faults) < int(sys.argv[2]) and not (len(faults) >= 3 and max(faults[-3:]) < kept):
  faults.append(harness.page_faults(lambda: f(a, w)))
print(json.dumps({'scratch': scratch, 'faults': faults, 'applied': cpu_scratch.applied()}))
"""


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  """`code` run by a fresh Python on the CPU, in the repository, with `env` added."""
  run = subprocess.run(
      [sys.executable, '-c', code, *args],
      cwd=REPO,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu', **env},
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  return run


def _run(mode: str, calls: int) -> dict:
  return json.loads(_python(PROGRAM, mode, str(calls)).stdout.splitlines()[-1])


@pytest.mark.skipif(cpu_scratch._glibc() is None, reason='the page faults are glibc malloc')
def test_a_large_scratch_buffer_is_faulted_in_every_call_unless_reused():
  default, reused = _run('default', calls=20), _run('reuse', calls=60)
  assert default['scratch'] >= 128 << 20 and not default['applied'] and reused['applied']
  pages = default['scratch'] / 4096
  # The whole buffer mapped afresh, every call: it never settles.
  assert len(default['faults']) == 20 and min(default['faults']) > 0.9 * pages
  # Kept by malloc: after a few calls (how many varies from run to run, as the heap grows until
  # it has room for the buffer beside what else it holds), calls fault nothing.
  assert len(reused['faults']) < 60 and max(reused['faults'][-3:]) < 0.05 * pages, reused['faults']


def test_it_refuses_once_jax_has_started():
  jax.devices()
  with pytest.raises(RuntimeError, match='before JAX starts'):
    cpu_scratch.reuse_scratch()
  assert not cpu_scratch.applied()


# A malloc of its own, preloaded in glibc's place (it hands the call on to glibc's).
SHIM = """
#include <stddef.h>
void *__libc_malloc(size_t size);
void *malloc(size_t size) { return __libc_malloc(size); }
"""


@pytest.mark.skipif(cpu_scratch._glibc() is None, reason='glibc malloc only')
@pytest.mark.skipif(shutil.which('gcc') is None, reason='builds a preloaded malloc with gcc')
def test_a_preloaded_malloc_is_not_tuned_and_the_command_line_says_so(tmp_path):
  (tmp_path / 'shim.c').write_text(SHIM)
  shim = tmp_path / 'shim.so'
  subprocess.run(['gcc', '-shared', '-fPIC', '-o', shim, tmp_path / 'shim.c'], check=True)
  check = (
      'import sys; from common import command_line, cpu_scratch; '
      "sys.argv = ['check', '--reuse_cpu_scratch']; "
      'command_line.run(lambda argv: print(cpu_scratch.applied(), cpu_scratch._glibc() is None))'
  )
  results = []
  for preload in ({}, {'LD_PRELOAD': str(shim)}):
    run = _python(check, **preload)
    results.append((run.stdout.split()[-2:], "malloc is not glibc's" in run.stderr))
  # The dispatch changes either way; glibc is tuned, and the warning left out, only without it.
  assert results == [(['True', 'False'], False), (['True', 'True'], True)]
