"""How much two aligned atlases agree, per cell and per level (pure math on arrays).

Two measures, both on the aligned rows (row r of both sides: the same image location):

- **kNN overlap** of a row: of its ``k`` nearest neighbours among the aligned rows in side a's
  activation space (cosine) and its ``k`` nearest in side b's, the fraction that are the same
  rows. 1: both layers see the same locations as similar; chance is ``k / (n - 1)``. A cell's
  value is the mean over its members: how many of a cell's members are also neighbours in the
  other model.
- **same cell**: the fraction of a cell's members whose location, laid out by the *other* side,
  falls in the same grid cell (the shared layout puts both row groups in one frame).

Per level the summary also compares the labels of the cells the two sides both keep at the same
grid position: the share whose top attributed class is the same, and whose top-5 classes meet.

And per side, how far its labels can be trusted at all (the **label ceiling**, ``atlas fidelity``'s
ceiling, :func:`stages.render.fidelity.members_overlap`): a cell's label is its members' mean
attribution ``h . d logit / d h`` at one position, and it "meets" when its top-5 attributed classes
include one of the 5 classes the side's own model most often predicts (top-1) for the cell's members.
Two sides' labels can only agree as far as each side's labels track its own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.grid import binning
from store.derived import CellLevel


def knn_indices(x: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """[n, k] indices of each row's k nearest other rows by cosine (faiss exact inner product on unit rows)."""
    import faiss

    v = np.ascontiguousarray(np.asarray(x, np.float32))
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.ascontiguousarray(v / np.where(norms > 0, norms, 1.0), dtype=np.float32)
    k = min(k, len(v) - 1)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    _, found = index.search(v, k + 1)
    out = np.empty((len(v), k), np.int64)
    for r in range(len(v)):  # drop the row itself (not always first when rows repeat)
        others = found[r][found[r] != r]
        out[r] = others[:k]
    return out


def knn_overlap(neighbours_a: NDArray[np.integer], neighbours_b: NDArray[np.integer]) -> NDArray[np.float32]:
    """[n] fraction of shared neighbours per row (both [n, k])."""
    k = neighbours_a.shape[1]
    shared = (neighbours_a[:, :, None] == neighbours_b[:, None, :]).any(axis=2).sum(axis=1)
    return (shared / max(1, k)).astype(np.float32)


@dataclass(frozen=True)
class CellAgreement:
    """Per kept cell of one side at one level (the grid's cell order)."""

    knn: NDArray[np.float32]  # mean kNN overlap of the members
    same_cell: NDArray[np.float32]  # share of members the other side places in the same cell
    partner: NDArray[np.int64]  # the other side's kept cell at the same (i, j), -1 none


def _cell_numbers(level: CellLevel) -> dict[int, int]:
    """flat id (j * n + i) -> kept cell number."""
    return {int(j) * level.n + int(i): c for c, (i, j) in enumerate(zip(level.i.tolist(), level.j.tolist()))}


def cell_agreement(
    level: CellLevel, other: CellLevel, row_knn: NDArray[np.floating], other_cell_of_row: NDArray[np.integer]
) -> CellAgreement:
    """Agreement of every kept cell of ``level`` with ``other`` (the other side at the same level).

    ``row_knn`` and ``other_cell_of_row`` are indexed by store row id: the kNN overlap of the row,
    and the flat cell id (j * n + i) the other side's layout puts it in (-1: not laid out).
    """
    partners = _cell_numbers(other)
    knn = np.zeros(len(level), np.float32)
    same = np.zeros(len(level), np.float32)
    partner = np.full(len(level), -1, np.int64)
    for c in range(len(level)):
        members = level.members(c)
        flat = int(level.j[c]) * level.n + int(level.i[c])
        knn[c] = float(np.mean(row_knn[members])) if len(members) else np.nan
        same[c] = float(np.mean(other_cell_of_row[members] == flat)) if len(members) else np.nan
        partner[c] = partners.get(flat, -1)
    return CellAgreement(knn=knn, same_cell=same, partner=partner)


def cell_of_rows(layout: NDArray[np.floating], rows: NDArray[np.integer], n: int, n_rows: int) -> NDArray[np.int64]:
    """[n_rows] flat cell id (j * n + i) of each laid-out store row at an n x n level, -1 elsewhere."""
    out = np.full(n_rows, -1, np.int64)
    out[np.asarray(rows, np.int64)] = binning.flat_cell_ids(np.asarray(layout), n)
    return out


def label_meets(level: CellLevel, row_top1: NDArray[np.integer]) -> NDArray[np.float32]:
    """Per kept cell: 1 when its top-5 attributed classes meet its members' 5 most predicted classes, else 0;
    NaN for a cell without a positively attributed class (no label to judge).

    ``row_top1[r]`` is the side's own top-1 prediction for store row ``r`` (its ``top_pred_idx[:, 0]``).
    """
    from stages.render.fidelity import TOP, members_overlap

    meets = members_overlap(level, np.asarray(row_top1)).astype(np.float32)
    labelled = (level.top_idx[:, :TOP] >= 0).any(axis=1) if level.top_idx.size else np.zeros(len(level), bool)
    return np.where(labelled, meets, np.nan).astype(np.float32)


def ceiling(meets: NDArray[np.floating]) -> dict[str, Any]:
    """``{"cells": labelled cells, "meet": how many meet, "fraction": meet / cells}`` of :func:`label_meets` values."""
    ok = np.isfinite(meets)
    n, hit = int(ok.sum()), int(np.sum(meets[ok] > 0.5))
    return {"cells": n, "meet": hit, "fraction": hit / n if n else float("nan")}


def _top(level: CellLevel, c: int, k: int) -> list[int]:
    return [int(v) for v in level.top_idx[c][:k].tolist() if v >= 0]


def level_summary(
    a: CellLevel, b: CellLevel, agree_a: CellAgreement, agree_b: CellAgreement, same_classes: bool = True
) -> dict[str, Any]:
    """One level's figures: cells, matched positions, member-weighted kNN overlap and same-cell share, labels.

    ``same_classes`` False (the two models label different class sets): no label comparison.
    """
    matched = [(c, int(p)) for c, p in enumerate(agree_a.partner.tolist()) if p >= 0]
    labelled = [(c, p) for c, p in matched if same_classes and _top(a, c, 1) and _top(b, p, 1)]
    top1 = sum(_top(a, c, 1) == _top(b, p, 1) for c, p in labelled)
    top5 = sum(bool(set(_top(a, c, 5)) & set(_top(b, p, 5))) for c, p in labelled)

    def weighted(values: NDArray[np.floating], level: CellLevel) -> float:
        w = level.count.astype(np.float64)
        ok = np.isfinite(values)
        return float(np.sum(values[ok] * w[ok]) / np.sum(w[ok])) if ok.any() and np.sum(w[ok]) > 0 else float("nan")

    return {
        "n": a.n,
        "cells_a": len(a),
        "cells_b": len(b),
        "matched": len(matched),
        "knn_overlap_a": weighted(agree_a.knn, a),
        "knn_overlap_b": weighted(agree_b.knn, b),
        "same_cell_a": weighted(agree_a.same_cell, a),
        "same_cell_b": weighted(agree_b.same_cell, b),
        "labelled_pairs": len(labelled),
        "top1_agree": top1 / len(labelled) if labelled else float("nan"),
        "top5_overlap": top5 / len(labelled) if labelled else float("nan"),
    }
