"""The Python API for notebooks: open a finished atlas, or make one in memory from arrays.

Two ways in (docs/api.md has runnable examples of both):

- :func:`open_atlas` reads what the pipeline wrote (``atlas run`` / ``dvc repro``): the layout, the
  zoom levels and their cells, the rendered icons, each cell's dataset-example patches, and the
  class atlases and comparisons built next to the store. Read-only; nothing is recomputed.
- :func:`activation_atlas`, :func:`render_directions` and :func:`feature_vis` need no store at
  all, the way lucid's activation-atlas recipe is used (Carter et al., 2019): activations in, a
  layout, cells and directions out; directions in, icons out; a unit in, an image out.

Every computation is the stage code's (docs/method.md): the reduce stage's layout
(:func:`stages.reduce.stage.layout_in_memory`), the grid stage's binning and cell means
(:func:`stages.grid.stage.level_in_memory`) and whitening, the render stage's batched renderer
(:func:`stages.render.stage.render_batch`), ``atlas render-unit``'s target parser, the tiles stage's
canvas composition and density scaling, and its dataset-example crops. Nothing here implements an
algorithm a second time; this module only checks what the caller passed, calls those, and turns
the results into PIL images and matplotlib figures.

Conventions: a level of ``n`` cells per side has its kept cells in the grid's order; cell ``k`` sits
at column ``i[k]`` (layout x) and row ``j[k]`` (layout y, 0 at the top of a composed level). Models
are a :class:`~stages.model.registry.LoadedModel` or a torchvision name, loaded with weights from the
local torchvision cache only (nothing is downloaded). ``device`` is always an explicit parameter;
``None`` means the model's own device (CPU for a model loaded by name). Every mistake in what is
passed in raises :class:`~store.errors.AtlasError` with one line that names the parameter and says
what to do. The module logs (``logging``); it never prints.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from pydantic import BaseModel, ValidationError

from stages.config import GridConfig, ModelConfig, ReduceConfig, RenderConfig, TilesConfig
from stages.featurevis import FeatureVisError, FourierImage, Objective, layer_forward, render
from stages.featurevis.fold_bn import fold_batchnorm
from stages.featurevis.forward import find_module
from stages.model.registry import LoadedModel, load_model
from store import derived
from store.atlas_store import AtlasStore
from store.derived import Layout
from store.errors import AtlasError
from store.icons import IconLevel, IconStore
from store.subset import SubsetStore
from store.view import RowStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

__all__ = [
    "Atlas", "AtlasError", "AtlasResult", "Cell", "Layout", "Level", "activation_atlas", "compose_level",
    "feature_vis", "load_classifier", "open_atlas", "render_directions",
]

# The defaults of the typed config (stages/config.py), so the API and the pipeline never disagree:
# reduce = UMAP, n_neighbors 50, min_dist 0.05, cosine (Carter et al., 2019; lucid's recipe);
# grid = cells with more than 5 samples kept (lucid's ``bin_laid_out_activations`` threshold);
# render = the render stage's icon size, steps, Adam lr and ``dot * cos^4`` objective.
_REDUCE = ReduceConfig()
_GRID = GridConfig()
_RENDER = RenderConfig()
_TILES = TilesConfig()

ModelLike = LoadedModel | str
ColorBy = Literal["top_class", "label"]
_Config = TypeVar("_Config", bound=BaseModel)


# ===================================================================================== results
@dataclass(frozen=True, repr=False)
class Level:
    """The kept cells of one zoom level (``n`` cells per side), in the grid's cell order.

    Cell ``k`` is at column ``i[k]``, row ``j[k]``; ``count[k]`` samples fell in it, its
    ``direction[k]`` is their mean raw activation (the vector its icon is rendered from), and
    ``top_idx[k]`` / ``top_val[k]`` are the classes with the largest mean attribution (-1 / 0 past
    the last positive one). Member rows are store row ids (rows of the array for
    :func:`activation_atlas`); cells with ``count <= min_count`` are not kept.
    """

    n: int
    i: NDArray[np.int32]
    j: NDArray[np.int32]
    count: NDArray[np.int64]
    direction: NDArray[np.float32]
    top_idx: NDArray[np.int32]
    top_val: NDArray[np.float32]
    member_offsets: NDArray[np.int64]
    member_rows: NDArray[np.int64]
    class_names: list[str] = field(default_factory=list)
    min_count: int = 0

    @classmethod
    def from_cells(cls, cells: derived.CellLevel) -> "Level":
        """The view of a level as the grid stage wrote it (:class:`store.derived.CellLevel`)."""
        return cls(n=cells.n, i=cells.i, j=cells.j, count=cells.count, direction=cells.direction,
                   top_idx=cells.top_idx, top_val=cells.top_val, member_offsets=cells.member_offsets,
                   member_rows=cells.member_rows, class_names=list(cells.class_names),
                   min_count=int(cells.attrs.get("min_count", 0)))

    def __len__(self) -> int:
        return int(len(self.count))

    def __repr__(self) -> str:
        return f"<Level {self.n} x {self.n}: {len(self)} kept cells holding {int(self.count.sum())} rows>"

    def members(self, k: int) -> NDArray[np.int64]:
        """Row ids of the members of kept cell ``k`` (ascending)."""
        return self.member_rows[self.member_offsets[k]:self.member_offsets[k + 1]]

    def top_classes(self, k: int) -> list[tuple[str, float]]:
        """``(class name, mean attribution)`` of kept cell ``k``'s top classes, largest first."""
        names = self.class_names
        return [(names[c] if c < len(names) else str(c), float(v))
                for c, v in zip(self.top_idx[k].tolist(), self.top_val[k].tolist()) if c >= 0]

    def index(self, i: int, j: int) -> int:
        """Position among the kept cells of the cell at column ``i``, row ``j``."""
        if not (0 <= i < self.n and 0 <= j < self.n):
            raise AtlasError(f"cell (i={i}, j={j}) is outside level {self.n}: pass 0 <= i, j < {self.n}")
        hit = np.flatnonzero((self.i == i) & (self.j == j))
        if len(hit) == 0:
            raise AtlasError(
                f"cell (i={i}, j={j}) of level {self.n} is not kept (it holds <= min_count = {self.min_count} "
                f"samples); pick one of the {len(self)} kept cells, e.g. (i={int(self.i[0])}, j={int(self.j[0])}), "
                "see Level.records()" if len(self) else
                f"level {self.n} keeps no cell at all; lower min_count or use a coarser level")
        return int(hit[0])

    def records(self) -> list[dict[str, Any]]:
        """One dict per kept cell (``cell, i, j, count, top_classes``): ``pandas.DataFrame(level.records())``."""
        return [{"cell": k, "i": int(self.i[k]), "j": int(self.j[k]), "count": int(self.count[k]),
                 "top_classes": self.top_classes(k)} for k in range(len(self))]


