"""Dataset registry: tfds name, splits, normalisation, and how to get the data onto disk."""

import collections
import dataclasses
import os
import textwrap

import tensorflow_datasets as tfds

from common.errors import UserError, did_you_mean
from input_pipeline import downloads, offline_digits


class DatasetError(UserError, ValueError):
  """A dataset that is unknown, or not available on this machine."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the pipeline needs to know about a dataset beyond what tfds records.

  `mean`/`std` are per-channel statistics of the training split for pixels in [0, 1];
  `normalize('<name>')` uses them. `eigval`/`eigvec` (eigenvectors as columns) decompose its
  RGB covariance, for `pca_lighting`. `offline` sets are generated from installed packages.
  `manual_files` ((file name, size in bytes) pairs) must be put into tfds's manual directory
  by hand; `manual_download` says where to get them. `imagenet_classes` gives, for a dataset
  whose classes are ImageNet's, each label's index among ImageNet's 1000 classes
  (`dataset.imagenet_labels` evaluates an ImageNet network on it with them).
  """

  name: str
  tfds_name: str
  train_split: str = 'train'
  eval_split: str = 'test'
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  eigval: tuple[float, ...] | None = None
  eigvec: tuple[tuple[float, ...], ...] | None = None
  offline: bool = False
  manual_download: str = ''
  manual_files: tuple[tuple[str, int], ...] = ()
  imagenet_classes: tuple[int, ...] | None = None


# ImageNet statistics (docs/published_figures.md): mean/std as torchvision's models use them; the
# lighting eigen-decomposition is AlexNet's, as fb.resnet.torch publishes it.
_IMAGENET_STATS = dict(
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    eigval=(0.2175, 0.0188, 0.0045),
    eigvec=((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203)),
)

# EMNIST per configuration, as Lightning-Universe/lightning-bolts publishes them
# (src/pl_bolts/transforms/dataset_normalizations.py, emnist_normalization).
_EMNIST_STATS = {
    'balanced': (0.175, 0.333),
    'byclass': (0.174, 0.332),
    'bymerge': (0.174, 0.332),
    'digits': (0.173, 0.332),
    'letters': (0.172, 0.331),
    'mnist': (0.173, 0.332),
}

