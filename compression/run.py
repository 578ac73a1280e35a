"""--mode=compress: one compression method applied to a trained run, and its report.

  python main.py --mode=compress --config=configs/compression.py:<method> --workdir=<dir>

The trained run is `config.init_from` (for `distill`, the teacher `config.distill.teacher`), read
only. Methods that fine-tune train stages into sub-folders of the workdir with the ordinary
trainer, so each stage is a workdir every mode accepts and an interrupted run resumes. The report
(compression.json, compression.md, compression.png) puts the original beside each result.
"""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

import models
from common.errors import ConfigError
from compression import methods, report
from compression.encoding import stored_bytes
from train_lib import init_from, sharding, train

ModelFacts = Callable[[nn.Module, tuple[int, ...]], dict[str, Any]]


class Weights(struct.PyTreeNode):
  """A model's variables and apply function: what the trainer's evaluator needs of a state."""

  values: Any
  apply_fn: Callable[..., Any] = struct.field(pytree_node=False)

  def variables(self) -> Any:
    return self.values


@dataclasses.dataclass
class Job:
  """What every method works with: the config, the data, the original run, and the tools to
  evaluate, time, measure and fine-tune a model."""

  config: ml_collections.ConfigDict
  workdir: str
  data: train.DataSource
  mesh: jax.sharding.Mesh
  model_facts: ModelFacts | None
  _evaluate: Callable[[Weights], dict[str, float]]

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.data.image_shape)

  def model(self, **fields: Any) -> nn.Module:
    """config.model with compression `fields` (models/compressed.py) added."""
    return models.from_config(
        {**self.config.model.to_dict(), **fields},
        self.data.num_classes,
        precision=self.config.precision,
    )

  def top1(self, model: nn.Module, variables: Any) -> float:
    weights = Weights(jax.device_put(variables, sharding.replicated(self.mesh)), model.apply)
    return float(self._evaluate(weights)['eval_top1'])

  def _timed_call(self, model: nn.Module, variables: Any) -> Callable[[], Any]:
    """A jitted inference call on a batch of `latency_batch` zeros, for the latency column."""
    images = jnp.zeros((self.config.compression.latency_batch, *self.image_shape), jnp.float32)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return lambda: apply(variables, images)

  def macs(self, model: nn.Module) -> int | None:
    if self.model_facts is None:
      return None
    return self.model_facts(model, self.image_shape).get('macs')

  def row(
      self,
      name: str,
      model: nn.Module,
      variables: Any,
      *,
      bytes_: int | None = None,
      encoding: str = 'float32',
      weights: Any = None,
      macs_of: nn.Module | None = None,
      compute: str = methods.FLOAT_COMPUTE,
  ) -> report.Row:
    """The report's row of `model` with `variables`, evaluated and timed here. `weights`: the
    float params the parameter counts are of, where `variables` hold them encoded (int8)."""
    weights = jax.tree.leaves(variables['params'] if weights is None else weights)
    return report.Row(
        name=name,
        params=sum(int(np.size(x)) for x in weights),
        nonzero=sum(int(np.count_nonzero(x)) for x in weights),
        bytes=bytes_ if bytes_ is not None else stored_bytes(variables),
        encoding=encoding,
        macs=self.macs(macs_of or model),
        top1=self.top1(model, variables),
        compute=compute,
        timed_call=self._timed_call(model, variables),
    )

  def train(
      self,
      stage: str,
      *,
      finetune: bool = True,
      model: dict[str, Any] | None = None,
      init_variables: dict[str, Any] | None = None,
      **sections: dict[str, Any],
  ) -> tuple[nn.Module, dict[str, Any]]:
    """Trains the stage `stage` in the sub-workdir of that name; returns its model and final
    variables. A fine-tuning stage starts from `init_variables` (else config.init_from) and runs
    compression.finetune_steps at finetune_lr_scale × the learning rate; otherwise the config's
    own schedule runs. `model` adds fields to config.model and `sections` override fields of
    config sections, e.g. pruning={'keep_shared': True}."""
    config = ml_collections.ConfigDict(self.config.to_dict())  # an unlocked copy
    if finetune:
      config.total_steps = config.compression.finetune_steps
      config.optimizer.lr *= config.compression.finetune_lr_scale
      config.schedule.warmup_epochs = 0.0
    for field, value in (model or {}).items():
      config.model[field] = value
    for section, values in sections.items():
      config[section].update(values)
    config.lock()
    workdir = os.path.join(self.workdir, stage)
    train.train_and_evaluate(
        config, workdir, self.data, model_facts=self.model_facts, init_variables=init_variables
    )
    trained = init_from.read_run(workdir)
    return (
        models.from_config(config.model, self.data.num_classes, precision=config.precision),
        trained.variables,
    )


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before any work, a method, source or setting that cannot run."""
  if config.task != 'classification':
    raise ConfigError('--mode=compress compresses classifiers; set task=classification.')
  methods.check(config)
  if config.compression.method == 'distill':
    init_from.check_workdir(config.distill.teacher, 'distill.teacher')
    return
  if not config.init_from:
    raise ConfigError(
        f'compression.method={config.compression.method} compresses a trained run: set '
        '--config.init_from=<its workdir>.'
    )
  init_from.check_workdir(config.init_from, 'init_from')
  source_model = init_from.read_record(config.init_from)['config']['model']['name']
  if source_model != config.model.name:
    raise ConfigError(
        f'init_from={config.init_from} trained {source_model}, and this config builds '
        f'{config.model.name}: pass the config that trained it.'
    )


def compress(
    config: ml_collections.ConfigDict, workdir: str, *, model_facts: ModelFacts | None = None
) -> str:
  """Runs `config.compression.method` into `workdir`; returns the report's table."""
  check_config(config)
  mesh = sharding.make_mesh()
  data = train.make_data(config, mesh)
  job = Job(config, workdir, data, mesh, model_facts, train.make_evaluator(config, data, mesh))
  rows, notes, extra = methods.run(job)
  calls = {id(row.timed_call): row.timed_call for row in rows}  # rows may share a model
  latencies = dict(zip(calls, report.measure_latencies_ms(list(calls.values()))))
  for row in rows:
    row.latency_ms = latencies[id(row.timed_call)]
  os.makedirs(workdir, exist_ok=True)
  return report.write(
      workdir,
      rows,
      title=f'{config.compression.method}: {config.model.name} on {config.dataset.name}',
      notes=notes,
      extra=extra,
  )
