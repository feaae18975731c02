"""stages/classes/axes.py: the comparison atlas's axes, checked by hand (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.classes.axes import comparison_layout, difference_scale, signed_axis, unit_x


def test_scale_is_the_percentile_of_the_absolute_difference() -> None:
    d = np.array([-4.0, 1.0, 2.0, 3.0, 0.0])
    # |d| sorted: 0 1 2 3 4; numpy's linear percentile 50 -> 2, 100 -> 4, 75 -> 3, 90 -> 3.6
    assert difference_scale(d, 50) == 2.0
    assert difference_scale(d, 100) == 4.0
    assert difference_scale(d, 75) == 3.0
    assert difference_scale(d, 90) == pytest.approx(3.6)
    with pytest.raises(ValueError):
        difference_scale(d, 0)


def test_signed_axis_divides_and_clips() -> None:
    a = np.array([5.0, 1.0, 0.0, 0.0, 2.0])
    b = np.array([1.0, 0.0, 0.0, 4.0, 1.0])
    # d = 4, 1, 0, -4, 1; |d| 4 1 0 4 1 -> 75th percentile = 4 (sorted 0 1 1 4 4: index 3 -> 4)
    x, scale = signed_axis(a, b, percentile=75)
    assert scale == 4.0
    np.testing.assert_allclose(x, [1.0, 0.25, 0.0, -1.0, 0.25])
    x, scale = signed_axis(a, b, percentile=50)  # median |d| = 1: 4 -> clipped to 1, -4 -> -1
    assert scale == 1.0
    np.testing.assert_allclose(x, [1.0, 1.0, 0.0, -1.0, 1.0])


def test_no_difference_is_the_neutral_line() -> None:
    x, scale = signed_axis(np.ones(3), np.ones(3))
    assert scale == 0.0 and x.tolist() == [0.0, 0.0, 0.0]
    assert unit_x(x).tolist() == [0.5, 0.5, 0.5]


def test_unit_x_puts_a_left_and_b_right() -> None:
    np.testing.assert_allclose(unit_x(np.array([1.0, 0.5, 0.0, -0.5, -1.0])), [0.0, 0.25, 0.5, 0.75, 1.0])


def test_comparison_layout_combines_both_axes() -> None:
    a = np.array([2.0, 0.0, 1.0, 0.0])
    b = np.array([0.0, 2.0, 1.0, 1.0])
    y = np.array([10.0, 20.0, 30.0, 40.0])
    layout, embedding, scale = comparison_layout(a, b, y, percentile=100, clip_percentiles=(0.0, 100.0), margin=0.0)
    assert scale == 2.0
    # d = 2, -2, 0, -1 -> x = 1, -1, 0, -0.5 -> unit 0, 1, 0.5, 0.75
    np.testing.assert_allclose(layout[:, 0], [0.0, 1.0, 0.5, 0.75])
    # y: no clipping, no margin -> min-max to [0, 1]
    np.testing.assert_allclose(layout[:, 1], [0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(embedding, [[1, 10], [-1, 20], [0, 30], [-0.5, 40]])
    with pytest.raises(ValueError):
        comparison_layout(a, b, y[:3])