_SPECS = {
    s.name: s
    for s in [
        # Measured on its 4,000 training digits (offline_digits.load_arrays / stratified_split).
        DatasetSpec(
            'offline_digits', 'offline_digits', mean=(0.1315,), std=(0.3088,), offline=True
        ),
        # pytorch/examples mnist/main.py: Normalize((0.1307,), (0.3081,)).
        DatasetSpec('mnist', 'mnist', mean=(0.1307,), std=(0.3081,)),
        # chatflip/CalculationMeanStd README, FashionMNIST(train).
        DatasetSpec('fashion_mnist', 'fashion_mnist', mean=(0.2860,), std=(0.3530,)),
        # No trustworthy figure: the dataset's own benchmark (rois-codh/kmnist,
        # benchmarks/pytorch_kmnist.py) normalises with MNIST's numbers, and the published KMNIST
        # stds disagree (0.3059, 0.3385, 0.3483 for mean 0.1918). Run --mode=dataset_stats.
        DatasetSpec('kmnist', 'kmnist'),
        # Images are stored transposed (tfds's description); the six configurations differ in
        # classes: byclass 62, bymerge/balanced 47, letters 26 (tfds: 37 outputs, labels 1-26),
        # digits/mnist 10. 'emnist' means balanced, which the EMNIST authors (Cohen et al. 2017)
        # call the most applicable: equal samples per class, upper/lower case merged where alike.
        *[
            DatasetSpec(f'emnist/{c}', f'emnist/{c}', mean=(m,), std=(s,))
            for c, (m, s) in _EMNIST_STATS.items()
        ],
        # np.mean/np.std of the 50,000 training images over all pixels (khakhlyuk/fixedconv
        # utils/data_stats.py: 0.49139968, 0.48215841, 0.44653091 / 0.24703223, 0.24348513,
        # 0.26158784). Not (0.2023, 0.1994, 0.2010), the mean of per-image stds.
        DatasetSpec(
            'cifar10', 'cifar10', mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)
        ),
        # weiaicunzai/pytorch-cifar100 conf/global_settings.py (CIFAR100_TRAIN_MEAN/STD).
        DatasetSpec(
            'cifar100', 'cifar100', mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)
        ),
        # Cropped 32×32 digits (format 2). The 'extra' split holds 531,131 "somewhat less
        # difficult samples, to use as extra training data" (SVHN's home page): set
        # train_split='train+extra' to use them. Statistics: PatrickZH/DeepCore
        # deepcore/datasets/svhn.py, the figures most SVHN code normalises with.
        DatasetSpec(
            'svhn_cropped',
            'svhn_cropped',
            mean=(0.4377, 0.4438, 0.4728),
            std=(0.1980, 0.2010, 0.1970),
        ),
        # 96×96; 500 labelled training images per class, and 100,000 unlabelled (STL-10's home
        # page) in the 'unlabelled' split, whose label tfds sets to -1: for self-supervised work,
        # not for this trainer. No trustworthy statistics: published
        # figures disagree ((0.4467, 0.4398, 0.4066)/(0.2603, 0.2566, 0.2713) in much PyTorch
        # code, (0.43, 0.42, 0.39)/(0.27, 0.26, 0.27) in lightning-bolts, (0.4408, 0.4279,
        # 0.3867)/(0.2682, 0.2610, 0.2686) elsewhere), and none shows how or on which split it
        # was measured (train alone, or with 'unlabelled').
        DatasetSpec('stl10', 'stl10'),
        # Ten ImageNet classes (fast.ai); v2 is the 70/30 train/validation split of Dec 2019 (tfds's
        # README) and tfds's default. 'imagenette/320px-v2' and 'imagenette/160px-v2' store the
        # images with their shorter side at 320/160 px, less to read and decode for small crops.
        # A subset of ImageNet, it takes ImageNet's statistics, as fastbook ch. 7 does
        # (Normalize.from_stats(*imagenet_stats)). fast.ai course code gives Imagenette its own
        # (0.47, 0.48, 0.45)/(0.29, 0.28, 0.30) (norm_imagenette, e.g. kasparlund/core_ai
        # source/lib/imagenette.py), close to ImageNet's and only to two decimals.
        # 1,623 handwritten characters of 50 alphabets, 20 drawings each, 105×105 (Lake et al.
        # 2015): 'train' holds 964 characters of 30 alphabets, 'test' 659 of the other 20, so
        # every test class is new (one-shot learning, configs/metric_learning.py). No statistics.
        DatasetSpec('omniglot', 'omniglot'),
        DatasetSpec(
            'imagenette',
            'imagenette/full-size-v2',
            eval_split='validation',
            **_IMAGENET_STATS,
            # tench, English springer, cassette player, chain saw, church, French horn, garbage
            # truck, gas pump, golf ball, parachute: synsets n01440764 … n03888605, in the order
            # of ImageNet's sorted synsets.
            imagenet_classes=(0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
        ),
        DatasetSpec(
            'imagenet2012',
            'imagenet2012',
            eval_split='validation',
            **_IMAGENET_STATS,
            # Both links as tfds's imagenet2012 builder and README give them.
            manual_download='Register at https://image-net.org/download-images, then download '
            'them from https://image-net.org/challenges/LSVRC/2012/2012-downloads.php.',
            # Sizes from tfds's imagenet2012/checksums.tsv.
            manual_files=(
                ('ILSVRC2012_img_train.tar', 147_897_477_120),
                ('ILSVRC2012_img_val.tar', 6_744_924_160),
            ),
            imagenet_classes=tuple(range(1000)),
        ),
    ]
}
# Another configuration of a dataset registered once shares its spec ('imagenette/160px-v2').
_BASE_COUNTS = collections.Counter(s.tfds_name.split('/')[0] for s in _SPECS.values())
_SPECS_BY_TFDS_BASE = {
    s.tfds_name.split('/')[0]: s
    for s in _SPECS.values()
    if _BASE_COUNTS[s.tfds_name.split('/')[0]] == 1
}
_ALIASES = {
    'imagenet': 'imagenet2012',  # for statistics: normalize('imagenet')
    'emnist': 'emnist/balanced',
    'svhn': 'svhn_cropped',
}
assert offline_digits.OfflineDigits.name == 'offline_digits'  # registered with tfds on import


