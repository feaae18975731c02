"""What an exported atlas is made from: :class:`AtlasSource`, independent of where it came from.

The main atlas reads the store's grid, icons and layout (:meth:`AtlasSource.from_store`).
Class-filtered and class-comparison atlases have their own grids, icons and layouts over rows of
the same store; they build an ``AtlasSource`` from those and export it with the same
:func:`stages.tiles.export.export_atlas`, so every atlas in the export folder has one format
(docs/export_format.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from store import derived
from store.errors import AtlasError
from store.icons import IconLevel, IconStore
from store.view import RowStore


@dataclass(frozen=True)
class MiniMap:
    """Layout points for the viewer's mini-map: x, y in [0, 1] (y down) and a class index each."""

    x: NDArray[np.float32]
    y: NDArray[np.float32]
    label: NDArray[np.int32]  # argmax-attribution class, -1 unknown


@dataclass
class AtlasSource:
    """One atlas to export.

    ``cell_level(n)`` / ``icon_level(n)`` load a level's cells and icons (row-aligned, the grid's
    cell order) only when that level is exported, so a big level is never held twice. ``store``
    (optional) is the store whose rows the cells' members are, used for dataset examples; ``None``
    exports no examples. A ``cell_level`` with ``attribution`` (the main atlas's) also gets the
    viewer's highlight values (stages/tiles/highlight.py), per class and per data-set label of
    ``label_names``. ``fingerprint`` identifies the inputs: a level left in the staging folder
    by a killed export is reused only if it matches. ``index`` holds the extra fields of this
    atlas's entry in ``atlases.json`` (``class`` / ``classes``).
    """

    id: str
    kind: str  # main | class | compare
    title: str
    levels: list[int]
    cell_level: Callable[[int], derived.CellLevel]
    icon_level: Callable[[int], IconLevel]
    minimap: Callable[[int, int], MiniMap]  # (max points, seed) -> points
    class_names: list[str]
    model: dict[str, Any]  # {"name": ..., "layer": ...}
    icon_px: int
    store: RowStore | None = None
    label_names: list[str] = field(default_factory=list)  # the data set's labels (store row_labels index these)
    axes: dict[str, str | None] = field(default_factory=lambda: {"x": None, "y": None})
    index: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def path(self) -> str:
        """Folder of this atlas inside the export, relative, with a trailing slash (``main/``)."""
        return f"{self.id}/"

    @classmethod
    def from_store(cls, store: RowStore, levels: list[int] | None = None) -> AtlasSource:
        """The main atlas of ``store``: its grid, its icons (``<store>.icons.zarr``), its layout.

        ``levels`` None: every level whose icons are completely rendered; a requested level
        without complete icons is refused (:func:`exportable_levels`).
        """
        icons = IconStore.open(store.derived_path("icons"))
        chosen = exportable_levels(icons, derived.grid_levels(store), levels)
        return cls(
            id="main",
            kind="main",
            title=store.model.title,
            levels=chosen,
            cell_level=lambda n: derived.read_level(store, n, with_attribution=True),
            icon_level=icons.read_level,
            minimap=lambda k, seed: store_minimap(store, k, seed),
            class_names=list(store.class_names),
            model=store.model.entry(),
            icon_px=icons.size,
            store=store,
            label_names=list(store.label_names),
            fingerprint=icons.record.export_fingerprint("store", store.path),
        )


def exportable_levels(icons: IconStore, grid_levels: list[int], requested: list[int] | None) -> list[int]:
    """The levels to export, coarse to fine; refuse a requested level whose icons are not all rendered."""

    def state(n: int) -> str:
        if n not in icons.levels:
            return "not rendered"
        done = icons.done(n)
        return "complete" if done.all() else f"{int(done.sum())} of {len(done)} icon batches rendered"

    if requested is None:
        chosen = [n for n in icons.levels if n in grid_levels and state(n) == "complete"]
        if not chosen:
            states = "; ".join(f"level {n}: {state(n)}" for n in icons.levels) or "no levels"
            raise AtlasError(
                f"icons {icons.path} have no completely rendered level ({states}); finish `atlas render` first"
            )
        return chosen
    for n in sorted(set(requested)):
        if n not in grid_levels:
            raise AtlasError(f"tiles.levels: {n} is not a grid level; choose from: {', '.join(map(str, grid_levels))}")
        if state(n) != "complete":
            raise AtlasError(
                f"tiles.levels: level {n} is {state(n)} in {icons.path}; run `atlas render --levels '[{n}]'` first"
            )
    return sorted(set(requested))


def store_minimap(store: RowStore, max_points: int, seed: int) -> MiniMap:
    """A seeded subsample of the store's layout, labelled by each row's top attributed class."""
    layout = derived.read_layout(store)
    picked = np.arange(len(layout.rows))
    if len(picked) > max_points:
        picked = np.sort(np.random.default_rng(seed).choice(len(picked), size=max_points, replace=False))
    rows = layout.rows[picked]
    labels = store.row_values("attr_idx", rows)[:, 0].astype(np.int32) if len(rows) else np.zeros(0, np.int32)
    points = layout.layout[picked]
    return MiniMap(x=points[:, 0].astype(np.float32), y=points[:, 1].astype(np.float32), label=labels)


def page_entry(
    id: str, kind: str, title: str, icon_px: int, model: dict[str, Any], index: dict[str, Any]
) -> AtlasSource:
    """The ``atlases.json`` entry of a page with no zoomable levels of its own (an explained image,
    an experiment): listed beside the atlases, naming the store's model as every entry does."""
    return AtlasSource(
        id=id,
        kind=kind,
        title=title,
        levels=[],
        cell_level=_no_levels,
        icon_level=_no_levels,
        minimap=_no_levels,
        class_names=[],
        icon_px=icon_px,
        model=model,
        index=index,
    )


def _no_levels(*_args: object) -> NoReturn:
    raise RuntimeError("a page entry of atlases.json has no levels")
