"""Candidate patches read off a comparison atlas: the cells farthest toward class B, not chosen by hand.

A comparison atlas of classes ``a`` and ``b`` (stages/classes/compare.py) lays every row out with
``x = clip((attr_a - attr_b) / p99, -1, 1)`` (a's side positive). A cell's position on that axis is
the mean ``x`` of its member rows; toward B means ``-x`` when B is the atlas's ``b`` (drawn right) and
``+x`` when B is its ``a``. The ``cells`` cells with the largest positive "toward B" give the
candidates: each cell's best ``examples`` dataset-example crops (its members nearest its direction,
one per photo: stages/tiles/dataset_examples.py, cut at ``crop_px``) and its rendered icon. Cells with
"toward B" <= 0 (neutral or A's side) supply the random-cell controls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from stages.classes.compare import compare_folder
from stages.classes.select import class_slug
from stages.patches.photos import same_file
from stages.patches.protocol import Patch
from stages.tiles.dataset_examples import RowGeometry, cell_examples, row_thumbnails
from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.icons import IconStore
from store.subset import SubsetStore

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """One comparison atlas seen from the direction "photos of A, patches toward B"."""

    slug: str  # lemon--orange (the atlas's own order)
    atlas_id: str  # compare/lemon--orange
    subset: SubsetStore
    level: derived.CellLevel
    icons: NDArray[np.uint8] | None  # [cells, px, px, 3]
    toward_b: NDArray[np.float64]  # [cells] mean axis position, + = toward B, in [-1, 1]
    names: list[list[str]]  # each cell's top attributed classes


def open_comparison(store: AtlasStore, a: int, b: int, pairs: Sequence[Sequence[str | int]]) -> Comparison:
    """The comparison atlas of ``a`` and ``b`` (either order); a one-line error when it was not built."""
    names = store.class_names
    for first, second in ((a, b), (b, a)):
        slug = f"{class_slug(first, names)}--{class_slug(second, names)}"
        try:
            subset = SubsetStore.open(store, slug, base=compare_folder(store))
        except AtlasError:
            continue
        levels = derived.grid_levels(subset) if derived.has_layout(subset) else []
        if not levels:
            continue
        level = derived.read_level(subset, levels[0], with_attribution=False)
        layout = derived.read_layout(subset)
        pos = np.searchsorted(layout.rows, level.member_rows)
        x = layout.embedding[np.clip(pos, 0, len(layout.rows) - 1), 0].astype(np.float64)
        counts = np.diff(level.member_offsets)
        sums = np.add.reduceat(x, level.member_offsets[:-1]) if len(x) else np.zeros(len(level))
        signed = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        icons = None
        path = subset.derived_path("icons")
        if IconStore.exists(path):
            icon_store = IconStore.open(path)
            if level.n in icon_store.levels and icon_store.complete(level.n):
                icons = icon_store.read_level(level.n).icons
        if icons is None:
            raise AtlasError(f"comparison atlas {slug}: its icons are not rendered; run `atlas compare` to finish it")
        toward = -signed if first == a else signed  # the atlas's a side is positive
        return Comparison(
            slug=slug,
            atlas_id=f"compare/{slug}",
            subset=subset,
            level=level,
            icons=icons,
            toward_b=toward,
            names=level.top_names(),
        )
    listed = ", ".join(f"[{p[0]}, {p[1]}]" for p in pairs) or "none"
    raise AtlasError(
        f"no comparison atlas of {names[a]!r} and {names[b]!r} in {compare_folder(store)} "
        f"(compare.pairs: {listed}); build it with atlas compare --set 'compare.pairs=[[{names[a]}, {names[b]}]]'"
    )


def _crops(comp: Comparison, cell: int, k: int, px: int, field: float) -> list[tuple[NDArray[np.float32], str, int]]:
    """Up to ``k`` dataset-example crops of ``cell`` (best first): (image, source photo, store row)."""
    rows = cell_examples(comp.subset, comp.level, cell, k)
    paths = comp.subset.image_paths()
    geo = RowGeometry.from_store(comp.subset)
    out = []
    for row, thumb in zip(rows.tolist(), row_thumbnails(comp.subset, rows, px, field)):
        if thumb is not None:
            src = same_file(str(paths[geo.image_and_view(int(row))[0]]))
            out.append((np.asarray(thumb.convert("RGB"), np.float32) / 255.0, src, int(row)))
    return out


def candidate_cells(comp: Comparison, count: int) -> list[int]:
    """The ``count`` cells farthest toward B (positive only), farthest first."""
    order = np.argsort(-comp.toward_b, kind="stable")
    return [int(c) for c in order if comp.toward_b[c] > 0][:count]


def candidates(comp: Comparison, cells: int, examples: int, px: int, field: float) -> list[Patch]:
    """Each candidate cell's dataset crops and icon."""
    out: list[Patch] = []
    for c in candidate_cells(comp, cells):
        what = {
            "toward_b": float(comp.toward_b[c]),
            "count": int(comp.level.count[c]),
            "top_classes": comp.names[c][:3],
        }
        for rank, (img, src, row) in enumerate(_crops(comp, c, examples, px, field)):
            out.append(
                Patch(
                    f"cell {c} crop {rank + 1}",
                    "dataset",
                    img,
                    cell=c,
                    source=src,
                    meta={**what, "row": row, "photo": src},
                )
            )
        assert comp.icons is not None
        out.append(Patch(f"cell {c} icon", "icon", comp.icons[c].astype(np.float32) / 255.0, cell=c, meta=what))
    return out


def random_cell_controls(comp: Comparison, count: int, px: int, field: float, seed: int) -> list[Patch]:
    """Dataset crops of randomly chosen cells not on B's side ("toward B" <= 0), one crop per cell; a few
    spare cells so that crops cut from a test photo can be left out."""
    pool = np.flatnonzero(comp.toward_b <= 0)
    if len(pool) == 0:
        log.warning("%s: every cell leans toward B; no random-cell control", comp.atlas_id)
        return []
    order = np.random.default_rng(seed).permutation(pool)[: count + 4]
    out = []
    for c in order.tolist():
        crops = _crops(comp, c, 1, px, field)
        if crops:
            img, src, row = crops[0]
            out.append(
                Patch(
                    f"random cell {c}",
                    "random_cell",
                    img,
                    cell=c,
                    source=src,
                    meta={
                        "toward_b": float(comp.toward_b[c]),
                        "row": row,
                        "photo": src,
                        "top_classes": comp.names[c][:3],
                    },
                )
            )
    return out


def atlas_export(atlas_folder: str | Path, comp: Comparison) -> Path | None:
    """The comparison atlas's exported folder, if the viewer has it."""
    p = Path(atlas_folder) / comp.atlas_id
    return p if (p / "manifest.json").exists() else None