def registered_names() -> list[str]:
  """The datasets with recorded splits (and statistics where known); any tfds name works too."""
  return sorted(_SPECS)


def get_spec(name: str) -> DatasetSpec:
  """The spec of `name`: registered here, or any image classification dataset tfds knows.

  `name` may carry a tfds configuration and version ('emnist/letters:3.1.0'); aliases
  ('imagenet', 'emnist', 'svhn') stand for the registered names.
  """
  name = _ALIASES.get(name, name)
  if name in _SPECS:
    return _SPECS[name]
  unversioned, colon, version = name.partition(':')
  unversioned = _ALIASES.get(unversioned, unversioned)
  if unversioned in _SPECS:
    spec = _SPECS[unversioned]
    return dataclasses.replace(spec, name=name, tfds_name=spec.tfds_name + colon + version)
  base = unversioned.split('/')[0]
  if base in _SPECS_BY_TFDS_BASE:
    return dataclasses.replace(_SPECS_BY_TFDS_BASE[base], name=name, tfds_name=name)
  builders = tfds.list_builders()
  if base in builders:
    return DatasetSpec(name, name)
  hint = did_you_mean(base, sorted({*_SPECS, *_ALIASES, *builders}))
  raise DatasetError(
      f'Unknown dataset {name!r}.{hint} Registered here: {", ".join(registered_names())}; '
      'any other tensorflow_datasets image classification name works too '
      '(python -c "import tensorflow_datasets as tfds; print(tfds.list_builders())").'
  )


def manual_dir(builder: tfds.core.DatasetBuilder) -> str:
  """Where tfds looks for files downloaded by hand: <data_dir>/downloads/manual/."""
  return os.path.join(os.fspath(builder.data_dir_root), 'downloads', 'manual') + os.sep


def _manual_download_problem(spec: DatasetSpec, builder: tfds.core.DatasetBuilder) -> str:
  """What to put where for a dataset tfds cannot download; '' if the files are in place."""
  if not (spec.manual_files or builder.MANUAL_DOWNLOAD_INSTRUCTIONS):
    return ''
  where = manual_dir(builder)
  if not spec.manual_files:  # another tfds dataset with a manual step: quote tfds's instructions
    if os.path.isdir(where) and os.listdir(where):
      return ''
    instructions = textwrap.dedent(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).strip()
    return (
        f'tensorflow_datasets cannot download it: put its files into {where} as it asks:\n'
        f'{textwrap.indent(instructions, "  ")}\n'
    )
  problems = []
  for file_name, size in spec.manual_files:
    path = os.path.join(where, file_name)
    if not os.path.isfile(path):
      problems.append(f'{file_name} is missing')
    elif os.path.getsize(path) != size:
      problems.append(f'{file_name} has {os.path.getsize(path):,} bytes (an incomplete download?)')
  if not problems:
    return ''
  files = ' and '.join(f'{f} ({size:,} bytes)' for f, size in spec.manual_files)
  return (
      f'tensorflow_datasets cannot download it: put {files} into {where} '
      f'({"; ".join(problems)}). {spec.manual_download} '
  )


