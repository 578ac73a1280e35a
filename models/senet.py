"""Squeeze-and-excitation ResNets and ResNeXts (Hu et al. 2018), as timm builds them.

Each bottleneck scales the channels of its residual branch, after the branch's last BN and
before the addition, by a gate in (0, 1) computed per example and channel from the branch's
global average: fc (C → C/r) → ReLU → fc (C/r → C) → sigmoid, r = `se_reduction` = 16 as in
the paper. That adds 2·C²/r + C/r + C parameters per block (e.g. 2,530,992 over ResNet-50's
16 blocks); the counts match timm's seresnet50, seresnet101 and seresnext50_32x4d (timm rounds
C/r to a multiple of 8, which changes nothing for C ≥ 256 at r = 16).

The networks are models/resnet.py's `ResNet` with `se_reduction` set (torchvision's ResNet, as
in timm: stride on the 3×3). The paper's Caffe SE-ResNets (and Cadene's port, timm's
`legacy_seresnet*`) stride on the first 1×1 instead: `stride_on_3x3=False`; their SE-ResNeXts
stride on the 3×3. Init: convs kaiming fan_out as timm, the SE layers' too
(layers.SqueezeExcite's default). timm also zero-initialises each block's last BN scale by
default; here that is `zero_init_residual=True`, off by default (BN scales start at one).
BatchNorm: momentum 0.1 in PyTorch's convention and eps 1e-5, as timm.
"""

from models.registry import register
from models.resnet import ResNet

register(
    'seresnet50',
    ResNet,
    reference='timm seresnet50',
    params=28_088_024,
    stage_sizes=(3, 4, 6, 3),
    se_reduction=16,
)
register(
    'seresnet101',
    ResNet,
    reference='timm seresnet101',
    params=49_326_872,
    stage_sizes=(3, 4, 23, 3),
    se_reduction=16,
)
register(
    'seresnext50_32x4d',
    ResNet,
    reference='timm seresnext50_32x4d',
    params=27_559_896,
    stage_sizes=(3, 4, 6, 3),
    groups=32,
    width_per_group=4,
    se_reduction=16,
)
