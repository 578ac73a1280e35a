"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a trained teacher's softened outputs as
targets for the student, beside the labels.

The teacher is another workdir, read once. Its logits are computed for each training batch on the
devices, in eval mode, just before the student's step takes the batch (`Teacher.annotate`), so the
student's train step stays one pure function of (state, batch).
"""

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections

import models
from common.errors import ConfigError
from train_lib import init_from, sharding


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, a teacher that is not a trained workdir or settings out of range."""
  distill = config.distill
  init_from.check_workdir(distill.teacher, 'distill.teacher')
  if distill.temperature <= 0:
    raise ConfigError(
        f'distill.temperature={distill.temperature} must be > 0 (Hinton et al.: 1-20).'
    )
  if not 0.0 <= distill.soft_weight <= 1.0:
    raise ConfigError(
        f'distill.soft_weight={distill.soft_weight} must be in [0, 1]: the share of the loss '
        'taken by the soft targets.'
    )
  if config.task != 'classification':
    raise ConfigError('distill.teacher is for classification; unset it for metric learning.')


class Teacher:
  """The trained run `workdir`'s model and newest weights, replicated over the mesh."""

  def __init__(self, workdir: str, num_classes: int, image_shape, mesh: jax.sharding.Mesh):
    run = init_from.read_run(workdir, 'distill.teacher')
    theirs = (run.derived.get('num_classes'), tuple(run.derived.get('image_shape', ())))
    if theirs != (num_classes, tuple(image_shape)):
      raise ConfigError(
          f'The teacher {workdir} classifies {theirs[0]} classes of {theirs[1]} images, this run '
          f'{num_classes} of {tuple(image_shape)}; a teacher must see the same data.'
      )
    self.run = run
    self.model = models.from_config(
        run.config['model'], num_classes, precision=run.config.get('precision', 'float32')
    )
    self.variables = jax.device_put(run.variables, sharding.replicated(mesh))
    batch_sharded = sharding.batch_sharded(mesh)
    self._annotate = jax.jit(
        self._with_logits,
        in_shardings=(sharding.replicated(mesh), batch_sharded),
        out_shardings=batch_sharded,
    )

  def _with_logits(self, variables, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    logits = self.model.apply(variables, batch['image'], train=False)
    return {**batch, 'teacher_logits': logits.astype(jnp.float32)}

  def annotate(self, batches: Iterator[dict[str, jax.Array]]) -> Iterator[dict[str, jax.Array]]:
    """The device batches with the teacher's logits added as `teacher_logits`."""
    return (self._annotate(self.variables, batch) for batch in batches)
