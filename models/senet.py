"""Squeeze-and-excitation ResNets and ResNeXts (Hu et al. 2018), as timm builds them.

Each bottleneck scales the channels of its residual branch, after the branch's last BN and
before the addition, by a gate in (0, 1) computed per example and channel from the branch's
global average: fc (C → C/r) → ReLU → fc (C/r → C) → sigmoid, r = `se_reduction` = 16 as in
the paper. That adds 2·C²/r + C/r + C parameters per block (e.g. 2,530,992 over ResNet-50's
16 blocks); the counts match timm's seresnet50, seresnet101 and seresnext50_32x4d (timm rounds
C/r to a multiple of 8, which changes nothing for C ≥ 256 at r = 16).

The rest is torchvision's ResNet (models/resnet.py), as in timm: stride on the 3×3. The
paper's Caffe SE-ResNets (and Cadene's port, timm's `legacy_seresnet*`) stride on the first
1×1 instead: `stride_on_3x3=False`; their SE-ResNeXts stride on the 3×3. Init: convs
kaiming fan_out as timm, the SE layers' too (layers.SqueezeExcite's default); timm also
zero-initialises each block's last BN scale by default (`zero_init_residual=True` here).
"""

import functools

from models import layers, resnet
from models.registry import register


@register('seresnet50', stage_sizes=(3, 4, 6, 3))
@register('seresnet101', stage_sizes=(3, 4, 23, 3))
@register('seresnext50_32x4d', stage_sizes=(3, 4, 6, 3), groups=32, width_per_group=4)
class SEResNet(resnet.ResNet):
  """resnet.ResNet whose `block_hook` is squeeze-and-excitation with reduction `se_reduction`.

  The hook is built from `se_reduction` and `dtype` (named `se` in every block), so it is not
  a field to set here.
  """

  se_reduction: int = 16

  def __post_init__(self):
    hook = self.block_hook
    if hook is not None and getattr(hook, 'func', None) is not layers.SqueezeExcite:
      raise ValueError(
          'SEResNet sets block_hook to squeeze-and-excitation itself; use '
          'resnet.ResNet for another hook.'
      )
    # Rebuilt on every construction (clone included) so that it follows se_reduction.
    object.__setattr__(
        self,
        'block_hook',
        functools.partial(
            layers.SqueezeExcite, reduction=self.se_reduction, dtype=self.dtype, name='se'
        ),
    )
    super().__post_init__()
