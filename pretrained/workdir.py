"""--mode=convert: a published weight file → a workdir every mode accepts.

The workdir is the one training would leave at step 0: config.json (the config, with what
conversion derived and where the weights came from) and an orbax checkpoint of the full train
state, the converted params and batch_stats in it. So `--mode=evaluate`, `predict`, `summary`,
`filters`, `feature_maps`, `config.init_from` (fine-tuning) and `distill.teacher` read it as
they read any run. Everything is read and converted before anything is written; a workdir that
already holds a run is refused untouched.
"""

import hashlib
import os
from collections.abc import Callable
from typing import Any

import ml_collections

import models
from common import files
from common.errors import ConfigError
from configs import pretrained as pretrained_config
from pretrained import convert, sources, weight_files
from train_lib import checkpoint, init_from, sharding, workdir_lock
from train_lib.state import init_state, num_params

CHECKPOINT_DIR = 'checkpoints'


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _refuse_used(workdir: str) -> None:
  """Refuses a workdir that already holds a run (its config.json or checkpoints)."""
  if os.path.exists(os.path.join(workdir, 'config.json')) or checkpoint.has_checkpoint(
      os.path.join(workdir, CHECKPOINT_DIR)
  ):
    raise ConfigError(
        f'{workdir} already holds a run; nothing was changed. Convert into a new --workdir.'
    )


def convert_into_workdir(
    config: ml_collections.ConfigDict,
    weights: str,
    workdir: str,
    model_facts: Callable[[Any, tuple[int, ...]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
  """Converts the weight file `weights` for `config.model` and writes it as `workdir`'s
  step-0 checkpoint; returns what config.json records as derived."""
  name = config.model.name
  source = sources.source(name)
  _refuse_used(workdir)
  workdir_lock.check_free(workdir)
  variables = convert.convert(name, weight_files.read(weights))
  size = pretrained_config.MODELS[name].image_size
  image_shape = (size, size, 3)
  model = models.from_config(config.model, sources.IMAGENET_CLASSES, precision=config.precision)
  mesh = sharding.make_mesh()
  state = init_state(config, model, image_shape, mesh)
  state = init_from.start(state, config, variables, mesh)
  derived = {
      'steps_per_epoch': 0,
      'total_steps': 0,
      'num_devices': mesh.size,
      'num_params': num_params(state.params),
      'num_classes': sources.IMAGENET_CLASSES,
      'image_shape': list(image_shape),
      'converted_from': {
          'file': os.path.basename(weights),
          'sha256': _sha256(weights),
          'library': source.library,
          'reference': source.name,
      },
      **(model_facts(model, image_shape) if model_facts else {}),
  }
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir):
    files.write_json_atomic(
        os.path.join(workdir, 'config.json'), {'config': config.to_dict(), 'derived': derived}
    )
    checkpointer = checkpoint.Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), max_to_keep=config.keep_checkpoints
    )
    try:
      checkpointer.save(state, 0)
      checkpointer.wait()
    finally:
      checkpointer.close()
  return derived
