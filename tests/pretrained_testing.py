"""Helpers for the conversion tests: a fixture's seeded weights, converted and run, against the
reference's logits recorded in tests/fixtures/pretrained (made by pretrained/make_fixtures.py)."""

import functools
import json
import os

import numpy as np
from model_testing import fast_jit

from pretrained import convert, seeded, sources

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'pretrained')
TOLERANCE = 1e-4  # of the largest reference logit, in float32


def fixture_names(library: str) -> list[str]:
  return sorted(n for n, s in sources.SOURCES.items() if s.library == library)


@functools.cache
def fixture(model: str) -> dict:
  with open(os.path.join(FIXTURES, f'{model}.json')) as f:
    return json.load(f)


def reference_tensors(model: str) -> dict[str, np.ndarray]:
  """The tensors the fixture script loaded into the reference, drawn again from the seed."""
  return seeded.tensors(fixture(model)['tensors'], fixture(model)['seed'])


def relative_difference(model: str, variables) -> float:
  """max |ours − reference| / max |reference| over the fixture's two images' logits."""
  spec = fixture(model)
  images = seeded.uniform(spec['seed'], 'images', spec['images'], -2.0, 2.0)
  network = sources.create_model(model)
  ours = np.asarray(fast_jit(lambda v, x: network.apply(v, x, train=False))(variables, images))
  reference = np.asarray(spec['logits'], np.float32)
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


def check_conversion(model: str) -> float:
  """Converts the fixture's weights and returns the relative logit difference (asserted small)."""
  variables = convert.convert(model, reference_tensors(model))
  difference = relative_difference(model, variables)
  assert difference <= TOLERANCE, f'{model}: logits differ by {difference:.2e} of the largest'
  return difference
