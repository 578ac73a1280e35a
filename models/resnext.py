"""ResNeXt (Xie et al. 2017) on ImageNet, as torchvision builds it.

torchvision's ResNet (models/resnet.py) with another bottleneck inner width, `int(planes ·
width_per_group / 64) · groups`, where planes = 64, 128, 256, 512 per stage and the block
output stays 4 · planes (256 … 2048). ResNeXt "C×d" splits the 3×3 conv into C groups (the
cardinality) of d channels each: `groups=C, width_per_group=d`. resnext50_32x4d's first-stage
3×3 is 128 → 128 wide in 32 groups of 4 channels: almost ResNet-50's cost and parameters (the
paper's "same complexity"), traded from width per path to number of paths.

Everything else (stride on the 3×3, projection shortcuts, kaiming fan_out init, BN momentum
0.1 in PyTorch's convention and eps 1e-5) is models/resnet.py's; the facebookresearch/ResNeXt
Torch code also strides on the 3×3. Wide ResNet-50-2, the same ResNet with `width_per_group=128`,
is in wide_resnet.py.
"""

from models.registry import register
from models.resnet import ResNet

register(
    'resnext50_32x4d',
    ResNet,
    reference='torchvision resnext50_32x4d',
    params=25_028_904,
    stage_sizes=(3, 4, 6, 3),
    groups=32,
    width_per_group=4,
)
register(
    'resnext101_32x8d',
    ResNet,
    reference='torchvision resnext101_32x8d',
    params=88_791_336,
    stage_sizes=(3, 4, 23, 3),
    groups=32,
    width_per_group=8,
)
