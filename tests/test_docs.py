"""The docs stand on their own and agree with the code: published counts match the registry,
every file they name exists, and nothing points outside the repository."""

import os
import re

import pytest
from conftest import REPO
from test_summary import REFERENCE

import models

TEXT_FILES = ('.py', '.md', '.txt', '.toml', '.ini', '.cfg', '')


def _repo_files():
  for root, dirs, names in os.walk(REPO):
    dirs[:] = [d for d in dirs if not d.startswith('.') and d != '__pycache__']
    for name in names:
      if os.path.splitext(name)[1] in TEXT_FILES:
        yield os.path.join(root, name)


def _read(*parts):
  with open(os.path.join(REPO, *parts), errors='replace') as f:
    return f.read()


def published_table() -> dict[str, tuple]:
  """model → (input size, params, GMACs or None) of the table in docs/published_figures.md."""
  rows = {}
  for line in _read('docs', 'published_figures.md').splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 6 and cells[0] in models.list_models():
      gmacs = float(cells[5].removesuffix(' G')) if cells[5] else None
      rows[cells[0]] = (int(cells[3]), int(cells[4].replace(',', '')), gmacs)
  return rows


def test_published_figures_are_the_ones_the_summary_tests_pin():
  assert published_table() == {
      name: (size, params, gmacs) for name, size, _, _, params, gmacs in REFERENCE
  }


def test_nothing_points_outside_the_repository():
  outside = re.compile(r'\.\./shared|REFERENCE\.md|DESIGN\.md')
  offenders = [
      os.path.relpath(path, REPO)
      for path in _repo_files()
      if outside.search(_read(path)) and os.path.abspath(path) != os.path.abspath(__file__)
  ]
  assert offenders == []


@pytest.mark.parametrize(
    'doc',
    [
        'README.md',
        'docs/design.md',
        'docs/adding_a_model.md',
        'docs/published_figures.md',
        'docs/compression.md',
        'docs/studies.md',
        'docs/segmentation.md',
    ],
)
def test_every_repository_path_a_doc_names_exists(doc):
  text = _read(doc)
  named = set(
      re.findall(
          r'`((?:docs|models|configs|tests|train_lib|analysis|input_pipeline|'
          r'common|benchmarks|compression|pretrained)/[\w/.]+\.(?:py|md|json))`',
          text,
      )
  )
  assert named, f'{doc} names no file: the pattern is wrong'
  missing = sorted(p for p in named if not os.path.exists(os.path.join(REPO, p)))
  assert missing == []
