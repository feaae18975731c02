"""The grid stage: every zoom level's cells, their directions and labels, and the whitening.

docs/method.md §4: each zoom level is a *separate* N x N binning of the same normalised
layout (production: N = 20, 40, 80, 160); a cell's direction is the plain mean of the raw
activations of its members; cells with count <= ``min_count`` (recipe: > 5 kept) are dropped.
Section 5: the whitening matrix ``S`` (:mod:`stages.grid.whitening`) is computed here, in the same
single pass over the activations, because that pass already reads every valid row.

Out of core: the binning needs only the 2-D layout (8 bytes a row); the activations are streamed
chunk by chunk in their stored float16 and cast to float32 per block, so memory is the
per-cell float64 totals of the kept cells (for 1M rows and 576 channels about 0.3 GB at all four
levels) plus two chunks, never the ``[n, C]`` matrix.

Mean attribution: the store keeps each sample's top-k attributed classes (indices + values,
docs/method.md §2), so the cell's class vector is the sum of its members' top-k entries
(other classes count as 0) divided by the count. That is a top-k approximation of the mean of
the full attribution vectors: exact for classes in every member's top-k, biased toward 0 for
classes that only some members rank, which are by construction not the cell's top classes
unless most members agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from stages.config import GridConfig
from stages.context import StageContext
from stages.grid import binning
from stages.grid.whitening import SecondMoment, absolute_ridge, whitening_matrix
from store import derived
from store.errors import AtlasError
from store.view import RowStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class GridResult:
    """Summary of one grid run (the cells are in the store, see :mod:`store.derived`)."""

    levels: list[int]
    cells: dict[int, int]
    rows: int
    rows_in_kept_cells: dict[int, int]
    whitening_rows: int
    whitening_ridge: float
    layout_id: str
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _LevelTotals:
    """Running sums of one level over the kept cells (index = position among the kept cells)."""

    n: int
    cell_of_row: NDArray[np.int32]  # [n_rows] kept-cell position of each store row, -1: none
    kept: NDArray[np.int64]  # flat ids of the kept cells, ascending
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]
    attribution: NDArray[np.float64]


def _check_levels(cfg: GridConfig) -> list[int]:
    levels = sorted(set(cfg.levels))
    if levels[0] < 1:
        raise AtlasError(f"grid.levels must be positive cells per side (got {cfg.levels})")
    if levels[-1] > 4096:
        raise AtlasError(f"grid.levels: {levels[-1]} cells per side is beyond any atlas (production max 320)")
    return levels


def _level_totals(
    n: int, layout: derived.Layout, n_rows: int, cfg: GridConfig, channels: int, n_classes: int
) -> _LevelTotals:
    """Bin the layout at one level and allocate the kept cells' accumulators."""
    ids = binning.flat_cell_ids(layout.layout, n)
    counts = np.bincount(ids, minlength=n * n)
    kept = binning.kept_cells(counts, cfg.min_count)
    position = np.full(n * n, -1, dtype=np.int32)
    position[kept] = np.arange(len(kept), dtype=np.int32)
    cell_of_row = np.full(n_rows, -1, dtype=np.int32)
    cell_of_row[layout.rows] = position[ids]
    return _LevelTotals(
        n=n,
        cell_of_row=cell_of_row,
        kept=kept,
        counts=counts[kept].astype(np.int64),
        sums=np.zeros((len(kept), channels), np.float64),
        attribution=np.zeros((len(kept), n_classes), np.float64),
    )


def _accumulate(
    store: RowStore, valid: NDArray[np.bool_], totals: list[_LevelTotals], n_classes: int, progress: Progress | None
) -> SecondMoment:
    """The one pass over the activations: cell sums at every level plus the second moment."""
    moment = SecondMoment(store.channels)
    attr_idx, attr_val = store.attribution_topk()
    arrays = [store.activations()] + ([attr_idx, attr_val] if n_classes else [])
    for block in derived.iter_row_blocks(arrays, progress):
        keep = valid[block.start : block.stop]
        x = block.arrays[0][keep].astype(np.float64)  # once per block; float16 sums overflow
        moment.add(x)
        idx = val = None
        if n_classes:
            idx, val = block.arrays[1][keep], block.arrays[2][keep]
            if idx.size and idx.max() >= n_classes:
                raise AtlasError(
                    f"store {getattr(store, 'path', '')}: attribution class {int(idx.max())} is beyond "
                    f"the {n_classes} class names; the store is damaged, collect again"
                )
        for level in totals:
            cells = level.cell_of_row[block.start : block.stop][keep]
            member = cells >= 0
            binning.add_cell_sums(level.sums, cells[member], x[member])
            if idx is not None and val is not None:
                binning.add_attribution_sums(level.attribution, cells[member], idx[member], val[member])
    return moment


