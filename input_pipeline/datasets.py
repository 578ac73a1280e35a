"""Dataset registry: tfds name, splits, normalisation, and how to get the data onto disk."""

import dataclasses
import difflib
from typing import Optional

import tensorflow_datasets as tfds

from input_pipeline import offline_digits


class DatasetError(ValueError):
  """A dataset that is unknown, or not available on this machine."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know about a dataset beyond what tfds records.

  `mean`/`std` are per-channel statistics of the training split for pixels in [0, 1];
  `normalize('<name>')` uses them. `offline` sets are generated from installed packages.
  """
  name: str
  tfds_name: str
  train_split: str = 'train'
  eval_split: str = 'test'
  mean: Optional[tuple[float, ...]] = None
  std: Optional[tuple[float, ...]] = None
  offline: bool = False
  manual_download: str = ''


_SPECS = {s.name: s for s in [
    # Measured on its 4,000 training digits (offline_digits.load_arrays / stratified_split).
    DatasetSpec('offline_digits', 'offline_digits', mean=(0.1315,), std=(0.3088,), offline=True),
    DatasetSpec('mnist', 'mnist', mean=(0.1307,), std=(0.3081,)),
    DatasetSpec('fashion_mnist', 'fashion_mnist', mean=(0.2860,), std=(0.3530,)),
    DatasetSpec('cifar10', 'cifar10', mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    DatasetSpec('cifar100', 'cifar100', mean=(0.5071, 0.4865, 0.4409),
                std=(0.2673, 0.2564, 0.2762)),
    DatasetSpec('imagenet2012', 'imagenet2012', eval_split='validation',
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                manual_download='Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
                'from image-net.org into <data_dir>/downloads/manual/.'),
]}
_SPECS_BY_TFDS_NAME = {s.tfds_name: s for s in _SPECS.values()}
assert offline_digits.OfflineDigits.name == 'offline_digits'  # registered with tfds on import


def registered_names() -> list[str]:
  """The datasets with recorded statistics; any other tfds name works too."""
  return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
  """The spec of `name`: registered here, or any image classification dataset tfds knows."""
  if name in _SPECS:
    return _SPECS[name]
  base = name.split(':')[0].split('/')[0]
  if base in _SPECS_BY_TFDS_NAME:
    return dataclasses.replace(_SPECS_BY_TFDS_NAME[base], name=name, tfds_name=name)
  if base in tfds.list_builders():
    return DatasetSpec(name, name)
  close = difflib.get_close_matches(base, registered_names() + tfds.list_builders(), n=3)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  raise DatasetError(
      f'Unknown dataset {name!r}.{hint} Registered here: {", ".join(registered_names())}; '
      'any other tensorflow_datasets image classification name works too '
      '(python -c "import tensorflow_datasets as tfds; print(tfds.list_builders())").')


def prepare_instructions(spec: DatasetSpec, data_dir: Optional[str]) -> str:
  """How to get `spec` onto a machine that cannot download it."""
  where = data_dir or '~/tensorflow_datasets (or $TFDS_DATA_DIR)'
  if spec.manual_download:
    return f'{spec.manual_download} Then run the same command again (data_dir: {where}).'
  return (
      f'On a machine with internet access run\n'
      f'  python -c "import tensorflow_datasets as tfds; '
      f'tfds.builder(\'{spec.tfds_name}\').download_and_prepare()"\n'
      f'then copy ~/tensorflow_datasets/{spec.tfds_name.split(":")[0]} into {where} on this '
      f'machine (or point --config.dataset.data_dir at a copy). Training without any download '
      f'works with --config.dataset.name=offline_digits.')


def load_builder(spec: DatasetSpec, data_dir: Optional[str], download: bool) -> tfds.core.DatasetBuilder:
  """A prepared tfds builder for `spec`, downloading it if allowed; DatasetError otherwise."""
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if builder.info.splits:  # prepared (under tfds.testing.mock_data the download is a no-op)
    return builder
  if not (download or spec.offline):
    raise DatasetError(f'Dataset {spec.name!r} is not prepared in {builder.data_dir} and '
                       f'download is off. {prepare_instructions(spec, data_dir)}')
  try:
    builder.download_and_prepare()
  except Exception as e:  # tfds raises many kinds: connection, manual-dir, checksum errors
    raise DatasetError(f'Could not download or prepare dataset {spec.name!r} '
                       f'({type(e).__name__}: {str(e)[:300]}). '
                       f'{prepare_instructions(spec, data_dir)}') from e
  return builder