@dataclass(frozen=True, repr=False)
class Cell:
    """One kept cell of a stored atlas, with its icon and the dataset patches it stands for.

    ``patches`` are the crops of the photos of ``examples`` (the members whose activation is
    closest by cosine to the cell's direction, one per photo, as the tiles stage picks them), cut
    around the sampled position about one receptive field wide. ``icon`` is ``None`` while its
    render batch is not done.
    """

    level: int
    index: int
    i: int
    j: int
    count: int
    top_classes: list[tuple[str, float]]
    direction: NDArray[np.float32]
    members: NDArray[np.int64]
    icon: Image.Image | None
    examples: NDArray[np.int64]
    patches: list[Image.Image]

    def __repr__(self) -> str:
        top = ", ".join(name for name, _ in self.top_classes[:3]) or "no attributed class"
        return (f"<Cell {self.index} of level {self.level} at (i={self.i}, j={self.j}): {self.count} members; "
                f"top: {top}; {len(self.patches)} patches>")

    def strip(self, px: int = 128) -> Image.Image:
        """The icon (left) and the patches side by side, each ``px`` x ``px``, on white."""
        tiles = ([self.icon] if self.icon is not None else []) + list(self.patches)
        out = Image.new("RGB", (max(1, len(tiles)) * (px + 4) - 4 if tiles else px, px), "white")
        for k, tile in enumerate(tiles):
            out.paste(tile.convert("RGB").resize((px, px), Image.Resampling.LANCZOS), (k * (px + 4), 0))
        return out

    def _repr_png_(self) -> bytes:
        return _png(self.strip())


