"""What the notebook API returns: zoom levels and their cells, and an in-memory atlas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from pipeline.api.common import _TILES, _check_colour, _layout_figure, _png
from store import derived
from store.derived import Layout
from store.errors import AtlasError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    def from_cells(cls, cells: derived.CellLevel) -> Level:
        """The view of a level as the grid stage wrote it (:class:`store.derived.CellLevel`)."""
        return cls(
            n=cells.n,
            i=cells.i,
            j=cells.j,
            count=cells.count,
            direction=cells.direction,
            top_idx=cells.top_idx,
            top_val=cells.top_val,
            member_offsets=cells.member_offsets,
            member_rows=cells.member_rows,
            class_names=list(cells.class_names),
            min_count=int(cells.info.min_count or 0),
        )

    def __len__(self) -> int:
        return int(len(self.count))

    def __repr__(self) -> str:
        return f"<Level {self.n} x {self.n}: {len(self)} kept cells holding {int(self.count.sum())} rows>"

    def members(self, k: int) -> NDArray[np.int64]:
        """Row ids of the members of kept cell ``k`` (ascending)."""
        return self.member_rows[self.member_offsets[k] : self.member_offsets[k + 1]]

    def top_classes(self, k: int) -> list[tuple[str, float]]:
        """``(class name, mean attribution)`` of kept cell ``k``'s top classes, largest first."""
        names = self.class_names
        return [
            (names[c] if c < len(names) else str(c), float(v))
            for c, v in zip(self.top_idx[k].tolist(), self.top_val[k].tolist())
            if c >= 0
        ]

    def index(self, i: int, j: int) -> int:
        """Position among the kept cells of the cell at column ``i``, row ``j``."""
        if not (0 <= i < self.n and 0 <= j < self.n):
            raise AtlasError(f"cell (i={i}, j={j}) is outside level {self.n}: pass 0 <= i, j < {self.n}")
        hit = np.flatnonzero((self.i == i) & (self.j == j))
        if len(hit) == 0:
            raise AtlasError(
                f"cell (i={i}, j={j}) of level {self.n} is not kept (it holds <= min_count = {self.min_count} "
                f"samples); pick one of the {len(self)} kept cells, e.g. (i={int(self.i[0])}, j={int(self.j[0])}), "
                "see Level.records()"
                if len(self)
                else f"level {self.n} keeps no cell at all; lower min_count or use a coarser level"
            )
        return int(hit[0])

    def records(self) -> list[dict[str, Any]]:
        """One dict per kept cell (``cell, i, j, count, top_classes``): ``pandas.DataFrame(level.records())``."""
        return [
            {
                "cell": k,
                "i": int(self.i[k]),
                "j": int(self.j[k]),
                "count": int(self.count[k]),
                "top_classes": self.top_classes(k),
            }
            for k in range(len(self))
        ]


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
        return (
            f"<Cell {self.index} of level {self.level} at (i={self.i}, j={self.j}): {self.count} members; "
            f"top: {top}; {len(self.patches)} patches>"
        )

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
        return f"<AtlasResult of {len(self.layout.rows)} rows ({self.layout.info.method}); kept cells per level {{{kept}}}>"

    @property
    def levels(self) -> list[int]:
        """Cells per side of every level, ascending."""
        return sorted(self.cell_levels)

    def level(self, n: int) -> Level:
        if n not in self.cell_levels:
            raise AtlasError(
                f"level={n}: this result has levels {self.levels}; pass one of them (or grid=[...] to activation_atlas)"
            )
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

    def plot_layout(self, level: int | None = None) -> Figure:
        """The layout as a scatter coloured by each row's most attributed class, ``level``'s grid over it."""
        grid = self.level(level) if level is not None else None
        groups = self.groups if self.groups is not None else np.full(len(self.layout.rows), -1, np.int64)
        title = f"{len(self.layout.rows):,} rows, {self.layout.info.method or 'given embedding'}"
        return _layout_figure(self.layout.layout, groups, self.class_names, grid, title, "top class")

    def show_level(
        self,
        n: int,
        icons: ArrayLike,
        *,
        density_scaling: bool = _TILES.density_scaling,
        background: str = _TILES.background,
    ) -> Image.Image:
        """Level ``n`` composed from ``icons`` (e.g. ``render_directions(..., result.level(n).direction)``)."""
        return compose_level(self.level(n), icons, density_scaling=density_scaling, background=background)


def compose_level(
    level: Level,
    icons: ArrayLike,
    *,
    density_scaling: bool = _TILES.density_scaling,
    density: float = _TILES.density,
    background: str = _TILES.background,
) -> Image.Image:
    """One level's icons composed onto its ``n x S`` pixel canvas, as the tiles stage does.

    ``icons[k]`` (``uint8 [K, S, S, 3]``) is drawn centred in kept cell ``k``; with
    ``density_scaling`` a sparse cell's icon shrinks to ``min(1, sqrt(density x count / mean count))``
    of the cell (the production viewer's rule, docs/method.md §7); empty cells keep ``background``.
    """
    from stages.tiles.geometry import icon_scale
    from stages.tiles.pyramid import compose_canvas

    pixels = np.asarray(icons)
    if (
        pixels.dtype != np.uint8
        or pixels.ndim != 4
        or pixels.shape[0] != len(level)
        or pixels.shape[3] != 3
        or pixels.shape[1] != pixels.shape[2]
    ):
        raise AtlasError(
            f"icons: expected uint8 [cells={len(level)}, S, S, 3] (got {pixels.dtype} "
            f"{list(pixels.shape)}); pass one square RGB icon per kept cell, in the level's order"
        )
    if density <= 0:
        raise AtlasError(f"density={density}: must be > 0")
    _check_colour(background)
    scale = icon_scale(level.count, density, density_scaling)
    canvas, _ = compose_canvas(pixels, level.i, level.j, level.n, scale, background)
    return canvas
