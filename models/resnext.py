"""ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko & Komodakis 2016) on ImageNet.

Both are torchvision's ResNet with another bottleneck inner width, `int(planes ·
width_per_group / 64) · groups`, where planes = 64, 128, 256, 512 per stage and the block
output stays 4 · planes (256 … 2048):

- ResNeXt "C×d": the 3×3 conv is split into C groups (the cardinality) of d channels each, so
  `groups=C, width_per_group=d`. resnext50_32x4d's first-stage 3×3 is 128 → 128 wide in 32
  groups of 4 channels: almost ResNet-50's cost and parameters (the paper's "same complexity"),
  traded from width per path to number of paths.
- Wide ResNet-50-2 doubles the inner width of every bottleneck (1×1 → 3×3 → 1×1) and keeps
  the outputs. torchvision expresses it as one group of twice the base width:
  `width_per_group=128` gives int(64 · 128/64) · 1 = 128 channels in stage 1 (ResNet-50: 64).

Everything else (stride on the 3×3, projection shortcuts, kaiming fan_out init, BN eps 1e-5)
is models/resnet.py's; the facebookresearch/ResNeXt Torch code also strides on the 3×3. The
parameter counts match torchvision's model cards.
"""

from models import resnet
from models.registry import register

register('resnext50_32x4d', stage_sizes=(3, 4, 6, 3), groups=32, width_per_group=4)(resnet.ResNet)
register('resnext101_32x8d', stage_sizes=(3, 4, 23, 3), groups=32, width_per_group=8)(resnet.ResNet)
register('wide_resnet50_2', stage_sizes=(3, 4, 6, 3), width_per_group=128)(resnet.ResNet)
register('wide_resnet101_2', stage_sizes=(3, 4, 23, 3), width_per_group=128)(resnet.ResNet)
