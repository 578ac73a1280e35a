"""Every torchvision model with published weights, converted from its fixture, computes the
reference's logits (tests/pretrained_testing.py)."""

import pretrained_testing
import pytest


@pytest.mark.parametrize('model', pretrained_testing.fixture_names('torchvision'))
def test_torchvision_weights_give_the_reference_logits(model):
  pretrained_testing.check_conversion(model)
