"""Where each convertible model's published weights come from, and how their names map onto ours.

One `Source` per registered model whose reference (torchvision, timm or Keras) publishes ImageNet
weights: the library, the reference's own model name, a function from our layer paths
('layer1_0/conv1') to the reference's layer names ('layer1.0.conv1') and the dense layers fed by
a flatten (whose input order differs between NCHW and NHWC). `convert.py` does the rest, the
same way for every family: kernels from OIHW to HWIO, BatchNorm's weight/bias/running_mean/
running_var (Keras's gamma/beta/moving_mean/moving_variance) to scale/bias/mean/var. What runs
of a converted model need (input size, evaluation preprocessing, classifier layers, the fields
a source sets) is configs/pretrained.py's.
"""

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping

import models
from common.errors import ConfigError, did_you_mean
from configs import pretrained as pretrained_config

TORCHVISION, TIMM, KERAS = 'torchvision', 'timm', 'keras'
IMAGENET_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class Source:
  """A registered model's published weights: whose they are and how their names map onto ours."""

  library: str  # 'torchvision', 'timm' or 'keras'
  name: str  # the reference's name: torchvision.models.<name>, timm.create_model(<name>), ...
  layer: Callable[[str], str]  # our layer path → the reference's layer name
  flattened: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
  # our dense layers fed by a flatten → the (height, width) of the map flattened

  @property
  def title(self) -> str:
    """'torchvision resnet50', 'timm seresnet50' (without timm's weight tag)."""
    return f'{self.library} {self.name.split(".")[0]}'


def create_model(model: str):
  """The registered `model` as its source computes it (configs/pretrained.py's fields: e.g.
  Keras's ReLU6 in MobileNet v1), with ImageNet's 1000 classes."""
  source(model)
  fields = pretrained_config.MODELS[model].fields
  return models.create_model(model, num_classes=IMAGENET_CLASSES, **fields)


def _rules(*rules: tuple[str, str]) -> Callable[[str], str]:
  """A layer-name function from regex substitutions applied in turn, then '/' → '.'."""

  def rename(path: str) -> str:
    for pattern, replacement in rules:
      path = re.sub(pattern, replacement, path)
    return path.replace('/', '.')

  return rename


def _table(table: Mapping[str, str], then: Callable[[str], str]) -> Callable[[str], str]:
  """Renames a path's first component through `table` where listed, then applies `then`."""

  def rename(path: str) -> str:
    head, _, rest = path.partition('/')
    if head in table:
      path = table[head] + (f'/{rest}' if rest else '')
    return then(path)

  return rename


# ---- torchvision ---------------------------------------------------------------------------

_RESNET = _rules(
    (r'^layer(\d)_(\d+)/', r'layer\1.\2.'),
    (r'downsample_conv$', 'downsample.0'),
    (r'downsample_bn$', 'downsample.1'),
)


def _alexnet() -> Callable[[str], str]:
  names = dict(zip(('conv1', 'conv2', 'conv3', 'conv4', 'conv5'), (0, 3, 6, 8, 10)))
  names = {k: f'features.{v}' for k, v in names.items()}
  names.update(fc6='classifier.1', fc7='classifier.4', fc8='classifier.6')
  return _table(names, _rules())


def _vgg(model: str) -> Callable[[str], str]:
  """torchvision's `features` Sequential: conv, [bn,] relu per conv and a max pool per stage."""
  fields = models.entry(model).fields
  per_conv = 3 if fields.get('batch_norm') else 2
  names, index = {}, 0
  for stage, convs in enumerate(fields['stage_sizes'], start=1):
    for i in range(1, convs + 1):
      names[f'conv{stage}_{i}'] = f'features.{index}'
      names[f'bn{stage}_{i}'] = f'features.{index + 1}'
      index += per_conv
    index += 1
  names.update(fc6='classifier.0', fc7='classifier.3', head='classifier.6')
  return _table(names, _rules())


def _squeezenet(model: str) -> Callable[[str], str]:
  """Fire modules sit in `features` between the pools: after conv1 (0) and its pool (1), each
  group of Fire modules follows the previous group's pool."""
  names, index, fire = {'conv1': 'features.0', 'conv10': 'classifier.1'}, 2, 2
  for group in models.entry(model).fields['stage_sizes']:
    for _ in range(group):
      index += 1
      names[f'fire{fire}'] = f'features.{index}'
      fire += 1
    index += 1
  return _table(names, _rules())