def _finish_level(
    level: _LevelTotals, layout: derived.Layout, cfg: GridConfig, class_names: list[str]
) -> derived.CellLevel:
    """Means, top classes and member lists of one level's kept cells."""
    count = level.counts.astype(np.float64)[:, None]
    direction = (level.sums / np.maximum(count, 1)).astype(np.float32)
    attribution = (level.attribution / np.maximum(count, 1)).astype(np.float32)
    top_idx, top_val = (
        binning.top_classes(attribution, cfg.top_classes)
        if attribution.shape[1]
        else (np.zeros((len(level.kept), 0), np.int32), np.zeros((len(level.kept), 0), np.float32))
    )
    # Only a class that pushes the logit up labels a cell; pad with -1 (value 0) past the last one.
    top_idx = np.where(top_val > 0.0, top_idx, -1).astype(np.int32)
    top_val = np.where(top_val > 0.0, top_val, 0.0).astype(np.float32)
    ids = level.cell_of_row[layout.rows]
    members = binning.cell_members(ids[ids >= 0], layout.rows[ids >= 0], np.arange(len(level.kept)))
    n = level.n
    return derived.CellLevel(
        n=n,
        i=(level.kept % n).astype(np.int32),
        j=(level.kept // n).astype(np.int32),
        count=level.counts,
        direction=direction,
        attribution=attribution,
        top_idx=top_idx,
        top_val=top_val,
        member_offsets=members.offsets,
        member_rows=members.rows,
        class_names=class_names,
        attrs={
            "min_count": cfg.min_count,
            "n_rows_kept": int(level.counts.sum()),
            "n_rows_dropped": int(len(layout.rows) - level.counts.sum()),
        },
    )


def level_in_memory(
    layout: NDArray[np.floating],
    activations: NDArray[np.floating],
    attribution: NDArray[np.floating] | None,
    n: int,
    cfg: GridConfig,
    class_names: list[str],
) -> derived.CellLevel:
    """One level of in-memory arrays (rows ``0..len-1``): the stage's binning, cell means and labels.

    For the notebook API (:func:`pipeline.api.activation_atlas`), with nothing read or written:
    ``layout`` is ``[rows, 2]`` in [0, 1]^2, ``activations`` ``[rows, C]``, ``attribution`` a dense
    ``[rows, classes]`` matrix or ``None`` (no labels). The kept cells, their directions (mean raw
    activation), top classes and member lists come from the same code as :func:`run`; with a dense
    attribution matrix the cell mean is exact rather than the stage's top-k approximation.
    """
    x = np.asarray(activations)
    rows = np.arange(len(x), dtype=np.int64)
    points = np.asarray(layout, dtype=np.float32)
    lay = derived.Layout(rows=rows, layout=points, embedding=points, fitted=np.ones(len(rows), bool))
    n_classes = 0 if attribution is None else int(np.asarray(attribution).shape[1])
    totals = _level_totals(n, lay, len(rows), cfg, x.shape[1], n_classes)
    member = totals.cell_of_row >= 0
    cells = totals.cell_of_row[member]
    binning.add_cell_sums(totals.sums, cells, x[member])
    if attribution is not None:
        binning.add_cell_sums(totals.attribution, cells, np.asarray(attribution)[member])
    return _finish_level(totals, lay, cfg, class_names)


def _write(
    store: RowStore,
    whitening: derived.Whitening,
    cell_levels: list[derived.CellLevel],
    layout: derived.Layout,
    cfg: GridConfig,
) -> None:
    """The whitening and the grid, in that order (see :func:`run`), and a log line per level."""
    derived.write_whitening(store, whitening)
    derived.write_grid(
        store,
        cell_levels,
        attrs={
            "layout_id": layout.layout_id,
            "params": cfg.model_dump(mode="json"),
            "mean_attribution": "top-k approximation: classes outside a member's top-k count as 0",
        },
    )
    for lv in cell_levels:
        log.info(
            "level %d: %d cells kept (count > %d) holding %d of %d rows",
            lv.n,
            len(lv),
            cfg.min_count,
            lv.info.n_rows_kept,
            len(layout.rows),
        )


def run(cfg: GridConfig, ctx: StageContext) -> GridResult:
    """Bin ``ctx.store``'s layout at every ``grid.levels`` level and write cells + whitening.

    ``ctx.whitening`` replaces the one computed from the store's own rows (a class atlas whitens with
    the whole store's): it is written in the same step, so an interrupted run never leaves a
    complete-looking whitening that a rerun would replace.
    """
    store, progress, whitening = ctx.require_store("grid"), ctx.done_of_total(), ctx.whitening
    where = str(getattr(store, "path", "(in memory)"))
    t0 = time.perf_counter()
    levels = _check_levels(cfg)
    layout = derived.read_layout(store)
    valid = np.asarray(store.valid_mask(), dtype=bool)
    if len(layout.rows) != int(valid.sum()) or not valid[layout.rows].all():
        raise AtlasError(
            f"store {where} has {int(valid.sum())} valid rows but its layout covers {len(layout.rows)}; "
            "run `atlas reduce` again"
        )
    class_names = list(store.class_names)
    n_classes = len(class_names)
    totals = [_level_totals(n, layout, store.n_rows, cfg, store.channels, n_classes) for n in levels]
    seconds = {"bin": time.perf_counter() - t0}

    t = time.perf_counter()
    moment = _accumulate(store, valid, totals, n_classes, progress)
    seconds["pass"] = time.perf_counter() - t

    t = time.perf_counter()
    cell_levels = [_finish_level(level, layout, cfg, class_names) for level in totals]
    second_moment = moment.moment()
    s = whitening_matrix(second_moment, cfg.ridge)
    ridge_abs = absolute_ridge(second_moment, cfg.ridge)
    seconds["finish"] = time.perf_counter() - t

    t = time.perf_counter()
    own = derived.Whitening(
        matrix=s,
        second_moment=second_moment,
        attrs={"ridge": cfg.ridge, "absolute_ridge": ridge_abs, "n": moment.n, "layout_id": layout.layout_id},
    )
    _write(store, whitening or own, cell_levels, layout, cfg)
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    log.info("grid done in %.1f s: %s", seconds["total"], {k: round(v, 1) for k, v in seconds.items()})
    return GridResult(
        levels=levels,
        cells={lv.n: len(lv) for lv in cell_levels},
        rows=int(len(layout.rows)),
        rows_in_kept_cells={lv.n: int(lv.info.n_rows_kept or 0) for lv in cell_levels},
        whitening_rows=moment.n,
        whitening_ridge=ridge_abs,
        layout_id=layout.layout_id,
        seconds=seconds,
    )
