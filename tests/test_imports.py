"""Imports only go down: every import in the project, top-level or inside a function, points to
its own package or to a layer below it (docs/design.md, "Layout")."""

import ast
import os
import subprocess
import sys

from conftest import REPO

# Bottom to top. A package may import itself and the packages of lower layers, nothing else:
# not its neighbours in the same layer, not a layer above.
LAYERS = (
    ('common',),
    ('models', 'input_pipeline', 'configs'),
    ('train_lib',),
    ('analysis', 'compression', 'pretrained'),
    ('main', 'benchmarks'),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
TENSORFLOW = ('tensorflow', 'tensorflow_datasets')
TENSORFLOW_USERS = ('input_pipeline', 'benchmarks')  # the others run where TensorFlow is absent


def project_sources() -> dict[str, str]:
  """Every project module's source by its path relative to the repository (tests excluded)."""
  sources = {}
  for root, dirs, names in os.walk(REPO):
    dirs[:] = [d for d in dirs if not d.startswith('.') and d not in ('tests', '__pycache__')]
    for name in names:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        with open(path) as f:
          sources[os.path.relpath(path, REPO)] = f.read()
  return sources


def imported_roots(source: str) -> set[str]:
  """The top-level names of every module `source` imports, anywhere in the file."""
  roots = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      roots.update(alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      roots.add(node.module.split('.')[0])
  return roots


def violations(sources: dict[str, str]) -> list[str]:
  """'path imports package' for every import that runs sideways or up, or pulls TensorFlow
  into a package that must run without it."""
  found = []
  for path, source in sorted(sources.items()):
    package = path.split(os.sep)[0].removesuffix('.py')
    if package not in RANK:
      found.append(f'{path} is in no layer: add its package to LAYERS (and to docs/design.md)')
      continue
    for root in sorted(imported_roots(source)):
      if root in RANK and root != package and RANK[root] >= RANK[package]:
        found.append(
            f"{path} imports {root} (layer {RANK[root]}, not below {package}'s {RANK[package]})"
        )
      if root in TENSORFLOW and package not in TENSORFLOW_USERS:
        found.append(f'{path} imports {root}: only {", ".join(TENSORFLOW_USERS)} may')
  return found


def test_every_import_goes_down():
  assert violations(project_sources()) == []


def test_the_check_catches_upward_sideways_and_tensorflow_imports():
  sources = {
      os.path.join('models', 'resnet.py'): 'def f():\n  from train_lib import train\n',
      os.path.join('input_pipeline', 'x.py'): 'import models\n',
      os.path.join('train_lib', 'y.py'): 'import main\nimport tensorflow as tf\n',
      os.path.join('analysis', 'z.py'): 'import models\nfrom common import files\n',
      os.path.join('extras', 'w.py'): '',
  }
  assert violations(sources) == [  # analysis/z.py imports only what is below it
      f'{os.path.join("extras", "w.py")} is in no layer: add its package to LAYERS (and to '
      'docs/design.md)',
      f'{os.path.join("input_pipeline", "x.py")} imports models (layer 1, not below '
      "input_pipeline's 1)",
      f"{os.path.join('models', 'resnet.py')} imports train_lib (layer 2, not below models's 1)",
      f"{os.path.join('train_lib', 'y.py')} imports main (layer 4, not below train_lib's 2)",
      f'{os.path.join("train_lib", "y.py")} imports tensorflow: only input_pipeline, '
      'benchmarks may',
  ]


def test_models_and_the_trainer_load_without_tensorflow():
  code = (
      'import sys; import models, train_lib.train, analysis.summary; '
      'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", '
      '"tensorflow_datasets")))'
  )
  done = subprocess.run(
      [sys.executable, '-c', code],
      cwd=REPO,
      capture_output=True,
      text=True,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
      timeout=120,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == '[]'
