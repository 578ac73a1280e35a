"""Experiment configs: one file per experiment, `get_config(arg)` returns its ConfigDict.

A family config declares `VARIANTS` and `DATASETS` (the first of each is its default) and
takes 'variant[,dataset]' as its argument: `--config=configs/resnet_cifar10.py:resnet56,cifar100`.
"""

import importlib
import os
import pkgutil
from types import ModuleType

_SHARED = ('default', 'recipes', 'sweep')  # what the experiment configs build on


def experiment_modules() -> dict[str, ModuleType]:
  """Every experiment config module by file name (without .py), sorted."""
  names = sorted(
      m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)]) if m.name not in _SHARED
  )
  return {name: importlib.import_module(f'configs.{name}') for name in names}


def arguments() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
  """(variants, datasets) each experiment config accepts; ((), ()) for one without arguments."""
  return {
      name: (tuple(getattr(m, 'VARIANTS', ())), tuple(getattr(m, 'DATASETS', ())))
      for name, m in experiment_modules().items()
  }