def prepare_instructions(spec: DatasetSpec, data_dir: str | None) -> str:
  """How to get `spec` onto a machine that cannot download it."""
  where = data_dir or '~/tensorflow_datasets (or $TFDS_DATA_DIR)'
  if spec.manual_files:
    files = ' and '.join(f for f, _ in spec.manual_files)
    return (
        f'{spec.manual_download} Put {files} into <data_dir>/downloads/manual/ (data_dir: '
        f'{where}) and run the same command again.'
    )
  return (
      f'On a machine with internet access run\n'
      f'  python -c "import tensorflow_datasets as tfds; '
      f"tfds.builder('{spec.tfds_name}').download_and_prepare()\"\n"
      f'then copy ~/tensorflow_datasets/{spec.tfds_name.split(":")[0].split("/")[0]} into '
      f'{where} on this machine (or point --config.dataset.data_dir at a copy). Training without '
      f'any download works with --config.dataset.name=offline_digits.'
  )


def _under_mock_data() -> bool:
  """True inside tfds.testing.mock_data, which makes download_and_prepare a no-op."""
  return tfds.core.DatasetBuilder.download_and_prepare.__name__ == 'mock_download_and_prepare'


def builder_info_only(spec: DatasetSpec, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The tfds builder for `spec`, prepared or not (its features and metadata are known)."""
  try:
    return tfds.builder(spec.tfds_name, data_dir=data_dir)
  except (ValueError, AssertionError) as e:  # tfds: unknown configuration or version
    base = spec.tfds_name.split(':')[0].split('/')[0]
    configs = sorted(getattr(tfds.builder_cls(base), 'builder_configs', {}) or {})
    hint = f' Its configurations: {", ".join(f"{base}/{c}" for c in configs)}.' if configs else ''
    raise DatasetError(
        f'tensorflow_datasets cannot open {spec.tfds_name!r}: {str(e).splitlines()[0]}{hint}'
    ) from e


def load_builder(
    spec: DatasetSpec, data_dir: str | None, download: bool
) -> tfds.core.DatasetBuilder:
  """A prepared tfds builder for `spec`, downloading it if allowed; DatasetError otherwise.

  Before a download it checks in seconds that the dataset's download servers answer: without
  that, tfds retries for minutes on a machine without internet access.
  """
  builder = builder_info_only(spec, data_dir)
  if builder.info.splits:  # prepared (under tfds.testing.mock_data the download is a no-op)
    return builder
  manual_problem = '' if _under_mock_data() else _manual_download_problem(spec, builder)
  if manual_problem:
    raise DatasetError(
        f'Dataset {spec.name!r} is not prepared in {builder.data_dir}, and '
        f'{manual_problem}Then run the same command again (with '
        'dataset.download=True, the default): tfds prepares it from those files.'
    )
  if not (download or spec.offline):
    how = (
        'Its files are in place in ' + manual_dir(builder) + '; set '
        '--config.dataset.download=true to prepare it from them.'
        if spec.manual_files or builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        else prepare_instructions(spec, data_dir)
    )
    raise DatasetError(
        f'Dataset {spec.name!r} is not prepared in {builder.data_dir} and download is off. {how}'
    )
  probe = not (spec.offline or _under_mock_data())
  unreachable = downloads.unreachable_server(downloads.download_servers(builder)) if probe else ''
  if unreachable:
    raise DatasetError(
        f'Could not download dataset {spec.name!r}: this machine cannot connect to its download '
        f'server (ConnectionError: {unreachable}). {prepare_instructions(spec, data_dir)}'
    )
  try:
    with downloads.removing_what_a_failed_download_adds(builder):
      builder.download_and_prepare()
  except Exception as e:  # tfds raises many kinds: connection, manual-dir, checksum errors
    raise DatasetError(
        f'Could not download or prepare dataset {spec.name!r} '
        f'({type(e).__name__}: {str(e)[:300]}). '
        f'{prepare_instructions(spec, data_dir)}'
    ) from e
  return builder
