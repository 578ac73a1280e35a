"""Bad config values and preprocessing arguments, refused in one line before any data is read:
`config_checks.check_values` for the numbers, `input_pipeline.check_preprocess` for the op
strings; every shipped config passes both."""

import numpy as np
import pytest

import configs
import input_pipeline
from common.errors import ConfigError
from configs import default, recipes
from input_pipeline import stats
from train_lib import config_checks, sweeps


def _config(**fields):
  config = default.get_config()
  config.update_from_flattened_dict(fields)
  return config


def _refusal(check, *args) -> str:
  with pytest.raises(ConfigError) as refused:
    check(*args)
  return str(refused.value)


@pytest.mark.parametrize(
    'field, value, allowed',
    [
        ('batch_size', 0, 'a positive integer'),
        ('eval_batch_size', -1, 'a positive integer, or 0 for batch_size'),
        ('total_steps', -5, 'a positive integer, or 0 for num_epochs'),
        ('num_epochs', -1, 'a positive number of epochs (or set total_steps)'),
        ('optimizer.lr', -1.0, '>= 0 (0 freezes every weight)'),
        ('optimizer.momentum', 1.5, 'in [0, 1)'),
        ('optimizer.weight_decay', -1e-4, '>= 0'),
        ('optimizer.grad_clip_norm', -1.0, '>= 0 (0 = no clipping)'),
        ('schedule.warmup_epochs', -1.0, '>= 0'),
        ('schedule.decay_epochs', (30, -1), 'a sequence of epochs >= 0, e.g. (30, 60)'),
        ('label_smoothing', 1.0, 'in [0, 1)'),
        ('log_every_steps', 0, 'a positive integer'),
        ('eval_every_steps', -1, 'a positive integer, or 0 for every epoch'),
        ('keep_checkpoints', 0, 'a positive integer'),
        ('dataset.min_size', -1, 'an integer >= 0 (0 = no minimum)'),
        ('pruning.sparsity', 1.0, 'in [0, 1)'),
    ],
)
def test_a_value_out_of_range_is_refused_naming_field_value_and_range(field, value, allowed):
  message = _refusal(config_checks.check_values, _config(**{field: value}))
  assert message == f'{field}={value!r} is out of range: it must be {allowed}.'


def test_a_model_dropout_rate_of_one_is_refused():
  config = _config()
  config.model.dropout_rate = 1.0  # model fields exist only in the configs that set them
  assert _refusal(config_checks.check_values, config) == (
      'model.dropout_rate=1.0 is out of range: it must be in [0, 1).'
  )


@pytest.mark.parametrize(
    'fields, message',
    [
        (
            {'num_epochs': 0, 'total_steps': 0},
            'num_epochs=0 and total_steps=0 train nothing: set one of them > 0.',
        ),
        (
            {'schedule.name': 'exponential', 'schedule.decay_every_epochs': 0.0},
            'schedule.decay_every_epochs=0.0 is out of range for schedule.name=exponential: it '
            'must be > 0 (epochs between decays).',
        ),
        (
            {'optimizer.lr_multipliers': 'conv1/.*=-1'},
            "optimizer.lr_multipliers='conv1/.*=-1' gives 'conv1/.*' the multiplier -1: it must "
            'be >= 0 (0 freezes those weights).',
        ),
    ],
)
def test_values_that_only_fail_together_are_refused(fields, message):
  assert _refusal(config_checks.check_values, _config(**fields)) == message


def test_a_malformed_lr_multiplier_names_the_field():
  message = _refusal(config_checks.check_values, _config(**{'optimizer.lr_multipliers': 'conv1'}))
  assert message.startswith("optimizer.lr_multipliers='conv1': Bad lr multiplier 'conv1'")
  assert '\n' not in message


@pytest.mark.parametrize(
    'fields',
    [
        {'batch_size': 1, 'eval_batch_size': 0, 'optimizer.momentum': 0.0},
        {'optimizer.lr': 0.0, 'optimizer.lr_multipliers': 'conv1/.*=0,.*bias=2'},
        {'num_epochs': 0, 'total_steps': 10, 'eval_every_steps': 0, 'checkpoint_every_steps': 0},
        {'schedule.name': 'step', 'schedule.decay_epochs': (30, 60), 'schedule.warmup_epochs': 0.5},
    ],
)
def test_values_at_the_edges_of_their_ranges_pass(fields):
  config_checks.check_values(_config(**fields))  # raises if refused


def _every_config():
  """(name[:argument][ point], config) of every experiment config, with every variant, dataset
  and sweep point."""
  modules = configs.experiment_modules()
  for name, (variants, datasets) in configs.arguments().items():
    module = modules[name]
    for arg in (None, *recipes.all_args(variants, datasets)):
      label, config = f'{name}:{arg}' if arg else name, module.get_config(arg)
      yield label, config
      for point in module.get_sweep(arg) if hasattr(module, 'get_sweep') else ():
        yield f'{label} {sweeps.point_name(point)}', sweeps.apply(config, point)


