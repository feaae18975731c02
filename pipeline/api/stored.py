"""A finished atlas opened for reading (:func:`open_atlas`): layout, levels, icons, examples,
class atlases and comparisons; nothing is recomputed."""

from __future__ import annotations

import dataclasses
import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from pipeline.api.common import _TILES, ColorBy, _layout_figure, _validated
from pipeline.api.results import Cell, Level, compose_level
from stages.config import ModelConfig
from stages.model.registry import LoadedModel, load_model
from store import derived
from store.atlas_store import AtlasStore
from store.derived import Layout
from store.errors import AtlasError
from store.icons import IconLevel, IconStore
from store.records import ModelIdentity
from store.subset import SubsetStore
from store.view import RowStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


class Atlas:
    """A stored atlas opened for reading: the main one (:func:`open_atlas`), a class atlas or a comparison.

    Cheap to create; every array is read on first use and kept (one level's icons at a time are
    ``cells x S x S x 3`` bytes: at level 160 and 80 px about 0.5 GB).
    """

    def __init__(self, store: RowStore, *, kind: Literal["main", "class", "compare"], name: str, title: str) -> None:
        self.store = store
        self.kind = kind
        self.name = name
        self.title = title
        self._cells: dict[int, derived.CellLevel] = {}
        self._levels: dict[int, Level] = {}
        self._icons: dict[int, IconLevel] = {}
        self._icons_checked = False

    # ------------------------------------------------------------------------------- what it is
    @property
    def path(self) -> Path:
        return Path(self.store.path)

    @property
    def model(self) -> ModelIdentity:
        """The model the activations came from (typed: name, weights, layer, layer_shape, ...)."""
        return self.store.model

    @property
    def model_info(self) -> dict[str, Any]:
        """:attr:`model` as a plain dict (name, weights, weights_sha256, layer, layer_shape, image_size)."""
        return dataclasses.asdict(self.store.model)

    @property
    def class_names(self) -> list[str]:
        return list(self.store.class_names)

    def __repr__(self) -> str:
        model = self.model
        try:
            levels = f"levels {self.levels} (rendered: {self.rendered_levels})"
        except AtlasError:
            levels = "no grid yet"
        extra = ""
        if self.kind == "main":
            extra = f"; class atlases: {list(self.class_atlases)}; comparisons: {list(self.comparisons)}"
        return (
            f"<Atlas {self.kind} {self.title!r} at {self.path}: {model.name} {model.layer}, "
            f"{self.store.n_rows} rows x {self.store.channels} channels; {levels}{extra}>"
        )

    # ------------------------------------------------------------------------------- layout, levels
    @cached_property
    def layout(self) -> Layout:
        """The 2-D layout of the laid-out rows (reduce stage): ``rows``, ``layout`` in [0, 1]^2, ``embedding``."""
        return derived.read_layout(self.store)

    @property
    def levels(self) -> list[int]:
        """Cells per side of every grid level, ascending."""
        return derived.grid_levels(self.store)

    @property
    def rendered_levels(self) -> list[int]:
        """The levels whose icons are all rendered (what :meth:`show_level` can compose)."""
        icons = self._icon_store()
        if icons is None:
            return []
        levels = self.levels
        return [n for n in icons.levels if n in levels and icons.complete(n)]

    def level(self, n: int) -> Level:
        """The kept cells of level ``n``: position, count, top attributed classes, direction, members."""
        if n not in self._levels:
            self._check_level(n)
            self._cells[n] = derived.read_level(self.store, n, with_attribution=False)
            self._levels[n] = Level.from_cells(self._cells[n])
        return self._levels[n]

    def activations(self, rows: ArrayLike | None = None) -> NDArray[np.float32]:
        """Raw activations ``[rows, C]`` as float32, of ``rows`` (default: every laid-out row, in layout order).

        Reads them into memory (a million rows of 576 channels is 2.3 GB); e.g. to try other
        settings with :func:`activation_atlas` on the same samples.
        """
        chosen = self.layout.rows if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        if chosen.size and (chosen.min() < 0 or chosen.max() >= self.store.n_rows):
            raise AtlasError(f"rows: row ids must lie in 0..{self.store.n_rows - 1}")
        return np.asarray(self.store.row_values("activations", chosen), dtype=np.float32)

    @property
    def whitening(self) -> NDArray[np.float64] | None:
        """The grid stage's whitening matrix ``S`` (``[C, C]``), or ``None`` if it has none."""
        try:
            return derived.read_whitening(self.store).matrix
        except AtlasError:
            return None

    # ------------------------------------------------------------------------------- cells and icons
    def icons(self, n: int) -> NDArray[np.uint8]:
        """Level ``n``'s icons ``uint8 [K, S, S, 3]``, row ``k`` for kept cell ``k``; all must be rendered."""
        level = self._icon_level(n)
        if level is None or not level.done.all():
            state = (
                "not rendered" if level is None else f"{int(level.done.sum())} of {len(level.done)} batches rendered"
            )
            raise AtlasError(
                f"level={n}: the icons of {self.title!r} are {state}; "
                f"run `atlas render --levels '[{n}]'` (completely rendered: {self.rendered_levels})"
            )
        return level.icons

    def cell(
        self, n: int, i: int, j: int, *, examples: int = 8, px: int = 128, field: float = _TILES.example_field
    ) -> Cell:
        """Cell ``(i, j)`` of level ``n`` with its icon and up to ``examples`` dataset patches of ``px`` pixels.

        ``field`` is the side of a patch as a fraction of its view (``tiles.example_field``, about the
        layer's receptive field). Photos that cannot be opened any more are left out with a warning.
        """
        from stages.tiles.dataset_examples import cell_examples, row_thumbnails

        if examples < 0 or px < 1:
            raise AtlasError(f"examples={examples}, px={px}: need examples >= 0 and px >= 1")
        level = self.level(n)
        k = level.index(i, j)
        icon = None
        icon_level = self._icon_level(n)
        if icon_level is not None and icon_level.done[k // max(1, self._icon_batch())]:
            icon = Image.fromarray(icon_level.icons[k])
        rows = cell_examples(self.store, self._cells[n], k, examples, distinct_photos=True)
        patches = [p for p in row_thumbnails(self.store, rows, px, field) if p is not None]
        return Cell(
            level=n,
            index=k,
            i=i,
            j=j,
            count=int(level.count[k]),
            top_classes=level.top_classes(k),
            direction=level.direction[k],
            members=level.members(k),
            icon=icon,
            examples=rows,
            patches=patches,
        )

    def show_level(
        self, n: int, *, density_scaling: bool = _TILES.density_scaling, background: str = _TILES.background
    ) -> Image.Image:
        """Level ``n`` as the tiles stage composes it: every icon at its cell, sparse cells shrunk.

        A square image of ``n x S`` pixels for ``S``-pixel icons; ``density_scaling`` is the production
        viewer's rule (icon side ``x min(1, sqrt(count / mean count))``, ``tiles.density_scaling``).
        """
        return compose_level(self.level(n), self.icons(n), density_scaling=density_scaling, background=background)

    def plot_layout(self, level: int | None = None, *, color_by: ColorBy = "top_class") -> Figure:
        """The layout as a scatter, coloured by each sample's most attributed class (or dataset label),
        with the grid of ``level`` over it (kept cells outlined in red). y grows downwards, as in
        :meth:`show_level`. Returns a matplotlib figure (it displays itself in Jupyter)."""
        from stages.grid.layout_plot import row_groups

        if color_by not in ("top_class", "label"):
            raise AtlasError(f"color_by={color_by!r}: choose top_class or label")
        grid = self.level(level) if level is not None else None
        groups, names = row_groups(self.store, self.layout.rows, color_by)
        title = f"{self.title}: {len(self.layout.rows):,} samples, {self.layout.info.method or '?'}"
        return _layout_figure(self.layout.layout, groups, names, grid, title, color_by.replace("_", " "))

    # ------------------------------------------------------------------------------- class atlases
    @cached_property
    def class_atlases(self) -> dict[str, Atlas]:
        """The class-filtered atlases built by ``atlas classes`` (docs/class_atlas.md), by folder name."""
        from stages.classes.atlas import classes_folder

        return self._subsets(classes_folder, "class") if self.kind == "main" else {}

    @cached_property
    def comparisons(self) -> dict[str, Atlas]:
        """The two-class comparison atlases built by ``atlas compare``, by folder name (``a--b``)."""
        from stages.classes.compare import compare_folder

        return self._subsets(compare_folder, "compare") if self.kind == "main" else {}

    def load_model(self, device: torch.device | None = None) -> LoadedModel:
        """The classifier the activations came from, cut at the same layer (weights from the local cache)."""
        model = self.model
        if not model.name or not model.layer:
            raise AtlasError(f"store {self.path} records no model; use load_classifier(name, layer)")
        cfg = _validated(
            ModelConfig,
            {
                "name": model.name,
                "layer": model.layer,
                "weights": model.weights if model.weights is not None else ModelConfig().weights,
                "image_size": model.image_size if model.image_size is not None else ModelConfig().image_size,
            },
            "load_model",
        )
        loaded = load_model(cfg, device if device is not None else torch.device("cpu"))
        stored = model.weights_sha256
        if stored and stored != loaded.weights_sha256:
            raise AtlasError(
                f"store {self.path} was collected with other {model.name} weights (sha256 "
                f"{stored[:12]}...); put that file in torchvision's cache or pass its path"
            )
        return loaded

    # ------------------------------------------------------------------------------- internals
    def _check_level(self, n: int) -> None:
        levels = self.levels
        if n not in levels:
            raise AtlasError(f"level={n}: {self.title!r} has grid levels {levels}; pass one of them")

    def _subsets(self, folder_of: Any, kind: Literal["class", "compare"]) -> dict[str, Atlas]:
        from stages.classes.subset import built_subsets

        assert isinstance(self.store, AtlasStore)
        folder = folder_of(self.store)
        out = {}
        for name in built_subsets(folder):
            subset = SubsetStore.open(self.store, name, base=folder)
            sel = subset.selection
            if kind == "class":
                title = str((sel.get("class") or {}).get("name", name))
            else:
                title = " vs ".join(str(c.get("name")) for c in sel.get("classes", [])) or name
            out[name] = Atlas(subset, kind=kind, name=name, title=title)
        return out

    def _icon_store(self) -> IconStore | None:
        path = self.store.derived_path("icons")
        return IconStore.open(path) if IconStore.exists(path) else None

    def _icon_batch(self) -> int:
        icons = self._icon_store()
        return icons.batch_size if icons is not None else 1

    def _icon_level(self, n: int) -> IconLevel | None:
        """Level ``n``'s icons, checked to belong to this grid (the fidelity stage's check)."""
        if n in self._icons:
            return self._icons[n]
        self._check_level(n)
        icons = self._icon_store()
        if icons is None or n not in icons.levels:
            return None
        if not self._icons_checked:
            cells = {m: derived.read_level(self.store, m, with_attribution=False) for m in icons.levels}
            if not derived.icons_current(icons.record, self.store, cells):
                raise AtlasError(f"icons {icons.path} were rendered from another grid; run `atlas render` again")
            self._icons_checked = True
        level = icons.read_level(n)
        if level.done.all():  # a level still being rendered is read again next time
            self._icons[n] = level
        return level


# ===================================================================================== stored atlases
def open_atlas(store_path: str | Path) -> Atlas:
    """Open the store a pipeline run finished (``data.store``, e.g. ``data/store.zarr``), read-only.

    A relative path is taken from the current directory. The layout, levels and icons are read
    when first used, so opening is instant even for a million rows.
    """
    path = Path(store_path).expanduser()
    if not (path / "zarr.json").exists():
        raise AtlasError(
            f"store_path={str(path)!r}: no atlas store there; pass the data.store folder of a "
            "finished run (e.g. data/store.zarr; relative paths start at the current directory)"
        )
    store = AtlasStore.open(path, mode="r")
    title = store.model.title
    log.info("opened %s (%s, %d rows)", path, title, store.n_rows)
    return Atlas(store, kind="main", name="main", title=title)
