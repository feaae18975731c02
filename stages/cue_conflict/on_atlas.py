"""Texture vs shape in the atlas's own terms: where do cue-conflict stimuli land, and what do those cells mean?

Every interior position of a stimulus's activation map at the atlas layer is placed on the atlas
(:mod:`stages.cue_conflict.placement`). The cell it lands in carries its members' top attributed
classes; walking them from the top, the first class that belongs to the stimulus's shape category
or to its texture category decides the position: *shape*, *texture*, or *neither* (none of the
cell's top classes is in either category), or *off* (its cell was dropped for too few samples).
Pure functions of cells, top classes and categories, so they test without a model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stages.cue_conflict.shape_bias import wilson_interval

OUTCOMES = ("shape", "texture", "neither", "off")


def position_outcomes(
    cells: NDArray[np.integer],
    top_idx: NDArray[np.integer],
    category_of_class: NDArray[np.integer],
    shape: int,
    texture: int,
    top: int,
) -> list[str]:
    """One outcome per position (see the module docstring); ``top``: how many of a cell's top classes count."""
    out = []
    for cell in np.asarray(cells).tolist():
        if cell < 0:
            out.append("off")
            continue
        verdict = "neither"
        for c in np.asarray(top_idx[cell][:top]).tolist():
            k = int(category_of_class[c]) if 0 <= c < len(category_of_class) else -1
            if k == shape or k == texture:
                verdict = "shape" if k == shape else "texture"
                break
        out.append(verdict)
    return out


@dataclass(frozen=True)
class AtlasShare:
    """Counts of position outcomes, and the shape share among the positions that were either."""

    counts: dict[str, int]

    @property
    def shape_share(self) -> float | None:
        n = self.counts["shape"] + self.counts["texture"]
        return self.counts["shape"] / n if n else None

    def as_dict(self) -> dict[str, object]:
        lo, hi = wilson_interval(self.counts["shape"], self.counts["shape"] + self.counts["texture"])
        return {**self.counts, "shape_share": self.shape_share, "interval95": [lo, hi]}


def share(outcomes: list[str]) -> AtlasShare:
    c = Counter(outcomes)
    return AtlasShare({k: int(c[k]) for k in OUTCOMES})


def stimulus_lean(outcomes: list[str]) -> str:
    """'shape' or 'texture' when more of a stimulus's positions are one than the other, else 'tie'."""
    c = Counter(outcomes)
    return "shape" if c["shape"] > c["texture"] else "texture" if c["texture"] > c["shape"] else "tie"


def cell_texture_share(
    cells: NDArray[np.integer], outcomes: list[str], n_cells: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per kept cell: positions that landed there (shape or texture ones), and their texture share (NaN: none)."""
    cells = np.asarray(cells)
    decided = np.array([o in ("shape", "texture") for o in outcomes], bool) & (cells >= 0)
    texture = np.array([o == "texture" for o in outcomes], bool) & decided
    n = np.bincount(cells[decided], minlength=n_cells).astype(np.int64)
    t = np.bincount(cells[texture], minlength=n_cells).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n, np.where(n > 0, t / np.maximum(n, 1), np.nan)
