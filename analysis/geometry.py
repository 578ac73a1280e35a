"""Receptive-field arithmetic along one image axis: size, jump (effective stride) and start.

A unit's receptive field along an axis is the input interval it depends on, counted in input
pixels (padding included: the theoretical field). Three numbers describe a whole feature map:
`rf` (interval length), `jump` (input pixels between neighbouring units) and `start` (centre of
the first unit's interval; input pixel centres sit at 0, 1, 2, ...), as in Dumoulin & Visin's
"A guide to convolution arithmetic" and Araujo et al.'s "Computing receptive fields of CNNs".
"""

import dataclasses
from fractions import Fraction


@dataclasses.dataclass(frozen=True)
class Axis:
  """The receptive field of a feature map along one image axis.

  `index` is the array axis that still runs along this image axis, or None once it has been
  reduced away (global pooling, flatten): every unit then sees the whole extent `rf`.
  """

  rf: Fraction
  jump: Fraction
  start: Fraction
  index: int | None

  @property
  def lo(self) -> Fraction:
    return self.start - Fraction(self.rf - 1, 2)

  @property
  def hi(self) -> Fraction:
    return self.start + Fraction(self.rf - 1, 2)


def pixels(index: int) -> Axis:
  """An input image axis: every pixel sees itself."""
  return Axis(Fraction(1), Fraction(1), Fraction(0), index)


def window(
    axis: Axis,
    size: int,
    stride: int = 1,
    pad_lo: int = 0,
    input_dilation: int = 1,
    window_dilation: int = 1,
) -> Axis:
  """After a sliding window (convolution or pooling) along `axis`.

  `input_dilation` > 1 spreads the input apart first (transposed convolution, interior padding):
  the jump shrinks by that factor and a window reaches at most ceil(span / dilation) real
  inputs. `window_dilation` > 1 is a dilated (atrous) window.
  """
  if axis.index is None:
    return axis
  jump = axis.jump / input_dilation
  span = (size - 1) * window_dilation + 1
  reach = ((span - 1) // input_dilation) * input_dilation  # dilated steps between real inputs hit
  return Axis(
      rf=axis.rf + reach * jump,
      jump=jump * stride,
      start=axis.start + (Fraction(span - 1, 2) - pad_lo) * jump,
      index=axis.index,
  )


def shifted(axis: Axis, offset: int, stride: int = 1) -> Axis:
  """After taking every `stride`-th unit from unit `offset` on (slicing, cropping)."""
  if axis.index is None:
    return axis
  return dataclasses.replace(axis, start=axis.start + offset * axis.jump, jump=axis.jump * stride)


def reduced(axis: Axis, length: int) -> Axis:
  """After reducing `length` units into one (global pooling, flattening into a dense layer)."""
  if axis.index is None:
    return axis
  reach = (length - 1) * abs(axis.jump)
  return Axis(rf=axis.rf + reach, jump=axis.jump, start=axis.start + Fraction(reach, 2), index=None)


def moved(axis: Axis, index: int | None) -> Axis:
  return dataclasses.replace(axis, index=index)


def union(axes: list[Axis]) -> Axis:
  """Where several paths meet: the smallest interval holding every path's field.

  For paths centred alike (every padded branch of an Inception module, a ResNet shortcut) this
  is the largest field; paths that are offset widen it. A reduced (global) path widens every unit
  to the whole extent.
  """
  spatial = [a for a in axes if a.index is not None]
  lo, hi = min(a.lo for a in axes), max(a.hi for a in axes)
  base = spatial[0] if spatial else axes[0]
  return Axis(rf=hi - lo + 1, jump=base.jump, start=(lo + hi) / 2, index=base.index)


def union_all(geoms: list[tuple[Axis, ...]]) -> tuple[Axis, ...]:
  """`union` per image axis over several feature maps' geometries."""
  return tuple(union(list(axes)) for axes in zip(*geoms))
