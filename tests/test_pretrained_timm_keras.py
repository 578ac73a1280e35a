"""Every timm and Keras model with published weights, converted from its fixture, computes the
reference's logits (tests/pretrained_testing.py)."""

import pretrained_testing
import pytest

MODELS = pretrained_testing.fixture_names('timm') + pretrained_testing.fixture_names('keras')


@pytest.mark.parametrize('model', MODELS)
def test_timm_and_keras_weights_give_the_reference_logits(model):
  pretrained_testing.check_conversion(model)
