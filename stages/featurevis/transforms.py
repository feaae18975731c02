"""Transformation robustness: random jitter, scale and rotation applied before every step.

Optimising an image that must excite the network under small random transforms suppresses the
adversarial high-frequency patterns a bare optimiser finds (Olah et al., "Feature
Visualization", Distill 2017). The chain copies docs/method.md §6 (lucid's activation-atlas
recipe, ``render_icons``, with 0 listed once among the angles): pad 16 (constant 0.5); crop-jitter by 4, 4, 8, 8, 8 px; random scale
from 0.998^(20..39); random rotation from {-20..19, -10..9, -5..4, 0} degrees; jitter 2; crop or
pad back to the render size.

Differences from lucid, on purpose:

* Every random parameter is drawn **per image** (lucid draws one offset/scale/angle for the
  whole batch). A batch is B independent icons, so per-image draws give each icon the full
  variety of views every step instead of all icons moving in lock step.
* Scale and rotation are one ``affine_grid``/``grid_sample`` about the image centre (uniform
  scale and rotation commute, so this equals lucid's scale-then-rotate with one interpolation
  instead of two). The canvas keeps its size: the content shrinks by the scale and the uncovered
  border is filled with 0.5 (lucid's resize shrinks the tensor itself and its rotation fills
  corners with 0; after "crop or pad back to the render size" both give the content at the same
  scale, ours on a neutral grey border).
* The final crop-or-pad (lucid ``crop_or_pad_to``, which pads with 0) pads with 0.5, the value
  of the initial pad.

Every transform is a callable ``(images [B, C, H, W], generator) -> images``; random draws come
from the given CPU ``torch.Generator`` only, so a seeded run repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from stages.featurevis.errors import FeatureVisError

Transform = Callable[[Tensor, torch.Generator], Tensor]

# docs/method.md §6: lucid's activation-atlas recipe (``render_icons``).
REFERENCE_PAD = 16
REFERENCE_PAD_VALUE = 0.5
REFERENCE_JITTERS = (4, 4, 8, 8, 8)
REFERENCE_SCALES = tuple(0.998**n for n in range(20, 40))
# The union list: uniform over the concatenation, so small angles are drawn more often.
REFERENCE_ANGLES = tuple(range(-20, 20)) + tuple(range(-10, 10)) + tuple(range(-5, 5)) + (0,)
REFERENCE_FINAL_JITTER = 2


def _draw(n_choices: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` uniform indices in ``[0, n_choices)`` from the CPU generator."""
    return torch.randint(0, n_choices, (batch,), generator=generator, device=generator.device).cpu()


@dataclass(frozen=True)
class Pad:
    """Constant padding on all four sides (lucid ``transform.pad(w, mode="constant")``)."""

    width: int
    value: float = REFERENCE_PAD_VALUE

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        w = self.width
        return F.pad(images, (w, w, w, w), mode="constant", value=self.value)


@dataclass(frozen=True)
class Jitter:
    """Random crop that shrinks the image by ``d`` px in each side length (lucid ``jitter(d)``).

    A crop, not a roll: no pixel wraps from one edge to the other. Offsets are drawn per image,
    uniformly in ``[0, d]`` for rows and columns, as ``tf.image.random_crop`` does.
    """

    d: int

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return jitter_chain(images, (self.d,), generator)


