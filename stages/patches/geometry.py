"""Where a patch goes: a square of side ``r`` x the input side at one of the four corners (pure numpy).

Carter et al. (2019), "Exploring Neural Networks with Activation Atlases", section on class
comparisons (lucid notebook ``activation-atlas-adversarial``): a picture of a feature that pushes
toward class B is pasted onto photos of class A, as a square of side ``r`` times the image side
(``r`` from 0.1 to 0.8) at a corner. Images here are ``[..., S, S, 3]`` float arrays in [0, 1]
(channels last, the model's input size); a patch is resized to its side once, then pasted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class Placement:
    """One corner and one relative size."""

    corner: str
    r: float

    def label(self) -> str:
        return f"{self.corner} r={self.r:g}"


def patch_side(r: float, size: int) -> int:
    """Side in pixels of a patch of relative size ``r`` on a ``size`` x ``size`` input: round(r x size), at least 1."""
    if not 0.0 < r <= 1.0:
        raise ValueError(f"patch size r must be in (0, 1], got {r}")
    return max(1, min(size, round(r * size)))


def corner_origin(corner: str, side: int, size: int) -> tuple[int, int]:
    """``(top, left)`` pixel of a ``side`` x ``side`` square at ``corner`` of a ``size`` x ``size`` image."""
    far = size - side
    origins = {"top_left": (0, 0), "top_right": (0, far), "bottom_left": (far, 0), "bottom_right": (far, far)}
    if corner not in origins:
        raise ValueError(f"unknown corner {corner!r}; one of {', '.join(CORNERS)}")
    return origins[corner]


def resize_patch(patch: NDArray[np.floating], side: int, resample: str = "lanczos") -> NDArray[np.float32]:
    """``[h, w, 3]`` in [0, 1] -> ``[side, side, 3]`` float32 (Lanczos; ``nearest`` keeps noise pixels unsmoothed)."""
    p = np.asarray(patch, dtype=np.float32)
    if p.ndim != 3 or p.shape[2] != 3:
        raise ValueError(f"a patch is [h, w, 3], got {p.shape}")
    if p.shape[:2] == (side, side):
        return p.copy()
    img = Image.fromarray(np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8))
    method = Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.LANCZOS
    return np.asarray(img.resize((side, side), method), dtype=np.float32) / 255.0


def paste(images: NDArray[np.floating], patch: NDArray[np.floating], corner: str) -> NDArray[np.float32]:
    """Copies of ``images`` (``[..., S, S, 3]``) with the already-sized square ``patch`` (``[s, s, 3]``) at ``corner``."""
    out = np.array(images, dtype=np.float32, copy=True)
    size = out.shape[-2]
    if out.shape[-3] != size:
        raise ValueError(f"images must be square, got {out.shape[-3]} x {size}")
    side = patch.shape[0]
    if patch.shape != (side, side, 3) or side > size:
        raise ValueError(f"patch must be [s, s, 3] with s <= {size}, got {patch.shape}")
    top, left = corner_origin(corner, side, size)
    out[..., top : top + side, left : left + side, :] = patch
    return out