@dataclass(frozen=True, repr=False)
class AtlasResult:
    """What :func:`activation_atlas` computed: a layout, one :class:`Level` per grid size, a whitening.

    ``layout.layout[r]`` is row ``r``'s position in [0, 1]^2 (``layout.embedding[r]`` before the
    normalisation); ``whitening`` is ``S = (A^T A / n + ridge I)^-1`` of the activations, to pass
    to :func:`render_directions` for the whitened icons of the paper.
    """

    layout: Layout
    cell_levels: dict[int, Level]
    whitening: NDArray[np.float64]
    class_names: list[str]
    groups: NDArray[np.int64] | None = None  # per row: most attributed class (-1: none)

    def __repr__(self) -> str:
        kept = ", ".join(f"{n}: {len(level)}" for n, level in sorted(self.cell_levels.items()))
        return f"<AtlasResult of {len(self.layout.rows)} rows ({self.layout.attrs.get('method')}); kept cells per level {{{kept}}}>"

    @property
    def levels(self) -> list[int]:
        """Cells per side of every level, ascending."""
        return sorted(self.cell_levels)

    def level(self, n: int) -> Level:
        if n not in self.cell_levels:
            raise AtlasError(f"level={n}: this result has levels {self.levels}; pass one of them "
                             "(or grid=[...] to activation_atlas)")
        return self.cell_levels[n]

    @property
    def cells(self) -> Level:
        """The one level (``grid`` was a single size); with several, use :meth:`level`."""
        if len(self.cell_levels) != 1:
            raise AtlasError(f"cells: this result has levels {self.levels}; use result.level(n)")
        return next(iter(self.cell_levels.values()))

    @property
    def directions(self) -> NDArray[np.float32]:
        """``[K, C]`` directions of the one level's kept cells (lucid's ``bin_laid_out_activations``)."""
        return self.cells.direction

    def plot_layout(self, level: int | None = None) -> "Figure":
        """The layout as a scatter coloured by each row's most attributed class, ``level``'s grid over it."""
        grid = self.level(level) if level is not None else None
        groups = self.groups if self.groups is not None else np.full(len(self.layout.rows), -1, np.int64)
        title = f"{len(self.layout.rows):,} rows, {self.layout.attrs.get('method', 'given embedding')}"
        return _layout_figure(self.layout.layout, groups, self.class_names, grid, title, "top class")

    def show_level(self, n: int, icons: ArrayLike, *, density_scaling: bool = _TILES.density_scaling,
                   background: str = _TILES.background) -> Image.Image:
        """Level ``n`` composed from ``icons`` (e.g. ``render_directions(..., result.level(n).direction)``)."""
        return compose_level(self.level(n), icons, density_scaling=density_scaling, background=background)


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
    def model_info(self) -> dict[str, Any]:
        """The model the activations came from (name, weights, layer, layer_shape, ...)."""
        return dict(self.store.attrs.get("model") or {})

    @property
    def class_names(self) -> list[str]:
        return list(self.store.class_names)

    def __repr__(self) -> str:
        model = self.model_info
        try:
            levels = f"levels {self.levels} (rendered: {self.rendered_levels})"
        except AtlasError:
            levels = "no grid yet"
        extra = ""
        if self.kind == "main":
            extra = f"; class atlases: {list(self.class_atlases)}; comparisons: {list(self.comparisons)}"
        return (f"<Atlas {self.kind} {self.title!r} at {self.path}: {model.get('name')} {model.get('layer')}, "
                f"{self.store.n_rows} rows x {self.store.channels} channels; {levels}{extra}>")

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
            state = "not rendered" if level is None else f"{int(level.done.sum())} of {len(level.done)} batches rendered"
            raise AtlasError(f"level={n}: the icons of {self.title!r} are {state}; "
                             f"run `atlas render --levels '[{n}]'` (completely rendered: {self.rendered_levels})")
        return level.icons

    def cell(self, n: int, i: int, j: int, *, examples: int = 8, px: int = 128,
             field: float = _TILES.example_field) -> Cell:
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
        return Cell(level=n, index=k, i=i, j=j, count=int(level.count[k]), top_classes=level.top_classes(k),
                    direction=level.direction[k], members=level.members(k), icon=icon, examples=rows, patches=patches)

    def show_level(self, n: int, *, density_scaling: bool = _TILES.density_scaling,
                   background: str = _TILES.background) -> Image.Image:
        """Level ``n`` as the tiles stage composes it: every icon at its cell, sparse cells shrunk.

        A square image of ``n x S`` pixels for ``S``-pixel icons; ``density_scaling`` is the production
        viewer's rule (icon side ``x min(1, sqrt(count / mean count))``, ``tiles.density_scaling``).
        """
        return compose_level(self.level(n), self.icons(n), density_scaling=density_scaling, background=background)

    def plot_layout(self, level: int | None = None, *, color_by: ColorBy = "top_class") -> "Figure":
        """The layout as a scatter, coloured by each sample's most attributed class (or dataset label),
        with the grid of ``level`` over it (kept cells outlined in red). y grows downwards, as in
        :meth:`show_level`. Returns a matplotlib figure (it displays itself in Jupyter)."""
        from pipeline.commands.layout_plot import row_groups

        if color_by not in ("top_class", "label"):
            raise AtlasError(f"color_by={color_by!r}: choose top_class or label")
        grid = self.level(level) if level is not None else None
        groups, names = row_groups(self.store, self.layout.rows, color_by)
        title = f"{self.title}: {len(self.layout.rows):,} samples, {self.layout.attrs.get('method', '?')}"
        return _layout_figure(self.layout.layout, groups, names, grid, title, color_by.replace("_", " "))

    # ------------------------------------------------------------------------------- class atlases
    @cached_property
    def class_atlases(self) -> dict[str, "Atlas"]:
        """The class-filtered atlases built by ``atlas classes`` (docs/class_atlas.md), by folder name."""
        from stages.classes.atlas import classes_folder

        return self._subsets(classes_folder, "class") if self.kind == "main" else {}

    @cached_property
    def comparisons(self) -> dict[str, "Atlas"]:
        """The two-class comparison atlases built by ``atlas compare``, by folder name (``a--b``)."""
        from stages.classes.compare import compare_folder

        return self._subsets(compare_folder, "compare") if self.kind == "main" else {}

    def load_model(self, device: torch.device | None = None) -> LoadedModel:
        """The classifier the activations came from, cut at the same layer (weights from the local cache)."""
        model = self.model_info
        if not model.get("name") or not model.get("layer"):
            raise AtlasError(f"store {self.path} records no model; use load_classifier(name, layer)")
        cfg = _validated(ModelConfig, {"name": model["name"], "layer": model["layer"],
                                       "weights": model.get("weights", ModelConfig().weights),
                                       "image_size": model.get("image_size", ModelConfig().image_size)}, "load_model")
        loaded = load_model(cfg, device if device is not None else torch.device("cpu"))
        stored = model.get("weights_sha256")
        if stored and stored != loaded.weights_sha256:
            raise AtlasError(f"store {self.path} was collected with other {model['name']} weights (sha256 "
                             f"{stored[:12]}...); put that file in torchvision's cache or pass its path")
        return loaded

    # ------------------------------------------------------------------------------- internals
    def _check_level(self, n: int) -> None:
        levels = self.levels
        if n not in levels:
            raise AtlasError(f"level={n}: {self.title!r} has grid levels {levels}; pass one of them")

    def _subsets(self, folder_of: Any, kind: Literal["class", "compare"]) -> dict[str, "Atlas"]:
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
        from stages.render.stage import grid_fingerprint

        if not self._icons_checked:
            cells = {m: derived.read_level(self.store, m, with_attribution=False) for m in icons.levels}
            if icons.attrs.get("grid", {}).get("fingerprint") != grid_fingerprint(self.store, cells):
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
        raise AtlasError(f"store_path={str(path)!r}: no atlas store there; pass the data.store folder of a "
                         "finished run (e.g. data/store.zarr; relative paths start at the current directory)")
    store = AtlasStore.open(path, mode="r")
    model = store.attrs.get("model") or {}
    title = f"{model.get('name', 'model')} {model.get('layer', '')}".strip()
    log.info("opened %s (%s, %d rows)", path, title, store.n_rows)
    return Atlas(store, kind="main", name="main", title=title)