def jitter_chain(images: Tensor, ds: Sequence[int], generator: torch.Generator) -> Tensor:
    """``Jitter(d)`` for each ``d`` of ``ds`` in turn, as one crop.

    A crop of a crop is a crop at the summed offset, so a run of jitters needs one gather (and
    one scatter in the backward) instead of one per jitter: the same pixels, the same gradient
    (each output pixel reads exactly one input pixel), and the same random draws in the same
    order, so the result is bit-identical to applying them one by one.
    """
    b, c, h, w = images.shape
    total = torch.zeros((b, 2), dtype=torch.int64)
    for d in ds:
        if d >= min(h, w):
            raise FeatureVisError(f"jitter {d} px does not fit a {h}x{w} image; use a jitter below {min(h, w)}")
        total += torch.randint(0, d + 1, (b, 2), generator=generator, device=generator.device).cpu()
        h, w = h - d, w - d
    offsets = total.to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [B, h]
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # [B, w]
    out = images.gather(2, rows[:, None, :, None].expand(b, c, h, images.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


@dataclass(frozen=True)
class RandomScaleRotate:
    """Per-image random scale and rotation about the centre, one bilinear resample.

    ``scales`` and ``angles`` (degrees) are choice lists as in lucid's ``random_scale`` and
    ``random_rotate``; the canvas size is kept and the uncovered area filled with ``fill``.
    """

    scales: tuple[float, ...] = REFERENCE_SCALES
    angles: tuple[float, ...] = REFERENCE_ANGLES
    fill: float = REFERENCE_PAD_VALUE

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        b, _, h, w = images.shape
        scale = torch.tensor(self.scales, dtype=torch.float64)[_draw(len(self.scales), b, generator)]
        angle = torch.tensor(self.angles, dtype=torch.float64)[_draw(len(self.angles), b, generator)]
        theta = _inverse_affine(scale, torch.deg2rad(angle), h, w).to(images.device, images.dtype)
        grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
        # Shift by ``fill`` so grid_sample's zero padding becomes ``fill`` padding.
        shifted = F.grid_sample(images - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return shifted + self.fill


def _inverse_affine(scale: Tensor, radians: Tensor, h: int, w: int) -> Tensor:
    """``[B, 2, 3]`` output->input maps for ``affine_grid`` that scale by ``scale`` and rotate.

    Built in pixel units and conjugated into grid_sample's normalised coordinates, so non-square
    images rotate without shearing.
    """
    cos, sin = torch.cos(radians) / scale, torch.sin(radians) / scale
    # Input = R(-angle) / scale @ output, in pixel units (x right, y down).
    m = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # [B, 2, 2]
    to_pixels = torch.tensor([w / 2.0, h / 2.0], dtype=m.dtype)
    m = m * to_pixels[None, None, :] / to_pixels[None, :, None]  # D^-1 M D
    return torch.cat([m, torch.zeros(m.shape[0], 2, 1, dtype=m.dtype)], dim=2).float()


@dataclass(frozen=True)
class CropOrPadTo:
    """Centred crop or pad to ``size`` (lucid ``crop_or_pad_to``), padding with ``fill``."""

    size: tuple[int, int]
    fill: float = REFERENCE_PAD_VALUE

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return crop_or_pad(images, self.size, self.fill)


def crop_or_pad(images: Tensor, size: tuple[int, int], fill: float = REFERENCE_PAD_VALUE) -> Tensor:
    """Centre-crop or centre-pad the last two dimensions to ``size`` (offset ``(have - want) // 2``)."""
    (h, w), (th, tw) = images.shape[-2:], size
    if h > th or w > tw:
        top, left = max((h - th) // 2, 0), max((w - tw) // 2, 0)
        images = images[..., top : top + min(h, th), left : left + min(w, tw)]
        h, w = images.shape[-2:]
    if h < th or w < tw:
        top, left = (th - h) // 2, (tw - w) // 2
        images = F.pad(images, (left, tw - w - left, top, th - h - top), mode="constant", value=fill)
    return images


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, then crop or pad back to the input's size.

    Fitting back keeps every step's model input at the render size, so the layer grid (and its
    centre cell, where the atlas objective reads) is the same every step.
    """

    transforms: tuple[Transform, ...] = field(default_factory=tuple)
    fill: float = REFERENCE_PAD_VALUE

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        size = (images.shape[-2], images.shape[-1])
        for transform in _fuse_jitters(self.transforms):
            images = transform(images, generator)
        return crop_or_pad(images, size, self.fill)


@dataclass(frozen=True)
class _JitterRun:
    """Consecutive :class:`Jitter` transforms applied as one crop (:func:`jitter_chain`)."""

    ds: tuple[int, ...]

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return jitter_chain(images, self.ds, generator)


def _fuse_jitters(transforms: Sequence[Transform]) -> list[Transform]:
    """``transforms`` with every run of two or more jitters replaced by one :class:`_JitterRun`.

    The reference chain's five crop-jitters were five gathers and five scatter-adds per step, ~18% of a
    plain render step's profiled CPU time on the demo layer (batch 32, 80 px); fused, ~5%.
    """
    out: list[Transform] = []
    for transform in transforms:
        previous = out[-1] if out else None
        if isinstance(transform, Jitter) and isinstance(previous, _JitterRun):
            out[-1] = _JitterRun((*previous.ds, transform.d))
        elif isinstance(transform, Jitter) and isinstance(previous, Jitter):
            out[-1] = _JitterRun((previous.d, transform.d))
        else:
            out.append(transform)
    return out


def reference_transforms(
    *,
    pad: int = REFERENCE_PAD,
    jitters: Sequence[int] = REFERENCE_JITTERS,
    scales: Sequence[float] = REFERENCE_SCALES,
    angles: Sequence[float] = REFERENCE_ANGLES,
    final_jitter: int = REFERENCE_FINAL_JITTER,
) -> Compose:
    """The docs/method.md §6 chain; every argument defaults to the production value."""
    if not scales or not angles:
        raise FeatureVisError("transforms: scales and angles must each list at least one value")
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        raise FeatureVisError(f"transforms: scales must be positive (got {list(scales)})")
    chain: list[Transform] = [Pad(pad)] if pad else []
    chain += [Jitter(d) for d in jitters if d]
    chain.append(RandomScaleRotate(tuple(scales), tuple(float(a) for a in angles)))
    if final_jitter:
        chain.append(Jitter(final_jitter))
    return Compose(tuple(chain))
