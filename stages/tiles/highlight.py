"""Per-cell values behind the viewer's class highlight (docs/export_format.md, docs/viewer.md).

The viewer tints every cell of the level on screen by one chosen quantity, as the class filter of
the Distill article's atlas interface does over the whole atlas (Carter et al. 2019, "Activation
Atlas", section "Focusing on a single classification"). Two kinds of quantity are exported:

* a model class ``c``: the cell's mean attribution to ``c``, the grid stage's ``attribution[K,
  classes]`` (the members' mean of their stored top-k attributions, stages/grid/stage.py). A cell
  supports ``c`` when that mean is > 0, i.e. some member ranks ``c`` among its top-k with a
  positive value; the others are dimmed.
* a data-set label ``l`` (an ImageFolder folder name): the share of the cell's members that
  come from photos labelled ``l``. Most folder names of a photo collection are not model classes
  (the demo's ``beach``, ``aerial_view``), so this says where those photos landed.

Both are stored sparsely, one small file per (level, class) or (level, label) that has support,
so picking a class loads a few KB for the level shown, never the dense ``[K, 1000]`` matrix.
Pure functions here; :mod:`stages.tiles.export` writes the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: significant digits of an exported value (the colour scale has far fewer levels)
DIGITS = 4


@dataclass(frozen=True)
class SparseColumn:
    """The cells (ascending kept-cell numbers) with a positive value of one quantity, and the values."""

    cells: NDArray[np.int64]
    values: NDArray[np.float64]

    def record(self) -> dict[str, object]:
        """The JSON form: ``{"cells": [...], "values": [...], "max": ...}`` (values rounded, > 0)."""
        values = [_round(v) for v in self.values.tolist()]
        return {"cells": self.cells.tolist(), "values": values, "max": max(values) if values else 0.0}


def _round(value: float) -> float:
    return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else 0.0


def split_columns(matrix: NDArray[np.floating]) -> dict[int, SparseColumn]:
    """Column ``c`` of a ``[cells, columns]`` matrix as its positive entries, for every column with one.

    One ``nonzero`` over the transposed matrix gives the entries sorted by column then cell, so
    each column is a contiguous slice (no per-column scan of the whole matrix).
    """
    positive = np.asarray(matrix) > 0
    cols, cells = np.nonzero(positive.T)
    values = np.asarray(matrix).T[cols, cells].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]]) if len(cols) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(cols)]
    return {int(cols[s]): SparseColumn(cells[s:e].astype(np.int64), values[s:e]) for s, e in zip(starts, ends)}


def label_shares(
    member_offsets: NDArray[np.integer], member_rows: NDArray[np.integer], row_labels: NDArray[np.integer]
) -> dict[int, SparseColumn]:
    """Per data-set label, the share of each cell's members whose photo carries that label.

    ``member_offsets`` / ``member_rows`` are the grid's CSR member lists (store row ids),
    ``row_labels`` the label of every store row (-1: unknown, counted in the denominator only, so
    the shares of a cell sum to its labelled fraction).
    """
    offsets = np.asarray(member_offsets, np.int64)
    counts = np.diff(offsets)
    cell_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    labels = np.asarray(row_labels)[np.asarray(member_rows, np.int64)].astype(np.int64)
    known = labels >= 0
    if not known.any():
        return {}
    n_labels = int(labels[known].max()) + 1
    pairs, hits = np.unique(labels[known] * len(counts) + cell_of[known], return_counts=True)
    label, cell = np.divmod(pairs, len(counts))  # sorted by label, then cell
    share = hits / counts[cell]
    out = {}
    for k in range(n_labels):
        lo, hi = np.searchsorted(label, [k, k + 1])
        if hi > lo:
            out[k] = SparseColumn(cell[lo:hi], share[lo:hi].astype(np.float64))
    return out
