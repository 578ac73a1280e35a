"""An encoder-decoder for semantic segmentation: strided convs down, dilated convs for context,
transposed convs back up, one logit per class at every pixel (task='segmentation').

It puts the notes' transposed and dilated convolutions (models/convolutions.py) to work:
- Long, Shelhamer & Darrell 2015 (FCN): a fully convolutional net whose coarse features are
  upsampled by learned transposed convs, with skips from finer layers. FCN sums the skip's
  1×1 score map into the upsampled scores; here the skips carry features, as in U-Net.
- Yu & Koltun 2016 (dilated convs): a context module of 3×3 convs at rates 1, 2, 4 that grows the
  receptive field exponentially with the same 9·C² weights per layer. Theirs runs at full
  resolution after a front end without the last poolings, rates 1, 1, 2, 4, 8, 16, 1; here three
  rates suffice at the 1/4 resolution of a 28×28 digit.
- Ronneberger, Fischer & Brox 2015 (U-Net): each upsampling is followed by concatenating the
  encoder's map of that size and a 3×3 conv fusing them. U-Net uses unpadded convs (its output is
  smaller than its input), max pooling down, 2×2 up-convs and two convs per level; here padded
  strided 3×3 convs go down and 3×3 transposed convs at stride 2 come back to the input size.

Every conv is a `layers.ConvNormAct` (BatchNorm, ReLU); each transposed conv is
`convolutions.ConvTranspose` followed by BatchNorm and ReLU. Logits are [N, H, W, num_classes],
float32, at the input's resolution for any H, W (the transposed convs' output_padding is chosen
per level to land on the skip's size).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import layers
from models.convolutions import ConvTranspose
from models.registry import NativeInput, register

DIGITS_SEGMENTATION = NativeInput(28, 1, 11)  # background + ten digit classes


class EncoderDecoder(nn.Module):
  """stem 3×3 → strided 3×3 convs (one per `widths` entry after the first) → dilated 3×3 convs
  at `dilation_rates` → per level: transposed 3×3 at stride 2, concatenate the encoder's map,
  3×3 conv → 1×1 conv to `num_classes` logits per pixel."""

  num_classes: int = 11
  widths: Sequence[int] = (16, 32, 64)  # the stem's, then each downsampling level's
  dilation_rates: Sequence[int] = (1, 2, 4)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def unit(features: int, name: str, **kwargs: Any) -> layers.ConvNormAct:
      return layers.ConvNormAct(features, 3, dtype=self.dtype, name=name, **kwargs)

    x = x.astype(self.dtype)
    x = unit(self.widths[0], 'stem')(x, train)
    skips = []
    for i, width in enumerate(self.widths[1:], start=1):
      skips.append(x)
      x = unit(width, f'down{i}', strides=2, padding=1)(x, train)
    for i, rate in enumerate(self.dilation_rates, start=1):
      x = unit(self.widths[-1], f'context{i}', dilation=rate, padding=rate)(x, train)
    for i, skip in zip(range(len(skips), 0, -1), reversed(skips), strict=True):
      # (h − 1)·2 − 2·1 + 3 + output_padding = skip's size: 2h, or 2h − 1 for an odd size.
      extra = tuple(skip.shape[a] - (2 * x.shape[a] - 1) for a in (1, 2))
      x = ConvTranspose(
          skip.shape[-1],
          kernel_size=3,
          strides=2,
          padding=1,
          output_padding=extra,
          use_bias=False,
          dtype=self.dtype,
          name=f'up{i}',
      )(x)
      x = nn.relu(layers.batch_norm(train, self.dtype, name=f'up{i}_bn')(x))
      x = jnp.concatenate([x, skip], axis=-1)
      x = unit(skip.shape[-1], f'fuse{i}')(x, train)
    x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)


# No published network, so the pinned count is computed from the layers above: 3×3 kernels and
# BatchNorm's γ, β of stem 1→16 (176), down 16→32 (4,672) and 32→64 (18,560), three context
# convs 64→64 (3 × 36,992), up 64→32 and fuse 64→32 (2 × 18,496), up 32→16 and fuse 32→16
# (2 × 4,640), and the 1×1 head 16→11 with bias (187): 180,843.
register(
    'encoder_decoder',
    EncoderDecoder,
    reference='Long et al. 2015 FCN + Yu & Koltun 2016 dilated context + Ronneberger et al. '
    '2015 U-Net skips; this repository (count computed)',
    params=180_843,
    native_input=DIGITS_SEGMENTATION,
    per_pixel=True,
)
