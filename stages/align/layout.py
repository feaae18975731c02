"""One layout for both sides: a single UMAP fit over both row groups, split in two.

lucid's ``aligned_umap`` (Carter et al. 2019, docs/method.md §11) concatenates the row groups,
fits one UMAP and normalises it, then splits the layout back into one part per group. The fit,
the placement of rows beyond ``reduce.fit_samples`` and the normalisation are the reduce stage's
own (:func:`stages.reduce.stage.layout_in_memory`), so both halves share one frame: cell (i, j)
covers the same region of the map on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stages.config import ReduceConfig
from stages.reduce import stage as reduce


@dataclass(frozen=True)
class SharedLayout:
    """Each side's normalised layout and raw embedding (row-aligned with the rows given), and how it was made."""

    layout_a: NDArray[np.float32]
    layout_b: NDArray[np.float32]
    embedding_a: NDArray[np.float32]
    embedding_b: NDArray[np.float32]
    fitted_a: NDArray[np.bool_]
    fitted_b: NDArray[np.bool_]
    metadata: dict  # how the shared layout was made (the reduce layout's record)


def split_groups(values: NDArray, sizes: tuple[int, int]) -> tuple[NDArray, NDArray]:
    """The first ``sizes[0]`` rows and the next ``sizes[1]`` rows of a stacked array (nothing left over)."""
    if len(values) != sizes[0] + sizes[1]:
        raise ValueError(f"{len(values)} rows cannot split into {sizes[0]} + {sizes[1]}")
    return values[: sizes[0]], values[sizes[0] :]


def shared_layout(rows_a: NDArray[np.floating], rows_b: NDArray[np.floating], cfg: ReduceConfig) -> SharedLayout:
    """Lay ``rows_a`` and ``rows_b`` (the same feature space, e.g. :func:`stages.align.maps.joint_rows`) out together."""
    stacked = np.concatenate([np.asarray(rows_a, np.float32), np.asarray(rows_b, np.float32)])
    made = reduce.layout_in_memory(stacked, cfg)
    sizes = (len(rows_a), len(rows_b))
    la, lb = split_groups(made.layout, sizes)
    ea, eb = split_groups(made.embedding, sizes)
    fa, fb = split_groups(made.fitted, sizes)
    return SharedLayout(
        layout_a=la, layout_b=lb, embedding_a=ea, embedding_b=eb, fitted_a=fa, fitted_b=fb, metadata=made.metadata()
    )