def compose_level(level: Level, icons: ArrayLike, *, density_scaling: bool = _TILES.density_scaling,
                  density: float = _TILES.density, background: str = _TILES.background) -> Image.Image:
    """One level's icons composed onto its ``n x S`` pixel canvas, as the tiles stage does.

    ``icons[k]`` (``uint8 [K, S, S, 3]``) is drawn centred in kept cell ``k``; with
    ``density_scaling`` a sparse cell's icon shrinks to ``min(1, sqrt(density x count / mean count))``
    of the cell (the production viewer's rule, docs/method.md §7); empty cells keep ``background``.
    """
    from stages.tiles.geometry import icon_scale
    from stages.tiles.pyramid import compose_canvas

    pixels = np.asarray(icons)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] != len(level) or pixels.shape[3] != 3 \
            or pixels.shape[1] != pixels.shape[2]:
        raise AtlasError(f"icons: expected uint8 [cells={len(level)}, S, S, 3] (got {pixels.dtype} "
                         f"{list(pixels.shape)}); pass one square RGB icon per kept cell, in the level's order")
    if density <= 0:
        raise AtlasError(f"density={density}: must be > 0")
    _check_colour(background)
    scale = icon_scale(level.count, density, density_scaling)
    canvas, _ = compose_canvas(pixels, level.i, level.j, level.n, scale, background)
    return canvas


