"""A registered model as a compression method leaves it, named by fields of `config.model`.

The fields rewrite layers of the registered model, never its architecture code, so the compressed
model trains, evaluates, checkpoints and summarises like any other (models/intercepted.py):

  pruned_widths      {'layer/path': channels}: filter-pruned layers (models/slimming.py)
  low_rank           {'layer/path': rank}: factorised layers (models/low_rank.py), with
  low_rank_conv      'spatial' (k×1 then 1×k) or 'channel' (k×k to rank channels, then 1×1)
  binary             'weights' or 'weights_and_activations' in {−1, +1} (models/binary.py), with
  binary_scale       XNOR-Net's per-filter scale α = mean|W|
  quantization_bits  quantization-aware training at this weight width (models/quantized.py)
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from common.errors import ConfigError
from models import binary, low_rank, quantized, slimming

FIELDS = (
    'pruned_widths',
    'low_rank',
    'low_rank_conv',
    'binary',
    'binary_scale',
    'quantization_bits',
)
TRANSFORMATIONS = ('pruned_widths', 'low_rank', 'binary', 'quantization_bits')
BINARY = ('weights', 'weights_and_activations')


def _plain(mapping: Mapping[str, Any]) -> dict[str, Any]:
  """A dict of a config's mapping (a ConfigDict, or a dict read back from config.json)."""
  return mapping.to_dict() if hasattr(mapping, 'to_dict') else dict(mapping)


def transform(model: nn.Module, fields: Mapping[str, Any]) -> nn.Module:
  """`model` with the compression `fields` (a subset of FIELDS) applied: one transformation at
  a time (their interceptors do not nest yet)."""
  chosen = [f for f in TRANSFORMATIONS if fields.get(f)]
  if len(chosen) > 1:
    raise ConfigError(
        f'model.{" and model.".join(chosen)} are set: a model takes one compression '
        'transformation at a time. Keep one of them.'
    )
  if fields.get('pruned_widths'):
    model = slimming.slim(model, _plain(fields['pruned_widths']))
  if fields.get('low_rank'):
    model = low_rank.factorize(
        model, _plain(fields['low_rank']), conv=fields.get('low_rank_conv') or 'spatial'
    )
  if fields.get('binary'):
    if fields['binary'] not in BINARY:
      raise ConfigError(f'model.binary={fields["binary"]!r}; choose {" or ".join(BINARY)}.')
    model = binary.binarize(
        model,
        activations=fields['binary'] == 'weights_and_activations',
        scale=bool(fields.get('binary_scale')),
    )
  if fields.get('quantization_bits'):
    model = quantized.quantization_aware(model, int(fields['quantization_bits']))
  return model
