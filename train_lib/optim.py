"""Optimizers from the config: an optax update direction at lr = 1 that train_step scales.

The learning rate is applied in `train_step` (lr(step) × plateau scale), so every optimizer
here returns the direction only; that keeps the logged lr exactly the one used.
"""

import re

import jax
import ml_collections
import optax

from common.errors import ConfigError

OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adam', 'adamw', 'rmsprop')


def path_name(key_path) -> str:
  """'layer1_0/conv1/kernel': a variable's path as configs name it (lr multipliers, pruning)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in key_path)


def decay_mask(params, include_norm_and_bias: bool):
  """True for parameters that get weight decay: all, or all but biases and norm scales/offsets."""
  if include_norm_and_bias:
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and not path_name(path).endswith('bias'), params
  )


def parse_lr_multipliers(spec: str) -> list[tuple[re.Pattern, float]]:
  """'conv1/.*=0, .*bias=2' → [(re, 0.0), (re, 2.0)]; patterns match 'layer/param' paths."""
  rules = []
  for item in filter(str.strip, spec.split(',')):
    pattern, sep, value = item.rpartition('=')
    try:
      rules.append((re.compile(pattern.strip()), float(value)))
    except (re.error, ValueError) as e:
      raise ConfigError(
          f'Bad lr multiplier {item.strip()!r} ({e}); write "regex=number", e.g. '
          '"conv1/.*=0,.*bias=2".'
      ) from e
    if not sep:
      raise ConfigError(f'Bad lr multiplier {item.strip()!r}; write "regex=number".')
  return rules


def lr_multiplier_tree(params, spec: str):
  """Per-parameter multipliers: the first rule whose regex matches the full path wins, else 1."""
  rules = parse_lr_multipliers(spec)

  def multiplier(path, _):
    name = path_name(path)
    return next((m for pattern, m in rules if pattern.fullmatch(name)), 1.0)

  return jax.tree_util.tree_map_with_path(multiplier, params)


def scale_by_multipliers(spec: str) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its lr multiplier (0 freezes it)."""

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, lr_multiplier_tree(updates, spec)), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _direction(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  name = config.name
  if name == 'sgd':
    return optax.identity()
  if name in ('momentum', 'nesterov'):
    return optax.trace(decay=config.momentum, nesterov=name == 'nesterov')
  if name in ('adam', 'adamw'):
    return optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
  if name == 'rmsprop':
    rms = optax.scale_by_rms(decay=config.rms_decay, eps=config.eps)
    return optax.chain(rms, optax.trace(decay=config.momentum)) if config.momentum else rms
  raise ConfigError(f'Unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}.')


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """clip → L2 weight decay (coupled; decoupled for adamw) → direction → lr multipliers."""
  mask = lambda params: decay_mask(params, config.decay_norm_and_bias)
  decay = (
      optax.add_decayed_weights(config.weight_decay, mask)
      if config.weight_decay
      else optax.identity()
  )
  decoupled = config.name == 'adamw'
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm)
      if config.grad_clip_norm
      else optax.identity(),
      optax.identity() if decoupled else decay,
      _direction(config),
      decay if decoupled else optax.identity(),
      scale_by_multipliers(config.lr_multipliers) if config.lr_multipliers else optax.identity(),
  )
