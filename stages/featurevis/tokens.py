"""Token layers seen as a spatial grid: a transformer block's ``[B, N, C]`` output as ``[B, C, g, g]``.

A vision transformer cuts the image into a ``g x g`` grid of patches and keeps one token per
patch, after ``k`` leading tokens that belong to no patch (the class token; register tokens in
later models): ``N = k + g * g``. Read row-major, patch token ``k + y * g + x`` is the patch at
row ``y``, column ``x`` (torchvision's ``VisionTransformer`` puts its class token first and flattens
the patch grid row by row). Seen that way, every objective and measurement written for a
convolutional ``[B, C, H, W]`` activation (a position ``(y, x)``, a channel, the centre cell) applies
to a token layer unchanged, and the leading tokens are left out as they have no position.

The grid is a *view* of the token tensor (no copy), so writing into it writes the tokens: a
tangent built on the grid is a tangent of the token tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stages.featurevis.errors import FeatureVisError

#: most leading (non-patch) tokens a layer may have: a class token plus a few register tokens
MAX_LEADING = 8


def token_layout(n_tokens: int) -> tuple[int, int] | None:
    """``(leading, side)`` with ``n_tokens = leading + side ** 2``, or None when ``n_tokens`` is no patch grid.

    The largest square that fits is the patch grid; what is left over must be a few leading tokens
    (at most :data:`MAX_LEADING`, and fewer than a grid row).
    """
    side = math.isqrt(int(n_tokens))
    leading = int(n_tokens) - side * side
    if side < 2 or leading > min(MAX_LEADING, side - 1):
        return None
    return leading, side


def is_token_tensor(t: Tensor) -> bool:
    """A ``[B, N, C]`` tensor whose N is a patch grid (plus leading tokens)."""
    return t.dim() == 3 and token_layout(t.shape[1]) is not None


def spatial(t: Tensor) -> Tensor:
    """``[B, C, H, W]`` as is; token ``[B, N, C]`` as the ``[B, C, g, g]`` grid of its patch tokens (a view).

    Anything else (logits ``[B, K]``, ...) is returned unchanged, so callers can pass every
    tensor a forward returns.
    """
    if t.dim() != 3:
        return t
    layout = token_layout(t.shape[1])
    if layout is None:
        raise FeatureVisError(
            f"a [B, N, C] activation with N = {t.shape[1]} tokens is not a square patch grid "
            f"plus at most {MAX_LEADING} leading tokens; choose a layer with a spatial layout"
        )
    leading, side = layout
    return t[:, leading:, :].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


def leading_tokens(t: Tensor) -> Tensor:
    """The ``[B, k, C]`` leading (non-patch) tokens of a token tensor."""
    layout = token_layout(t.shape[1])
    if t.dim() != 3 or layout is None:
        raise FeatureVisError(f"expected a [B, N, C] token tensor, got shape {list(t.shape)}")
    return t[:, : layout[0], :]


def tokens_from_grid(grid: Tensor, leading: Tensor) -> Tensor:
    """Inverse of :func:`spatial`: ``[B, C, g, g]`` patch grid + ``[B, k, C]`` leading tokens -> ``[B, k + g*g, C]``."""
    b, c, h, w = grid.shape
    patches = grid.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return torch.cat([leading.to(patches.dtype), patches], dim=1)