def test_every_shipped_config_passes_both_checks():
  checked = []
  for name, config in _every_config():
    try:
      config_checks.check_values(config)
      input_pipeline.check_preprocess(config.dataset)
    except ConfigError as e:
      pytest.fail(f'{name}: {e}')
    checked.append(name)
  assert (
      'resnet_cifar10:resnet20,cifar100' in checked
      and 'study_dropout dropout_rate=0,seed=1' in checked
  )


def _dataset(train='', evaluation=''):
  """A dataset config that cannot be read: check_preprocess must not try."""
  config = default.get_config().dataset
  config.name, config.data_dir, config.download = 'no_such_dataset', '/nonexistent', False
  config.train_preprocess, config.eval_preprocess = train, evaluation
  return config


@pytest.mark.parametrize(
    'spec, problem',
    [
        (
            "random_crop('a', pad=2)",
            "size must be a positive int or a (height, width) pair, got 'a'.",
        ),
        ("random_crop(28, pad='x')", "pad must be an int >= 0 (pixels per side), got 'x'."),
        ('normalize((0.5,), (0.0,))', 'std must be > 0 in every channel (it divides), got (0.0,).'),
        (
            'normalize((0.5, 0.5, 0.5), (0.2, -1, 0.2))',
            'std must be > 0 in every channel (it divides), got (0.2, -1.0, 0.2).',
        ),
        (
            "pad(2, mode='wrap')",
            "mode must be one of 'constant', 'reflect', 'symmetric', got 'wrap'.",
        ),
        (
            "resize(28, method='cubic')",
            "method must be one of 'bilinear', 'nearest', 'bicubic', 'area', 'lanczos3', "
            "'lanczos5', 'gaussian', 'mitchellcubic', got 'cubic'.",
        ),
        (
            'random_resize_shorter(300, 256)',
            'max_size must be an int >= 300 (at least min_size), got 256.',
        ),
        (
            'random_resized_crop(24, scale=(0.5, 0.1))',
            'scale must be a (min, max) pair with 0 < min <= max <= 1, got (0.5, 0.1).',
        ),
        ('decode(2)', 'channels must be one of 0, 1, 3, got 2.'),
        ('cutout(0)', 'size must be an int >= 1 (the side of the square), got 0.'),
        ('mixup(0)', 'alpha must be > 0 (Beta(alpha, alpha)), got 0.'),
        ("pca_lighting('x')", "sigma must be >= 0, got 'x'."),
        (
            "color_jitter(brightness='x')",
            "brightness must be a strength or a (min, max) pair of numbers, got 'x'.",
        ),
    ],
)
def test_a_bad_op_argument_is_refused_naming_the_op_string(spec, problem):
  message = _refusal(input_pipeline.check_preprocess, _dataset(train=spec))
  assert message == f'Bad arguments for preprocessing op {spec!r}: {problem}'


def test_eval_preprocess_is_checked_too():
  message = _refusal(
      input_pipeline.check_preprocess, _dataset(evaluation='ten_crop(24, scales=(0,))')
  )
  assert message == (
      "Bad arguments for preprocessing op 'ten_crop(24, scales=(0,))': scales must be a "
      'sequence of positive ints (shorter sides), got (0,).'
  )


def test_normalize_refuses_statistics_with_a_constant_channel(tmp_path):
  grey = [np.full((2, 3, 3, 1), 0.5, np.float32), np.full((2, 4, 3, 1), 0.5, np.float32)]
  path = stats.save(stats.compute(grey), str(tmp_path))  # two sizes: channel statistics only
  spec = f"normalize('{path}')"
  assert _refusal(input_pipeline.check_preprocess, _dataset(evaluation=spec)) == (
      f'Bad arguments for preprocessing op {spec!r}: std must be > 0 in every channel (it '
      f"divides), got (0.0,) in the statistics of '{path}'; give the numbers: "
      'normalize((m, ...), (s, ...)).'
  )


@pytest.mark.parametrize(
    'train, evaluation, message',
    [
        (
            'ten_crop(24)',
            '',
            'dataset.train_preprocess stacks evaluation views (ten_crop); those belong in '
            'dataset.eval_preprocess.',
        ),
        (
            '',
            'mixup(0.2)',
            'dataset.eval_preprocess has a batch op (mixup); that is for training only.',
        ),
        ('random_crop(28', '', "Cannot parse preprocessing op 'random_crop(28'"),
    ],
)
def test_an_op_in_the_wrong_string_is_refused_before_any_data(train, evaluation, message):
  assert _refusal(input_pipeline.check_preprocess, _dataset(train, evaluation)).startswith(message)


def test_check_preprocess_reads_no_data():
  input_pipeline.check_preprocess(_dataset("random_crop(28, pad=2)|normalize('mnist')", 'to_rgb'))


def test_the_pipeline_refuses_a_bad_op_before_it_looks_for_the_dataset():
  with pytest.raises(ConfigError, match='Bad arguments for preprocessing op'):
    input_pipeline.InputPipeline(
        _dataset(train='cutout(0)'), global_batch_size=8, eval_batch_size=8, seed=0
    )
