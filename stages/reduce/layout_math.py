"""Pure math of the 2-D layout: normalisation to the unit square, and its quality score.

The reference (Carter et al., 2019, docs/method.md §3; lucid's
``recipes/activation_atlas/layout.py: normalize_layout``) clips each axis of the UMAP layout to
its 1st-99th percentile widened by a 10% margin and rescales each axis to [0, 1], so that a few
far outliers do not squeeze the bulk of the map into a corner of the grid.

Nothing here reads or writes files; :mod:`stages.reduce.stage` does the I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def clip_bounds(
    embedding: NDArray[np.floating],
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
    margin: float = 0.1,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-axis (low, high) clip bounds: the percentiles widened by ``margin`` of their span.

    lucid widens the upper bound by ``margin`` of the span *after* moving the lower one (so 11%
    instead of 10%); here both sides get the same ``margin * (p_high - p_low)``.
    """
    points = np.asarray(embedding, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"embedding must be a non-empty [n, d] array (got shape {points.shape})")
    lo_pct, hi_pct = clip_percentiles
    if not 0.0 <= lo_pct < hi_pct <= 100.0:
        raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100 (got {clip_percentiles})")
    low = np.percentile(points, lo_pct, axis=0)
    high = np.percentile(points, hi_pct, axis=0)
    span = high - low
    return low - margin * span, high + margin * span


def normalize_layout(
    embedding: NDArray[np.floating],
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
    margin: float = 0.1,
) -> NDArray[np.float32]:
    """Clip each axis to its widened percentile range, then rescale each axis to [0, 1].

    As in lucid, the rescaling maps the clipped points' own min and max to 0 and 1, so points
    beyond the widened percentiles (the outliers) land exactly on 0 or 1 and the grid stage must
    treat 1.0 as inside the last cell. An axis with no spread (all points equal) maps to 0.5.
    Returns float32 ``[n, d]`` with every value in [0, 1].
    """
    points = np.asarray(embedding, dtype=np.float64)
    low, high = clip_bounds(points, clip_percentiles, margin)
    clipped = np.clip(points, low, high)
    lo = clipped.min(axis=0)
    span = clipped.max(axis=0) - lo
    flat = span <= 0
    scaled = (clipped - lo) / np.where(flat, 1.0, span)
    scaled[:, flat] = 0.5
    # Rounding of (x - lo) / span can land a hair outside [0, 1]; the grid relies on the range.
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def layout_trustworthiness(
    features: NDArray[np.floating],
    layout: NDArray[np.floating],
    n_neighbors: int = 10,
    metric: str = "cosine",
) -> float:
    """sklearn's trustworthiness of ``layout`` w.r.t. ``features`` (1.0: no false neighbours).

    The score is quadratic in memory, so callers pass a subsample (the benchmark uses 5,000
    rows). ``n_neighbors=10`` is a middle ground between the local scale UMAP optimises and the
    cluster scale a grid cell averages over; it is recorded with every score we report.
    """
    from sklearn.manifold import trustworthiness

    return float(
        trustworthiness(
            np.asarray(features, dtype=np.float32),
            np.asarray(layout, dtype=np.float32),
            n_neighbors=n_neighbors,
            metric=metric,
        )
    )
