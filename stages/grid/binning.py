"""Pure math of the grid: half-open cell binning and per-cell statistics.

docs/method.md §4 (lucid's ``bin_laid_out_activations``): an N x N grid over the
normalised layout; a cell's *direction* is the plain mean of the raw activations that fall in
it; cells with too few members are skipped (recipe: count > 5).

Conventions used by every stage after this one:

- cell ``(i, j)`` covers x (layout axis 0) in ``[i/N, (i+1)/N)`` and y (layout axis 1) in
  ``[j/N, (j+1)/N)``; the last cell of each axis is closed, so a point at exactly 1.0 lands in
  cell ``N - 1``. Every point falls in exactly one cell (one notebook used closed bins on both
  sides and counted edge points twice; we do not).
- Membership is decided by comparing the float64 value of the point with the float64 edges
  ``k / N`` (``np.searchsorted``), not by ``floor(x * N)``, whose rounding can disagree with the
  edge a point sits exactly on.
- The flat cell id is ``j * N + i`` (row-major with y as the row).

The accumulating helpers (``add_cell_sums``, ``add_attribution_sums``) work on one chunk of rows, so
the grid stage can stream activations that do not fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def cell_indices(layout: NDArray[np.floating], n: int) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Half-open cell coordinates ``(i, j)`` of each point of a layout in [0, 1]^2."""
    if n < 1:
        raise ValueError(f"cells per side must be >= 1 (got {n})")
    points = np.asarray(layout, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"layout must be [n, 2] (got shape {points.shape})")
    if points.size and (np.isnan(points).any() or points.min() < 0.0 or points.max() > 1.0):
        raise ValueError("layout must lie in [0, 1]^2 with no NaN; normalise it first (stages.reduce.layout_math)")
    edges = np.arange(n + 1, dtype=np.float64) / n
    # side="right" - 1: a point exactly on edge k belongs to cell k (the half-open rule) ...
    ij = np.searchsorted(edges, points, side="right") - 1
    # ... and the point at exactly 1.0 (edge n) to the last cell, which is closed.
    np.minimum(ij, n - 1, out=ij)
    return ij[:, 0].astype(np.int32), ij[:, 1].astype(np.int32)


def flat_cell_ids(layout: NDArray[np.floating], n: int) -> NDArray[np.int32]:
    """Flat cell id ``j * n + i`` of each point (see the module docstring)."""
    i, j = cell_indices(layout, n)
    return (j.astype(np.int64) * n + i).astype(np.int32)


def kept_cells(counts: NDArray[np.integer], min_count: int) -> NDArray[np.int64]:
    """Flat ids of the cells with ``count > min_count`` (recipe: > 5), ascending."""
    return np.flatnonzero(np.asarray(counts) > min_count)


def cell_sums(ids: NDArray[np.integer], values: NDArray[np.floating], n_cells: int) -> NDArray[np.float64]:
    """Per-cell sums of the rows of ``values`` (one chunk), dense ``[n_cells, C]`` float64."""
    values = np.asarray(values)
    out = np.zeros((n_cells, values.shape[1]), dtype=np.float64)
    add_cell_sums(out, ids, values)
    return out


def add_cell_sums(totals: NDArray[np.float64], ids: NDArray[np.integer], values: NDArray[np.floating]) -> None:
    """In-place ``totals[c] += sum of the rows of values in cell c`` for one chunk.

    One sparse (cells present x rows) indicator matrix times the chunk, in float64 (float16
    input would overflow if summed as is): ~3x faster than sorting the chunk by cell and
    ``np.add.reduceat``, and only the cells present in the chunk are touched.
    """
    import scipy.sparse

    ids = np.asarray(ids)
    if len(ids) == 0:
        return
    present, row_cell = np.unique(ids, return_inverse=True)
    indicator = scipy.sparse.csr_matrix(
        (np.ones(len(ids)), (row_cell.ravel(), np.arange(len(ids)))), shape=(len(present), len(ids))
    )
    totals[present] += indicator @ np.asarray(values, dtype=np.float64)


def add_attribution_sums(
    totals: NDArray[np.float64],
    ids: NDArray[np.integer],
    topk_idx: NDArray[np.integer],
    topk_val: NDArray[np.floating],
) -> None:
    """In-place dense per-cell class sums from top-k attributions (one chunk).

    ``totals`` is ``[n_cells, n_classes]``; ``topk_idx[r, m]`` is a class index (-1: none) and
    ``topk_val[r, m]`` its attribution. Classes outside a sample's top-k count as 0, so the cell
    mean is a top-k approximation of the mean full attribution vector: exact for the classes
    that rank in every member's top-k, a lower bound in magnitude for the others.
    """
    idx = np.asarray(topk_idx)
    if idx.size == 0:
        return
    n_classes = totals.shape[1]
    present = idx >= 0
    if (idx[present] >= n_classes).any():
        raise ValueError(f"attribution class index >= n_classes ({n_classes})")
    cells = np.broadcast_to(np.asarray(ids)[:, None], idx.shape)[present].astype(np.int64)
    flat = cells * n_classes + idx[present]
    vals = np.asarray(topk_val)[present].astype(np.float64)
    np.add.at(totals.reshape(-1), flat, vals)


def top_classes(mean_attribution: NDArray[np.floating], k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """The ``k`` classes with the largest mean attribution per cell, largest first.

    Ties are broken by the lower class index so the labels are stable run to run.
    """
    scores = np.asarray(mean_attribution, dtype=np.float64)
    k = min(k, scores.shape[1])
    # lexsort on (-score, class) would be exact but O(C log C) per row; a stable argsort of the
    # negated scores gives the same order (lower index first among equals).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    return order.astype(np.int32), values.astype(np.float32)


@dataclass(frozen=True)
class CellMembers:
    """CSR-style member lists of the kept cells of one level.

    Members of kept cell ``m`` are ``rows[offsets[m]:offsets[m + 1]]`` (ascending store row ids).
    """

    offsets: NDArray[np.int64]
    rows: NDArray[np.int64]


def cell_members(ids: NDArray[np.integer], row_ids: NDArray[np.integer], kept: NDArray[np.integer]) -> CellMembers:
    """Group ``row_ids`` by cell, keeping only the cells in ``kept`` (ascending flat ids)."""
    ids = np.asarray(ids, dtype=np.int64)
    row_ids = np.asarray(row_ids, dtype=np.int64)
    kept = np.asarray(kept, dtype=np.int64)
    # Sort by (cell, row) so every member list is ascending, whatever order the rows came in.
    order = np.lexsort((row_ids, ids))
    sorted_ids = ids[order]
    start = np.searchsorted(sorted_ids, kept, side="left")
    stop = np.searchsorted(sorted_ids, kept, side="right")
    lengths = stop - start
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    in_kept = np.zeros(len(ids), dtype=bool)
    if len(kept):
        pos = np.searchsorted(kept, sorted_ids)
        pos_clipped = np.minimum(pos, len(kept) - 1)
        in_kept = kept[pos_clipped] == sorted_ids
    return CellMembers(offsets=offsets, rows=row_ids[order][in_kept].astype(np.int64, copy=False))