# ===================================================================================== in memory
def activation_atlas(
    activations: ArrayLike,
    attributions: ArrayLike | None = None,
    grid: int | Sequence[int] = 20,
    *,
    class_names: Sequence[str] | None = None,
    embedding: ArrayLike | None = None,
    method: Literal["umap", "tsne", "pca"] = _REDUCE.method,
    n_neighbors: int = _REDUCE.n_neighbors,
    min_dist: float = _REDUCE.min_dist,
    metric: Literal["cosine", "euclidean"] = _REDUCE.metric,
    min_count: int = _GRID.min_count,
    top_classes: int = _GRID.top_classes,
    ridge: float = _GRID.ridge,
    seed: int = _REDUCE.seed,
) -> AtlasResult:
    """An activation atlas of an in-memory ``[samples, channels]`` array: layout, cells, directions.

    Lucid's recipe without a store: lay the activations out in 2-D (the reduce stage: UMAP with
    n_neighbors 50, min_dist 0.05, cosine by default, as in Carter et al. 2019; ``method="pca"`` is
    instant), normalise the layout to [0, 1]^2 (1st-99th percentile clip, 10% margin), bin it into
    ``grid`` x ``grid`` cells (one level per size in a list), keep the cells holding more than
    ``min_count`` samples (the recipe's threshold 5) and average each kept cell's raw activations
    into its direction (the grid stage). ``attributions`` (``[samples, classes]``, e.g. activation x
    gradient of each logit) label the cells with their ``top_classes`` largest mean attributions;
    ``embedding`` (``[samples, 2]``, any scale) replaces the reduction with your own positions.
    The result also holds the whitening ``S`` of the activations (``ridge`` relative to the mean
    eigenvalue, ``grid.ridge``) for :func:`render_directions`.
    """
    from stages.grid.stage import level_in_memory
    from stages.grid.whitening import SecondMoment, whitening_matrix
    from stages.reduce.layout_math import normalize_layout
    from stages.reduce.stage import layout_in_memory

    x = _matrix(activations, "activations", "[samples, channels]")
    n, c = x.shape
    if n < 2:
        raise AtlasError(f"activations: {n} row(s); an atlas needs at least 2 samples")
    attr = None
    if attributions is not None:
        attr = _matrix(attributions, "attributions", f"[samples={n}, classes]")
        if attr.shape[0] != n:
            raise AtlasError(f"attributions: {attr.shape[0]} rows for {n} activation rows; pass one row per sample")
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(attr.shape[1] if attr is not None else 0)]
    if attr is not None and len(names) != attr.shape[1]:
        raise AtlasError(f"class_names: {len(names)} names for {attr.shape[1]} attribution columns; pass one per column")
    sizes = [grid] if isinstance(grid, (int, np.integer)) else list(grid)
    if not sizes or any(not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g < 1 for g in sizes):
        raise AtlasError(f"grid={grid!r}: pass cells per side as a positive integer or a list of them, e.g. 20 or [10, 20]")
    grid_cfg = _validated(GridConfig, {"levels": [int(g) for g in sizes], "min_count": min_count,
                                       "top_classes": top_classes, "ridge": ridge}, "activation_atlas")
    reduce_cfg = _validated(ReduceConfig, {"method": method, "n_neighbors": n_neighbors, "min_dist": min_dist,
                                           "metric": metric, "seed": seed}, "activation_atlas")

    if embedding is not None:
        points = _matrix(embedding, "embedding", f"[samples={n}, 2]", np.float64)
        if points.shape != (n, 2):
            raise AtlasError(f"embedding: shape {list(points.shape)}, expected [samples={n}, 2]; one 2-D point per row")
        layout = Layout(rows=np.arange(n, dtype=np.int64),
                        layout=normalize_layout(points, tuple(reduce_cfg.clip_percentiles), reduce_cfg.margin),
                        embedding=points.astype(np.float32), fitted=np.ones(n, bool), attrs={"method": "given embedding"})
    else:
        if method in ("umap", "tsne") and n <= n_neighbors:
            raise AtlasError(f"n_neighbors={n_neighbors}: {method} needs more samples than neighbours and there are {n}; "
                             f"pass n_neighbors < {n} (e.g. {max(2, min(15, n - 1))}) or method='pca'")
        if method == "tsne" and n <= reduce_cfg.tsne_perplexity:
            raise AtlasError(f"method='tsne': {n} samples, t-SNE needs more than its perplexity "
                             f"({reduce_cfg.tsne_perplexity:g}); use method='pca' or 'umap'")
        layout = layout_in_memory(x, reduce_cfg)

    levels = {g: Level.from_cells(level_in_memory(layout.layout, x, attr, g, grid_cfg, names)) for g in grid_cfg.levels}
    moment = SecondMoment(c)
    moment.add(x)
    try:
        s = whitening_matrix(moment.moment(), grid_cfg.ridge)
    except ValueError:
        raise AtlasError(f"ridge={ridge}: the activations' second moment is singular (a channel is never active); "
                         "pass ridge > 0") from None
    groups = None
    if attr is not None:
        groups = np.where(attr.max(axis=1) > 0, attr.argmax(axis=1), -1).astype(np.int64)
    for g, lv in levels.items():
        log.info("level %d: %d cells kept (count > %d) holding %d of %d rows", g, len(lv), min_count,
                 int(lv.count.sum()), n)
    return AtlasResult(layout=layout, cell_levels=levels, whitening=s, class_names=names, groups=groups)


