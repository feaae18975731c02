"""Pure math of the class-comparison atlas's two axes (docs/method.md §8).

Carter et al. (2019) laid out the samples of two classes (e.g. "snorkel" vs "scuba diver") with
x = the difference of the two classes' attributions divided by its 99th percentile and clipped
to [-1, 1], and y = a 1-D t-SNE (cosine) of the activations; then a 10 x 10 grid. Exactly, here:

    d_r       = attr_a[r] - attr_b[r]                      for every selected row r
    scale     = percentile_q(|d|)                          q = compare.percentile (99), numpy's
                                                           linear interpolation over all rows
    x_r       = clip(d_r / scale, -1, 1)                   (the reference's x, a's side positive)
    layout_x  = (1 - x_r) / 2                              in [0, 1]: 0 = pushes toward a (left),
                                                           1 = toward b (right), 0.5 = neutral
    layout_y  = the 1-D t-SNE normalised like every layout (stages/reduce/layout_math.py: clip to the
                1st-99th percentile widened by a 10% margin, rescale to [0, 1])

So the map reads "a <-> b" left to right, as the manifest's axis title says. The attributions
are the store's top-k values (stages/classes/select.py: a class outside a row's top-k counts 0).
The x axis is not clipped to percentiles or widened: the reference's own clipping (to +-1 at the
99th percentile of |d|) already bounds it, and its 0.5 must stay the neutral line.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from stages.reduce.layout_math import normalize_layout


def difference_scale(difference: NDArray[np.floating], percentile: float = 99.0) -> float:
    """The ``percentile`` of ``|difference|`` (0 when every difference is 0)."""
    d = np.abs(np.asarray(difference, dtype=np.float64))
    if d.size == 0:
        raise ValueError("no rows to compare")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100] (got {percentile})")
    return float(np.percentile(d, percentile))


def signed_axis(
    attr_a: NDArray[np.floating], attr_b: NDArray[np.floating], percentile: float = 99.0
) -> tuple[NDArray[np.float32], float]:
    """``(x, scale)``: ``clip((attr_a - attr_b) / scale, -1, 1)`` with ``scale`` the percentile of
    ``|attr_a - attr_b|``. All-zero differences (scale 0) give x = 0 everywhere."""
    difference = np.asarray(attr_a, dtype=np.float64) - np.asarray(attr_b, dtype=np.float64)
    scale = difference_scale(difference, percentile)
    if scale <= 0.0:
        return np.zeros(difference.shape, np.float32), 0.0
    return np.clip(difference / scale, -1.0, 1.0).astype(np.float32), scale


def unit_x(signed: NDArray[np.floating]) -> NDArray[np.float32]:
    """Map the signed axis to [0, 1] with a's side (x = +1) on the left (0) and b's on the right (1)."""
    return ((1.0 - np.asarray(signed, dtype=np.float64)) / 2.0).astype(np.float32)


def comparison_layout(
    attr_a: NDArray[np.floating],
    attr_b: NDArray[np.floating],
    y_embedding: NDArray[np.floating],
    percentile: float = 99.0,
    clip_percentiles: tuple[float, float] = (1.0, 99.0),
    margin: float = 0.1,
) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
    """``(layout [n, 2] in [0, 1], embedding [n, 2] = (signed x, raw y), scale)``.

    ``y_embedding`` is the ``[n]`` (or ``[n, 1]``) 1-D embedding of the same rows.
    """
    signed, scale = signed_axis(attr_a, attr_b, percentile)
    y = np.asarray(y_embedding, dtype=np.float64).reshape(-1, 1)
    if len(y) != len(signed):
        raise ValueError(f"{len(signed)} attribution rows but {len(y)} embedded rows")
    y_unit = normalize_layout(y, clip_percentiles, margin)[:, 0]
    layout = np.stack([unit_x(signed), y_unit], axis=1).astype(np.float32)
    embedding = np.stack([signed, y[:, 0].astype(np.float32)], axis=1).astype(np.float32)
    return layout, embedding, scale