def _mobilenet_v2(path: str) -> str:
  """InvertedResidual's `conv` Sequential: [expand ConvBNReLU,] depthwise ConvBNReLU, project
  conv, project BN; the stem and the last 1×1 are ConvBNReLU Sequentials themselves."""
  head, _, rest = path.partition('/')
  if head == 'classifier':
    return 'classifier.1'
  index = head.split('_')[1]
  if rest in ('conv', 'bn'):
    return f'features.{index}.{0 if rest == "conv" else 1}'
  part, layer = rest.split('/')
  slot = {'conv': 0, 'bn': 1}[layer]
  return (
      f'features.{index}.conv.'
      + {
          'expand': f'0.{slot}',
          'depthwise': f'{int(_has_expand(index))}.{slot}',
          'project': f'{1 + int(_has_expand(index)) + slot}',
      }[part]
  )


def _has_expand(index: str) -> bool:
  return index != '1'  # torchvision: only the first block (expansion 1) has no expand conv


def _shufflenet_v2(path: str) -> str:
  """branch1: depthwise conv, BN, 1×1 conv, BN, ReLU; branch2: 1×1, BN, ReLU, depthwise, BN, 1×1,
  BN, ReLU (Sequential indices)."""
  m = re.fullmatch(r'stage(\d)_(\d+)/branch(\d)_(\d)/(conv|bn)', path)
  if m:
    stage, block, branch, unit, layer = m.groups()
    first = (0, 2)[int(unit)] if branch == '1' else (0, 3, 5)[int(unit)]
    return f'stage{stage}.{block}.branch{branch}.{first + (layer == "bn")}'
  m = re.fullmatch(r'(conv[15])/(conv|bn)', path)
  if m:
    return f'{m.group(1)}.{0 if m.group(2) == "conv" else 1}'
  return path.replace('/', '.')


_DENSENET = _rules((r'^(?!classifier)', 'features/'))
_GOOGLENET = _rules((r'branch(\d)_(\d)', r'branch\1.\2'))
_INCEPTION_V3 = _rules((r'^conv2d_', 'Conv2d_'), (r'^mixed_', 'Mixed_'), (r'^aux/', 'AuxLogits/'))

# ---- timm ----------------------------------------------------------------------------------

_INCEPTION_V4_FEATURES = {
    'conv2d_1a': 0,
    'conv2d_2a': 1,
    'conv2d_2b': 2,
    'mixed_3a': 3,
    'mixed_4a': 4,
    'mixed_5a': 5,
    **{f'inception_a_{i}': 6 + i for i in range(4)},
    'reduction_a': 10,
    **{f'inception_b_{i}': 11 + i for i in range(7)},
    'reduction_b': 18,
    **{f'inception_c_{i}': 19 + i for i in range(3)},
}


def _inception_v4(path: str) -> str:
  head, _, rest = path.partition('/')
  if head == 'fc':
    return 'last_linear'
  if not head.startswith('inception_c'):  # Inception-C keeps TF-slim's names (branch1_1a)
    rest = re.sub(r'branch(\d)_(\d)', r'branch\1.\2', rest)
  rest = re.sub(r'^branch3/', 'branch3.1/', rest)  # after the average pool
  return f'features.{_INCEPTION_V4_FEATURES[head]}.{rest}'.replace('/', '.')


