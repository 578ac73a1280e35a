"""PyTorch twins of zoo models, and their eager train and eval steps (benchmarks.train_step's
--compare=torch). Imported only there: torch is an optional extra, never a requirement.

A twin is torchvision's model where the zoo follows torchvision (the same name), or one of the
small modules below for the zoo's paper-named networks; `TorchStep` checks that it has the
zoo model's parameter count, so the two frameworks time the same network.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F
from torch import nn

import models
from common.errors import UserError


class LeNet5(nn.Module):
  """models/lenet.py's `lenet5`: d2l's LeNet with ReLU and max pooling, no BatchNorm."""

  def __init__(self, image_size: int = 28, channels: int = 1, num_classes: int = 10):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
    self.conv2 = nn.Conv2d(6, 16, 5)
    side = (image_size // 2 - 4) // 2
    self.fc1 = nn.Linear(16 * side * side, 120)
    self.fc2 = nn.Linear(120, 84)
    self.head = nn.Linear(84, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = torch.flatten(x, 1)
    return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CifarBasicBlock(nn.Module):
  """Two 3×3 conv-BN, ReLU after the sum with the option-A shortcut (stride, zero channels)."""

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.stride, self.extra = stride, planes - in_planes

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
    if self.extra:
      shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
    return F.relu(y + shortcut)


class CifarResNet(nn.Module):
  """models/resnet.py's CIFAR ResNets (He et al. 2016 §4.2) with option-A shortcuts."""

  def __init__(self, depth: int = 20, num_classes: int = 10, widths=(16, 32, 64)):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    blocks, in_planes = [], widths[0]
    for stage, width in enumerate(widths):
      for index in range(n):
        blocks.append(CifarBasicBlock(in_planes, width, 2 if stage and not index else 1))
        in_planes = width
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(widths[-1], num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.blocks(F.relu(self.bn1(self.conv1(x))))
    return self.fc(x.mean((2, 3)))


def cifar_densenet(
    block_config: tuple[int, ...], growth_rate: int, num_init_features: int, num_classes: int
) -> nn.Module:
  """models/densenet.py's CIFAR DenseNet-BC: torchvision's DenseNet with the paper's 3×3 conv
  stem in place of the ImageNet stem (7×7/2 conv-BN-ReLU, 3×3/2 max pool)."""
  import torchvision  # pylint: disable=import-outside-toplevel

  net = torchvision.models.DenseNet(
      growth_rate=growth_rate,
      block_config=block_config,
      num_init_features=num_init_features,
      num_classes=num_classes,
  )
  net.features.conv0 = nn.Conv2d(3, num_init_features, 3, 1, 1, bias=False)
  for layer in ('norm0', 'relu0', 'pool0'):
    setattr(net.features, layer, nn.Identity())
  return net


def _lenet5(shape, num_classes):
  return LeNet5(shape[0], shape[2], num_classes)


def _resnet20(shape, num_classes):
  del shape
  return CifarResNet(20, num_classes)


def _densenet_bc_100_k12(shape, num_classes):
  del shape
  return cifar_densenet((16, 16, 16), 12, 24, num_classes)


# zoo name → (what it follows, a builder taking ((h, w, c), classes)).
TWINS: dict[str, tuple[str, Callable[..., nn.Module]]] = {
    'lenet5': ('benchmarks.torch_models.LeNet5', _lenet5),
    'resnet20': ('benchmarks.torch_models.CifarResNet', _resnet20),
    'densenet_bc_100_k12': ('torchvision DenseNet with a 3×3 stem', _densenet_bc_100_k12),
}


def twin(name: str, shape: tuple[int, int, int], num_classes: int) -> tuple[str, nn.Module]:
  """(what it is, the torch module) of the zoo model `name`."""
  if name in TWINS:
    reference, build = TWINS[name]
    return reference, build(shape, num_classes)
  import torchvision  # pylint: disable=import-outside-toplevel

  if models.entry(name).reference == f'torchvision {name}':
    return f'torchvision {name}', torchvision.models.get_model(name, num_classes=num_classes)
  raise UserError(
      f'--compare=torch has no PyTorch twin of {name!r}: it compares the models the zoo takes '
      f'from torchvision and {", ".join(sorted(TWINS))}; drop it from --models.'
  )


class TorchStep:
  """A twin's eager train step (SGD momentum 0.9, softmax cross-entropy, channels-last, as the
  zoo's default config) and eval step, on one random batch already on the device."""

  def __init__(
      self,
      name: str,
      batch_size: int,
      shape: tuple[int, int, int],
      num_classes: int,
      dtype: str = 'float32',
  ):
    self.reference, net = twin(name, shape, num_classes)
    self.params = sum(p.numel() for p in net.parameters())
    expected = models.create_model(name, num_classes=num_classes)
    zoo_params = _zoo_params(expected, shape)
    if self.params != zoo_params:
      raise UserError(
          f'the PyTorch twin of {name!r} ({self.reference}) has {self.params:,} parameters, '
          f'the zoo model {zoo_params:,}: not the same network, so not compared.'
      )
    self.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    self.net = net.to(self.device, memory_format=torch.channels_last)
    self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)
    h, w, c = shape
    generator = torch.Generator().manual_seed(0)
    self.images = (
        torch.rand(batch_size, c, h, w, generator=generator)
        .to(self.device)
        .contiguous(memory_format=torch.channels_last)
    )
    self.labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(self.device)
    self.autocast = dtype != 'float32'
    self.dtype = getattr(torch, dtype)

  def _sync(self) -> None:
    if self.device.type == 'cuda':
      torch.cuda.synchronize()

  def _forward(self) -> torch.Tensor:
    with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
      return self.net(self.images)

  def train(self) -> None:
    """One train step: forward, loss, backward, SGD update."""
    self.net.train()
    self.optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(self._forward().float(), self.labels)
    loss.backward()
    self.optimizer.step()
    self._sync()

  def eval(self) -> None:
    """One eval step: the forward pass in eval mode, without gradients."""
    self.net.eval()
    with torch.no_grad():
      self._forward()
    self._sync()


def _zoo_params(model: Any, shape: tuple[int, int, int]) -> int:
  """The parameter count of the flax `model` on `shape` images, from shapes alone."""
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
  )
  return sum(int(x.size) for x in jax.tree.leaves(variables['params']))
