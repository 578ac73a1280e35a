"""malloc keeps freed memory: an XLA program's later runs fault in none of its scratch pages."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from common import host_memory

# A jitted program whose 64 MB scratch (sin(x), the matmul's operand) XLA allocates every run.
_RUNS = """
import json, resource, sys
from common import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == 'keep' else False
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) @ x[:, :8]).sum())
x = jnp.ones((4096, 4096))
faults = []
for _ in range(12):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'applied': applied, 'faults': faults[1:]}))
"""
SCRATCH_PAGES = 4096 * 4096 * 4 // 4096


def _later_runs(setting: str) -> dict:
  users = set(host_memory.user_settings())
  env = {k: v for k, v in os.environ.items() if k not in users}
  done = subprocess.run(
      [sys.executable, '-c', _RUNS, setting],
      cwd=REPO,
      env={**env, 'PYTHONPATH': REPO, 'JAX_PLATFORMS': 'cpu'},
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc malloc settings')
def test_later_runs_of_a_program_reuse_its_scratch_pages():
  plain, kept = _later_runs('plain'), _later_runs('keep')
  if not kept['applied']:
    pytest.skip('not glibc: keep_freed_memory changes nothing here')
  if min(plain['faults']) < SCRATCH_PAGES // 2:
    pytest.skip(f'this kernel backs fresh mappings with huge pages ({plain["faults"]} faults)')
  # The heap settles within a few runs (small allocations take some of a freed buffer's space
  # first); from then on the scratch's pages are reused.
  assert min(kept['faults']) < SCRATCH_PAGES // 100, (plain, kept)
  assert sum(f < SCRATCH_PAGES // 100 for f in kept['faults']) >= 4, kept


def test_the_users_own_malloc_settings_are_left_alone(monkeypatch):
  monkeypatch.setenv('MALLOC_ARENA_MAX', '8')
  assert host_memory.user_settings() == ['MALLOC_ARENA_MAX']
  assert host_memory.keep_freed_memory() is False


def test_an_accelerator_keeps_glibcs_defaults(monkeypatch, tmp_path):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert not host_memory.cpu_only()
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_memory.cpu_only()
  monkeypatch.delenv('JAX_PLATFORMS')
  plugin = tmp_path / 'jax_plugins' / 'xla_cuda12'  # as jax-cuda12-plugin installs it
  plugin.mkdir(parents=True)
  (plugin / '__init__.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path))
  assert not host_memory.cpu_only()