_INCEPTION_RESNET_V2 = _rules(
    (r'^block35_(\d+)/', r'repeat.\1/'),
    (r'^block17_(\d+)/', r'repeat_1.\1/'),
    (r'^block8_(\d+)/', r'repeat_2.\1/'),
    (r'branch(\d)_(\d)', r'branch\1.\2'),
    (r'^mixed_5b/branch3/', 'mixed_5b/branch3.1/'),
    (r'^fc$', 'classif'),
)
_RESNET_V2 = _rules(
    (r'^conv1$', 'stem.conv'),
    (r'^final_bn$', 'norm'),
    (r'^fc$', 'head.fc'),
    (r'^layer(\d)_(\d+)/', lambda m: f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'),
    (r'bn(\d)$', r'norm\1'),
    (r'downsample_conv$', 'downsample.conv'),
)

# ---- Keras ---------------------------------------------------------------------------------


def _xception(path: str) -> str:
  """Keras names the entry flow's stem block1, our residual blocks 1–12 are its blocks 2–13 and
  the exit flow's separable convs block14; its four shortcut convs and BNs are unnamed
  (conv2d, conv2d_1, ...), and `convert` takes them in order."""
  stem = {'conv1': 'block1_conv1', 'bn1': 'block1_conv1_bn', 'conv2': 'block1_conv2'}
  stem.update(bn2='block1_conv2_bn', fc='predictions')
  stem.update({'conv3': 'block14_sepconv1', 'bn3': 'block14_sepconv1_bn'})
  stem.update({'conv4': 'block14_sepconv2', 'bn4': 'block14_sepconv2_bn'})
  head, _, rest = path.partition('/')
  if head in stem:
    return stem[head]
  block = int(head.removeprefix('block')) + 1
  unit, _, _ = rest.partition('/')
  if unit in ('skip', 'skipbn'):
    return f'{"conv2d" if unit == "skip" else "batch_normalization"}#{block}'
  if unit.startswith('bn'):
    return f'block{block}_sepconv{unit[2:]}_bn'
  return f'block{block}_{unit}'


def _mobilenet_v1(path: str) -> str:
  return 'conv_preds' if path == 'fc' else path


# ---- the table -----------------------------------------------------------------------------


def _sources() -> dict[str, Source]:
  tv = functools.partial(Source, TORCHVISION)
  table = {
      'alexnet': tv('alexnet', _alexnet(), flattened={'fc6': (6, 6)}),
      'googlenet': tv('googlenet', _GOOGLENET, flattened={'aux1/fc1': (4, 4), 'aux2/fc1': (4, 4)}),
      'inception_v3': tv('inception_v3', _INCEPTION_V3),
      'mobilenet_v2': tv('mobilenet_v2', _mobilenet_v2),
      'seresnet50': Source(TIMM, 'seresnet50.a1_in1k', _RESNET),
      'seresnext50_32x4d': Source(TIMM, 'seresnext50_32x4d.racm_in1k', _RESNET),
      'inception_v4': Source(TIMM, 'inception_v4.tf_in1k', _inception_v4),
      'inception_resnet_v2': Source(TIMM, 'inception_resnet_v2.tf_in1k', _INCEPTION_RESNET_V2),
      'xception': Source(KERAS, 'Xception', _xception),
      'mobilenet_v1': Source(KERAS, 'MobileNet', _mobilenet_v1),
  }
  for name in (
      *(f'resnet{d}' for d in (18, 34, 50, 101, 152)),
      *('resnext50_32x4d', 'resnext101_32x8d', 'wide_resnet50_2', 'wide_resnet101_2'),
  ):
    table[name] = tv(name, _RESNET)
  for depth in (121, 161, 169, 201):
    table[f'densenet{depth}'] = tv(f'densenet{depth}', _DENSENET)
  for width in ('0_5', '1_0', '1_5', '2_0'):
    table[f'shufflenet_v2_x{width}'] = tv(f'shufflenet_v2_x{width}', _shufflenet_v2)
  for name in ('squeezenet1_0', 'squeezenet1_1'):
    table[name] = tv(name, _squeezenet(name))
  for name in (f'vgg{d}{bn}' for d in (11, 13, 16, 19) for bn in ('', '_bn')):
    table[name] = tv(name, _vgg(name), flattened={'fc6': (7, 7)})
  timm_v2 = {18: 'ra4_e3600_r224_in1k', 34: 'ra4_e3600_r224_in1k', 50: 'a1h_in1k', 101: 'a1h_in1k'}
  for depth, tag in timm_v2.items():
    table[f'preact_resnet{depth}'] = Source(TIMM, f'resnetv2_{depth}.{tag}', _RESNET_V2)
  return table


SOURCES: dict[str, Source] = _sources()


def source(model: str) -> Source:
  """The published weights `model` converts from; a ConfigError naming the convertible ones."""
  if model not in SOURCES:
    reference = models.entry(model).reference  # an unknown name gets the registry's message
    raise ConfigError(
        f'{model} has no published weights to convert (its reference, {reference}, publishes '
        f'none).{did_you_mean(model, SOURCES)} Convertible models: {", ".join(sorted(SOURCES))}.'
    )
  return SOURCES[model]