def load_classifier(name: str, layer: str | None = None, *, weights: str | None = None,
                    image_size: int | None = None, device: torch.device | None = None) -> LoadedModel:
    """A torchvision classifier cut at ``layer`` (default: the pipeline's ``model.layer``), on ``device``.

    ``weights`` is a torchvision weights name (default ``model.weights``, IMAGENET1K_V1) read from
    torchvision's local cache, or a path to a state-dict file; nothing is downloaded.
    """
    defaults = ModelConfig()
    cfg = _validated(ModelConfig, {"name": name, "layer": layer or defaults.layer, "weights": weights or defaults.weights,
                                   "image_size": image_size or defaults.image_size}, "load_classifier")
    return load_model(cfg, device if device is not None else torch.device("cpu"))


def render_directions(
    model: ModelLike,
    layer: str | None,
    directions: ArrayLike,
    *,
    steps: int = _RENDER.steps,
    size: int = _RENDER.size,
    whitening: ArrayLike | None = None,
    cos_power: float = _RENDER.cos_power,
    cosine: Literal["raw", "lucid"] = _RENDER.cosine,
    attempts: int = _RENDER.attempts,
    lr: float = _RENDER.lr,
    batch_size: int = _RENDER.batch_size,
    seed: int = _RENDER.seed,
    device: torch.device | None = None,
) -> NDArray[np.uint8]:
    """One icon per direction, ``uint8 [K, size, size, 3]``: the render stage's feature visualization.

    Each image maximises the atlas objective ``dot * cos^cos_power`` of ``layer``'s centre activation
    with its direction (whitened ``v S`` when ``whitening`` is given, e.g. ``AtlasResult.whitening``
    or ``Atlas.whitening``), from a Fourier-parameterised image under lucid's transformation
    robustness, Adam at ``lr``, best of ``attempts`` (docs/method.md §5-§6; production 80 px, 1024
    steps, 4 attempts). ``layer`` ``None`` is the model's own layer. Deterministic for a ``seed`` on
    the CPU.
    """
    from stages.render.stage import batch_seed, render_batch

    loaded = _model(model, layer, device, "render_directions")
    layer = layer or loaded.layer
    r = _validated(RenderConfig, {"steps": steps, "size": size, "cos_power": cos_power, "cosine": cosine,
                                  "attempts": attempts, "lr": lr, "batch_size": batch_size, "seed": seed},
                   "render_directions")
    v = np.asarray(directions, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    channels = _layer_channels(loaded, layer, "render_directions")
    if v.ndim != 2 or v.shape[1] != channels or v.shape[0] == 0 or not np.isfinite(v).all():
        raise AtlasError(f"directions: expected finite [K, {channels}] for layer {layer!r} (got {list(v.shape)}); "
                         "pass one row per icon with the layer's channel count")
    s = None
    if whitening is not None:
        s = np.asarray(whitening, dtype=np.float32)
        if s.shape != (channels, channels):
            raise AtlasError(f"whitening: expected [{channels}, {channels}] for layer {layer!r} (got {list(s.shape)}); "
                             "pass AtlasResult.whitening or Atlas.whitening of the same layer")
    module = fold_batchnorm(loaded.module, layer, loaded.normalize)  # same values, faster (as the stage)
    seeds = [batch_seed(r.seed, 0, 0, k) for k in range(-(-len(v) // r.batch_size))]
    with _engine_errors("render_directions"), layer_forward(module, layer, normalize=loaded.normalize) as forward:
        images, objective = render_batch(forward, layer, torch.as_tensor(v),
                                         torch.as_tensor(s) if s is not None else None, r, loaded.device,
                                         seeds=seeds, cap=r.batch_size)
    log.info("rendered %d directions at %s (%d px, %d steps): mean objective %.4g", len(v), layer, r.size, r.steps,
             float(np.mean(objective)))
    return images


def feature_vis(
    model: ModelLike,
    target: str | Objective,
    *,
    layer: str | None = None,
    steps: int = _RENDER.steps,
    size: int = _RENDER.size,
    lr: float = _RENDER.lr,
    seed: int = _RENDER.seed,
    device: torch.device | None = None,
) -> Image.Image:
    """A feature visualization of one unit, as a ``size`` x ``size`` PIL image.

    ``target`` is what ``atlas render-unit`` takes, on ``layer`` (default: the model's):
    ``"channel:N"`` (lucid ``objectives.channel``), ``"neuron:N[:y:x]"``, ``"class:NAME|INDEX"`` (the
    logit) or ``"direction:PATH.npy"``; or any :class:`stages.featurevis.Objective` reading ``layer``
    and/or the logits (e.g. ``Channel(layer, 3) + Channel(layer, 7)``). Same engine and settings as
    the render stage: Fourier image, transformation robustness, Adam ``lr``.
    """
    from pipeline.commands.render_unit import parse_target

    loaded = _model(model, layer, device, "feature_vis")
    layer = layer or loaded.layer
    r = _validated(RenderConfig, {"steps": steps, "size": size, "lr": lr, "seed": seed}, "feature_vis")
    if isinstance(target, str):
        shape = loaded.layer_shape if layer == loaded.layer else (_layer_channels(loaded, layer, "feature_vis"), 1, 1)
        objective, needs_logits = parse_target(target, dataclasses.replace(loaded, layer=layer, layer_shape=shape))
    elif isinstance(target, Objective):
        objective, needs_logits = target, True
    else:
        raise AtlasError(f"target: expected 'channel:N', 'neuron:N[:y:x]', 'class:NAME', 'direction:PATH.npy' or an "
                         f"Objective (got {type(target).__name__})")
    _layer_channels(loaded, layer, "feature_vis")
    with _engine_errors("feature_vis"), \
            layer_forward(loaded.module, layer, normalize=loaded.normalize, with_logits=needs_logits) as forward:
        result = render(forward, objective, FourierImage(1, (r.size, r.size)), steps=r.steps, lr=r.lr,
                        device=loaded.device, seed=r.seed)
    log.info("feature_vis %s at %s: objective %.4g in %.1f s", target, layer, float(result.objective[0]), result.seconds)
    return Image.fromarray(result.images[0])


# ===================================================================================== helpers
class _Figure:
    """Namespace for the figure class (matplotlib is imported only when a figure is drawn)."""

    cls: type | None = None

    @classmethod
    def make(cls, **kwargs: Any) -> "Figure":
        if cls.cls is None:
            from matplotlib.figure import Figure

            class NotebookFigure(Figure):
                """A matplotlib figure that shows itself in Jupyter with no pyplot and no global state."""

                def _repr_png_(self) -> bytes:
                    buffer = io.BytesIO()
                    self.savefig(buffer, format="png")
                    return buffer.getvalue()

            cls.cls = NotebookFigure
        return cls.cls(**kwargs)


def _layout_figure(xy: NDArray[np.floating], groups: NDArray[np.int64], names: list[str], level: Level | None,
                   title: str, legend: str) -> "Figure":
    """The ``atlas plot-layout`` drawing (colours, grid, legend) on a notebook figure, y down."""
    from pipeline.commands.layout_plot import draw_layout

    if level is not None:
        title += f"; level {level.n}: {len(level)} cells kept"
    return draw_layout(_Figure.make(figsize=(7.5, 6), dpi=100), xy, groups, names, level, title, legend, y_down=True)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _matrix(values: ArrayLike, name: str, expected: str, dtype: type = np.float32) -> NDArray[Any]:
    """A finite 2-D float array (``dtype``), or a one-line error naming ``name``."""
    try:
        x = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise AtlasError(f"{name}: expected a numeric {expected} array (got {type(values).__name__})") from None
    if x.ndim != 2 or x.shape[1] == 0:
        hint = "; flatten the positions first, e.g. acts.transpose(0, 2, 3, 1).reshape(-1, C)" if x.ndim == 4 else ""
        raise AtlasError(f"{name}: expected a 2-D {expected} array (got shape {list(x.shape)}){hint}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise AtlasError(f"{name}: {int(bad.sum())} rows hold NaN or inf (first: row {int(np.flatnonzero(bad)[0])}); "
                         "drop or fix them first")
    return x


def _validated(model: type[_Config], values: dict[str, Any], where: str) -> _Config:
    """``model.model_validate(values)`` with the first problem as one line naming the parameter."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "(arguments)"
        message = first["msg"].removeprefix("Value error, ")
        raise AtlasError(f"{where}: {name}={values.get(name, first.get('input'))!r}: {message}") from None


def _check_colour(background: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(background)
    except (ValueError, AttributeError):
        raise AtlasError(f"background={background!r}: not a colour Pillow knows; pass e.g. '#ffffff' or 'white'") from None


def _model(model: ModelLike, layer: str | None, device: torch.device | None, where: str) -> LoadedModel:
    """``model`` as a LoadedModel on ``device``: loaded by name (local weights) or checked as given."""
    if isinstance(model, str):
        return load_classifier(model, layer, device=device)
    if not isinstance(model, LoadedModel):
        raise AtlasError(f"{where}: model must be a LoadedModel (load_classifier, Atlas.load_model) or a torchvision "
                         f"name such as 'mobilenet_v2' (got {type(model).__name__})")
    if device is not None and not _same_device(torch.device(device), model.device):
        raise AtlasError(f"{where}: device={device} but the model is on {model.device}; pass device=None "
                         f"or load the model with device={device}")
    return model


def _same_device(asked: torch.device, have: torch.device) -> bool:
    """``cuda`` matches ``cuda:0`` when 0 is the current device; otherwise type and index must agree."""
    if asked.type != have.type:
        return False
    if asked.index is None or have.index is None:
        current = torch.cuda.current_device() if asked.type == "cuda" and torch.cuda.is_available() else 0
        return (asked.index if asked.index is not None else current) == (have.index if have.index is not None else current)
    return asked.index == have.index


def _layer_channels(model: LoadedModel, layer: str, where: str) -> int:
    """Channels of ``layer``'s output (the model's own layer: known; another: one small forward)."""
    if layer == model.layer:
        return int(model.layer_shape[0])
    try:
        find_module(model.module, layer)
    except FeatureVisError:
        raise AtlasError(f"{where}: layer={layer!r} is not a module of {model.name}; `atlas layers {model.name}` "
                         f"lists them (this model's atlas layer is {model.layer!r})") from None
    with torch.no_grad(), layer_forward(model.module, layer, normalize=model.normalize) as forward:
        acts = forward(torch.full((1, 3, model.image_size, model.image_size), 0.5, device=model.device))[layer]
    if acts.ndim != 4:
        raise AtlasError(f"{where}: layer={layer!r} outputs shape {list(acts.shape[1:])}, not [C, H, W]; "
                         "choose a convolutional layer (`atlas layers`)")
    return int(acts.shape[1])


@contextmanager
def _engine_errors(where: str) -> Iterator[None]:
    """Turn the feature-visualization engine's errors into the project's one-line AtlasError."""
    try:
        yield
    except FeatureVisError as error:
        raise AtlasError(f"{where}: {error}") from None
