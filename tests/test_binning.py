"""stages/grid/binning.py: half-open cells, min_count, cell sums, top-k attribution, member lists."""

from __future__ import annotations

import numpy as np
import pytest

from stages.grid import binning


def test_boundaries_zero_one_and_internal_edges() -> None:
    n = 4
    layout = np.array(
        [
            [0.0, 0.0],  # the origin: first cell
            [1.0, 1.0],  # exactly 1.0: the last cell is closed
            [0.25, 0.5],  # on internal edges: the cell to the right / above
            [np.nextafter(0.25, 0.0), 0.75],  # a hair below an edge: the cell to the left
            [1.0, 0.0],
            [0.999999, np.float32(0.75)],
        ]
    )
    i, j = binning.cell_indices(layout, n)
    np.testing.assert_array_equal(i, [0, 3, 1, 0, 3, 3])
    np.testing.assert_array_equal(j, [0, 3, 2, 3, 0, 3])
    np.testing.assert_array_equal(binning.flat_cell_ids(layout, n), j * n + i)


@pytest.mark.parametrize("n", [1, 3, 7, 20, 160])
def test_points_on_every_edge_land_in_exactly_one_cell(n: int) -> None:
    edges = np.arange(n + 1) / n
    xx, yy = np.meshgrid(edges, edges)
    layout = np.stack([xx.ravel(), yy.ravel()], axis=1)
    i, j = binning.cell_indices(layout, n)
    expected = np.minimum(np.arange(n + 1), n - 1)
    np.testing.assert_array_equal(i.reshape(n + 1, n + 1)[0], expected)
    np.testing.assert_array_equal(j.reshape(n + 1, n + 1)[:, 0], expected)
    counts = np.bincount(binning.flat_cell_ids(layout, n), minlength=n * n)
    assert counts.sum() == len(layout)  # nothing counted twice, nothing lost


def test_float32_layout_near_one_stays_in_range() -> None:
    layout = np.array([[np.float32(1.0) - np.float32(6e-8)] * 2, [1.0, 1.0]], dtype=np.float32)
    i, j = binning.cell_indices(layout, 160)
    assert i.max() == 159 and j.max() == 159


def test_out_of_range_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="normalise"):
        binning.cell_indices(np.array([[0.5, 1.01]]), 10)
    with pytest.raises(ValueError, match="normalise"):
        binning.cell_indices(np.array([[np.nan, 0.5]]), 10)


def test_empty_cells_and_min_count() -> None:
    # 2 x 2 grid: 7 points in (0, 0), 6 in (1, 1), 1 in (1, 0), none in (0, 1).
    layout = np.array([[0.1, 0.1]] * 7 + [[0.9, 0.9]] * 6 + [[0.9, 0.1]])
    ids = binning.flat_cell_ids(layout, 2)
    counts = np.bincount(ids, minlength=4)
    np.testing.assert_array_equal(counts, [7, 1, 0, 6])
    np.testing.assert_array_equal(binning.kept_cells(counts, 5), [0, 3])  # count > 5
    np.testing.assert_array_equal(binning.kept_cells(counts, 6), [0])  # 6 is not > 6
    np.testing.assert_array_equal(binning.kept_cells(counts, 0), [0, 1, 3])  # empty cell never kept


def test_cell_sums_equal_direct_numpy_including_chunked_float16() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 9, size=500)
    values = (rng.random((500, 16)) * 200).astype(np.float16)  # sums overflow float16 (max 65504)
    direct = np.stack([values[ids == c].astype(np.float64).sum(0) for c in range(9)])
    np.testing.assert_allclose(binning.cell_sums(ids, values, 9), direct, rtol=1e-12)
    totals = np.zeros((9, 16))
    for start in range(0, 500, 64):
        binning.add_cell_sums(totals, ids[start : start + 64], values[start : start + 64])
    np.testing.assert_allclose(totals, direct, rtol=1e-12)
    means = totals / np.bincount(ids, minlength=9)[:, None]
    np.testing.assert_allclose(means[4], values[ids == 4].astype(np.float64).mean(0), rtol=1e-12)


def test_mean_attribution_from_topk_equals_dense_computation() -> None:
    rng = np.random.default_rng(1)
    n, k, classes, cells = 300, 4, 12, 5
    dense = np.zeros((n, classes))
    idx = np.full((n, k), -1, dtype=np.int32)
    val = np.zeros((n, k), dtype=np.float16)
    for r in range(n):
        m = rng.integers(0, k + 1)  # some rows have fewer than k classes (-1 = none)
        idx[r, :m] = rng.choice(classes, m, replace=False)
        val[r, :m] = rng.normal(size=m)
        dense[r, idx[r, :m]] = val[r, :m].astype(np.float64)
    ids = rng.integers(0, cells, size=n)
    totals = np.zeros((cells, classes))
    for start in range(0, n, 50):
        sl = slice(start, start + 50)
        binning.add_attribution_sums(totals, ids[sl], idx[sl], val[sl])
    counts = np.bincount(ids, minlength=cells)[:, None]
    expected = np.stack([dense[ids == c].sum(0) for c in range(cells)]) / counts
    np.testing.assert_allclose(totals / counts, expected, rtol=1e-12, atol=1e-12)


def test_attribution_index_beyond_classes_is_refused() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        binning.add_attribution_sums(np.zeros((1, 3)), np.array([0]), np.array([[3]]), np.array([[1.0]]))


def test_top_classes_largest_first_ties_by_lower_index() -> None:
    mean = np.array([[0.1, 0.5, 0.5, -1.0, 0.3], [0.0, 0.0, 2.0, 0.0, 1.0]])
    idx, val = binning.top_classes(mean, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 4], [2, 4, 0]])
    np.testing.assert_allclose(val, [[0.5, 0.5, 0.3], [2.0, 1.0, 0.0]])


def test_members_are_csr_lists_of_kept_cells_in_row_order() -> None:
    ids = np.array([2, 0, 2, 5, 0, 2, 7])
    rows = np.array([60, 50, 40, 30, 20, 10, 0])
    members = binning.cell_members(ids, rows, np.array([0, 2, 7]))
    np.testing.assert_array_equal(members.offsets, [0, 2, 5, 6])
    np.testing.assert_array_equal(members.rows, [20, 50, 10, 40, 60, 0])
    empty = binning.cell_members(ids, rows, np.array([], dtype=np.int64))
    assert empty.offsets.tolist() == [0] and empty.rows.size == 0
