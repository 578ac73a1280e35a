"""The ranges of the config's numbers, checked before any data is loaded or anything compiled.

One table: each field with the test its value must pass and what the test means, so that a bad
value (`--config.batch_size=0`, `--config.optimizer.lr=-1`) stops in one line naming the field,
the value and what is allowed. Names (an unknown model, optimizer, op) are checked where they
are looked up; this module checks numbers only. It leaves out the sections that have checks of
their own: distill.* (distillation.check_config, before any work), metric.*
(metric_task.check_config; the episode sizes against the eval labels) and compression.*
(--mode=compress). The pruning ranges repeat sparsity's, which run only once the optimizer is
built, after the data is loaded. One name is checked here too, `precision`, because the model
that looks it up is built only after the data is loaded.
"""

from collections.abc import Callable
from typing import Any

import ml_collections

import models
from common.errors import ConfigError
from train_lib import optim

Check = tuple[str, Callable[[Any], bool], str]


def _number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _non_negative_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value: Any) -> bool:
  return _number(value) and value > 0


def _non_negative(value: Any) -> bool:
  return _number(value) and value >= 0


def _fraction(value: Any) -> bool:  # [0, 1)
  return _number(value) and 0 <= value < 1


def _unit(value: Any) -> bool:  # [0, 1]
  return _number(value) and 0 <= value <= 1


def _non_negative_numbers(value: Any) -> bool:
  return isinstance(value, (tuple, list)) and all(_non_negative(v) for v in value)


CHECKS: tuple[Check, ...] = (
    ('batch_size', _positive_int, 'a positive integer'),
    ('eval_batch_size', _non_negative_int, 'a positive integer, or 0 for batch_size'),
    ('num_epochs', _non_negative, 'a positive number of epochs (or set total_steps)'),
    ('total_steps', _non_negative_int, 'a positive integer, or 0 for num_epochs'),
    ('label_smoothing', _fraction, 'in [0, 1)'),
    ('aux_loss_weight', _non_negative, '>= 0'),
    ('optimizer.lr', _non_negative, '>= 0 (0 freezes every weight)'),
    ('optimizer.lr_reference_batch_size', _non_negative_int, 'a positive integer, or 0 for none'),
    ('optimizer.momentum', _fraction, 'in [0, 1)'),
    ('optimizer.b1', _fraction, 'in [0, 1)'),
    ('optimizer.b2', _fraction, 'in [0, 1)'),
    ('optimizer.eps', _positive, '> 0'),
    ('optimizer.rms_decay', _fraction, 'in [0, 1)'),
    ('optimizer.weight_decay', _non_negative, '>= 0'),
    ('optimizer.grad_clip_norm', _non_negative, '>= 0 (0 = no clipping)'),
    ('schedule.warmup_epochs', _non_negative, '>= 0'),
    ('schedule.decay_epochs', _non_negative_numbers, 'a sequence of epochs >= 0, e.g. (30, 60)'),
    ('schedule.decay_factor', _positive, '> 0'),
    ('schedule.decay_every_epochs', _non_negative, '>= 0'),
    ('schedule.final_lr_fraction', _unit, 'in [0, 1]'),
    ('schedule.power', _positive, '> 0'),
    ('schedule.patience', _non_negative_int, 'an integer >= 0'),
    ('schedule.min_delta', _non_negative, '>= 0'),
    ('schedule.max_reductions', _non_negative_int, 'an integer >= 0'),
    ('prefetch_to_device', _non_negative_int, 'an integer >= 0'),
    ('log_every_steps', _positive_int, 'a positive integer'),
    ('eval_every_steps', _non_negative_int, 'a positive integer, or 0 for every epoch'),
    ('checkpoint_every_steps', _non_negative_int, 'a positive integer, or 0 for every epoch'),
    ('keep_checkpoints', _positive_int, 'a positive integer'),
    ('dataset.shuffle_buffer', _positive_int, 'a positive integer'),
    ('dataset.min_size', _non_negative_int, 'an integer >= 0 (0 = no minimum)'),
    ('dataset.threads', _non_negative_int, "an integer >= 0 (0 = TensorFlow's default)"),
    ('model.dropout_rate', _fraction, 'in [0, 1)'),
    ('model.drop_rate', _fraction, 'in [0, 1)'),
    ('model.aux_dropout_rate', _fraction, 'in [0, 1)'),
    ('pruning.sparsity', _fraction, 'in [0, 1)'),
    ('pruning.initial_sparsity', _fraction, 'in [0, 1)'),
    ('pruning.frequency', _positive_int, 'a positive integer'),
    ('pruning.power', _positive, '> 0'),
    ('pruning.begin_step', _non_negative_int, 'an integer >= 0'),
    ('pruning.end_step', _non_negative_int, 'an integer >= 0 (0 = at 3/4 of the run)'),
)


def _lookup(config: ml_collections.ConfigDict, dotted: str) -> tuple[bool, Any]:
  """(present, value) of a dotted field; absent in configs that lack its section or field."""
  node: Any = config
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False, None
    node = node[part]
  return True, node


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError, in one line, for the first field of CHECKS whose value is out of its
  range, then for values that only go wrong together: no length of training, an exponential
  schedule that never decays, a negative or malformed lr multiplier."""
  for field, valid, allowed in CHECKS:
    present, value = _lookup(config, field)
    if present and not valid(value):
      raise ConfigError(f'{field}={value!r} is out of range: it must be {allowed}.')
  models.compute_dtype(config.get('precision', 'float32'), config.get('model', {}).get('dtype'))
  if config.get('total_steps', 0) == 0 and config.get('num_epochs', 1) == 0:
    raise ConfigError('num_epochs=0 and total_steps=0 train nothing: set one of them > 0.')
  schedule = config.get('schedule', {})
  if schedule.get('name') == 'exponential' and schedule.get('decay_every_epochs', 1) <= 0:
    raise ConfigError(
        f'schedule.decay_every_epochs={schedule.decay_every_epochs!r} is out of range for '
        'schedule.name=exponential: it must be > 0 (epochs between decays).'
    )
  multipliers = config.get('optimizer', {}).get('lr_multipliers', '')
  try:
    rules = optim.parse_lr_multipliers(multipliers)
  except ConfigError as e:
    raise ConfigError(f'optimizer.lr_multipliers={multipliers!r}: {e}') from e
  for pattern, multiplier in rules:
    if multiplier < 0:
      raise ConfigError(
          f'optimizer.lr_multipliers={multipliers!r} gives {pattern.pattern!r} the multiplier '
          f'{multiplier:g}: it must be >= 0 (0 freezes those weights).'
      )
