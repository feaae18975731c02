"""stages/reduce/layout_math.py: percentile clip, margin, rescale to [0, 1] (docs/method.md §3)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.reduce.layout_math import clip_bounds, layout_trustworthiness, normalize_layout


def test_bounds_are_percentiles_widened_by_the_margin_on_both_sides() -> None:
    x = np.arange(101, dtype=np.float64)  # percentiles 1 and 99 are exactly 1 and 99
    layout = np.stack([x, 2 * x], axis=1)
    low, high = clip_bounds(layout, (1.0, 99.0), 0.1)
    np.testing.assert_allclose(low, [1 - 9.8, 2 - 19.6])
    np.testing.assert_allclose(high, [99 + 9.8, 198 + 19.6])


def test_normalised_layout_is_the_clipped_layout_rescaled_to_unit_square() -> None:
    rng = np.random.default_rng(0)
    layout = rng.normal(size=(1000, 2)) * [3.0, 0.5] + [10.0, -4.0]
    layout[:5] = [[1e6, -1e6]] * 5  # far outliers
    out = normalize_layout(layout, (1.0, 99.0), 0.1)
    assert out.dtype == np.float32 and out.shape == layout.shape
    assert out.min() == 0.0 and out.max() == 1.0
    low, high = clip_bounds(layout, (1.0, 99.0), 0.1)
    clipped = np.clip(layout, low, high)
    expected = (clipped - clipped.min(0)) / (clipped.max(0) - clipped.min(0))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # The outliers are clipped onto the border (x at 1, y at 0), not stretched across the map.
    np.testing.assert_array_equal(out[:5], [[1.0, 0.0]] * 5)


def test_margin_keeps_points_between_percentile_and_margin_unclipped() -> None:
    x = np.concatenate([np.linspace(0, 1, 1000), [1.05]])  # just beyond p99, inside the margin
    layout = np.stack([x, x], axis=1)
    out = normalize_layout(layout, (1.0, 99.0), 0.1)
    assert out[-1, 0] == 1.0 and out[-2, 0] < 1.0  # the 1.05 point kept its own position
    no_margin = normalize_layout(layout, (1.0, 99.0), 0.0)
    assert no_margin[-2, 0] == 1.0  # without a margin it would be clipped together with 1.0


def test_axis_without_spread_maps_to_the_middle() -> None:
    layout = np.stack([np.linspace(-1, 1, 50), np.full(50, 3.0)], axis=1)
    out = normalize_layout(layout)
    assert np.all(out[:, 1] == 0.5)
    assert out[:, 0].min() == 0.0 and out[:, 0].max() == 1.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        normalize_layout(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="clip_percentiles"):
        normalize_layout(np.zeros((5, 2)), (99.0, 1.0))


def test_trustworthiness_is_one_for_an_isometric_layout() -> None:
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(200, 2))
    assert layout_trustworthiness(pts, pts * 3.0, n_neighbors=5, metric="euclidean") == pytest.approx(1.0)
