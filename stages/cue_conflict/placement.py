"""Put new activations on an existing atlas: the reduce stage's own placement, then the grid's cells.

The reduce stage fits its 2-D map on a seeded subset of rows (the *fitted* rows) and places every
other row at the position of its single nearest fitted row, in the same feature space
(:class:`stages.reduce.reducers.FeatureMap`: unit rows, PCA to ``pca_dims``, unit rows again for
the cosine metric). A new activation vector is placed the same way: the feature map is refitted
on the fitted rows the layout records (the same rows, so the same map), the nearest fitted row is
found with the same faiss index, and the vector lands where that row lies, i.e. in the grid cell
that row is a member of at the chosen level (none when that cell was dropped for having too few
samples).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.config import ReduceConfig
from stages.reduce.reducers import FeatureMap, nearest_fitted
from stages.reduce.stage import read_fit_rows
from store import derived
from store.view import RowStore

log = logging.getLogger(__name__)


@dataclass
class AtlasPlacer:
    """What it takes to put an activation vector into a cell of one grid level."""

    features: FeatureMap
    index: Any  # faiss index over the fitted rows' features
    fitted_rows: NDArray[np.int64]  # store row id of every fitted row, in index order
    layout_xy: NDArray[np.float32]  # [fitted, 2] their normalised layout positions
    cell_of_row: NDArray[np.int64]  # [store rows] the kept cell of each row at ``level``, -1 none
    level: derived.CellLevel

    def nearest_rows(self, activations: NDArray[np.floating]) -> NDArray[np.int64]:
        """Index (into the fitted rows) of each activation vector's nearest fitted row."""
        x = np.ascontiguousarray(self.features.transform(np.asarray(activations, np.float32)), np.float32)
        _, nearest = self.index.search(x, 1)
        return nearest[:, 0].astype(np.int64)

    def cells(self, activations: NDArray[np.floating]) -> NDArray[np.int64]:
        """The cell of ``level`` each ``[P, C]`` activation vector lands in (-1: a dropped cell)."""
        return self.cell_of_row[self.fitted_rows[self.nearest_rows(activations)]]


def cell_of_row(level: derived.CellLevel, n_rows: int) -> NDArray[np.int64]:
    """``[n_rows]``: the kept cell every store row is a member of at this level, -1 for none."""
    out = np.full(n_rows, -1, dtype=np.int64)
    sizes = np.diff(level.member_offsets)
    out[level.member_rows] = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    return out


def build_placer(store: RowStore, level_n: int) -> AtlasPlacer:
    """The placer of ``store``'s layout and grid level ``level_n`` (one-line errors from the store
    when the layout or the grid is missing or stale)."""
    layout = derived.read_layout(store)
    level = derived.read_level(store, level_n, with_attribution=False)
    cfg = ReduceConfig.model_validate(dict(layout.info.params))
    fitted = np.flatnonzero(layout.fitted)
    order = np.argsort(layout.rows[fitted], kind="stable")  # read_fit_rows wants ascending row ids
    rows = layout.rows[fitted][order]
    raw = read_fit_rows(store, rows)
    features = FeatureMap(metric=cfg.metric, dims=cfg.pca_dims).fit(raw)
    index = nearest_fitted(features.transform(raw), cfg)
    log.info(
        "placer: %d fitted rows, %d-d features, level %d (%d cells)", len(rows), features.out_dims, level_n, len(level)
    )
    return AtlasPlacer(
        features=features,
        index=index,
        fitted_rows=rows,
        layout_xy=layout.layout[fitted][order],
        cell_of_row=cell_of_row(level, store.n_rows),
        level=level,
    )
