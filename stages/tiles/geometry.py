"""Pure geometry of the exported atlas: icon sizes, cell and icon rectangles, the DZI pyramid.

No I/O here, so every number the tiles stage writes can be checked by hand on a small canvas.

Conventions (docs/export_format.md):

- a level of ``n`` cells per side is a square canvas of ``n * cell_px`` pixels; cell ``(i, j)``
  is column ``i`` (x) and row ``j`` (y, 0 at the top), the grid's convention (stages/grid/binning.py);
- rectangles are ``[x0, y0, x1, y1]``, in pixels on the canvas or as fractions of its side
  (= OpenSeadragon viewport coordinates when the canvas spans 0..1);
- the pyramid follows Microsoft's Deep Zoom (DZI) layout that OpenSeadragon reads: level
  ``max_level = ceil(log2(max side))`` is the full image, each level below halves it (rounding
  up) down to 1x1 at level 0, every level is cut into ``tile_size`` tiles and each tile is
  extended by ``overlap`` pixels on every side that has a neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


# --------------------------------------------------------------------------------- icons
def icon_scale(counts: NDArray[np.integer], density: float = 1.0, enabled: bool = True) -> NDArray[np.float64]:
    """Side of each cell's icon as a fraction of the cell side.

    docs/method.md §7: the production viewer scaled each icon by the cell's density,
    ``icon side = cell side x min(1, sqrt(density x n / mean n))``, with ``n`` the cell's count and
    ``mean n`` the mean count of the level's kept cells. With ``density`` 1 a cell holding the
    mean count (or more) gets the whole cell and a sparser one shrinks with the square root of
    its count, so the icon's *area* is proportional to its samples. ``enabled=False``
    (``tiles.density_scaling: false``) draws every icon at the full cell side.
    """
    n = np.asarray(counts, dtype=np.float64)
    if not enabled or n.size == 0:
        return np.ones(n.shape, np.float64)
    if density <= 0:
        raise ValueError(f"density must be positive (got {density})")
    mean = n.mean()
    if mean <= 0:
        return np.ones(n.shape, np.float64)
    return np.minimum(1.0, np.sqrt(density * n / mean))


def icon_pixel_sides(scale: NDArray[np.floating], cell_px: int) -> NDArray[np.int64]:
    """Icon side in whole pixels (at least 1), the size it is resized to on the canvas."""
    return np.clip(np.rint(np.asarray(scale, np.float64) * cell_px), 1, cell_px).astype(np.int64)


def cell_pixel_boxes(i: NDArray[np.integer], j: NDArray[np.integer], cell_px: int) -> NDArray[np.int64]:
    """``[K, 4]`` pixel rectangles ``[x0, y0, x1, y1]`` of the cells on the canvas."""
    x0 = np.asarray(i, np.int64) * cell_px
    y0 = np.asarray(j, np.int64) * cell_px
    return np.stack([x0, y0, x0 + cell_px, y0 + cell_px], axis=1)


def icon_pixel_boxes(
    i: NDArray[np.integer], j: NDArray[np.integer], cell_px: int, sides: NDArray[np.integer]
) -> NDArray[np.int64]:
    """``[K, 4]`` pixel rectangles of the icons: ``sides`` px squares centred in their cells.

    When ``cell_px - side`` is odd the extra pixel goes right/below (integer placement keeps the
    drawn icon and the ``icon_bounds`` written to cells.json exactly equal).
    """
    cells = cell_pixel_boxes(i, j, cell_px)
    s = np.asarray(sides, np.int64)
    offset = (cell_px - s) // 2
    x0, y0 = cells[:, 0] + offset, cells[:, 1] + offset
    return np.stack([x0, y0, x0 + s, y0 + s], axis=1)


def box_fractions(boxes: NDArray[np.integer], canvas_px: int) -> NDArray[np.float64]:
    """Pixel rectangles as fractions of a square canvas of ``canvas_px`` pixels."""
    return np.asarray(boxes, np.float64) / float(canvas_px)


# --------------------------------------------------------------------------------- DZI pyramid
@dataclass(frozen=True)
class DziGeometry:
    """The Deep Zoom pyramid of a ``width`` x ``height`` image (see the module docstring)."""

    width: int
    height: int
    tile_size: int = 256
    overlap: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive (got {self.width}x{self.height})")
        if self.tile_size < 1 or self.overlap < 0:
            raise ValueError(f"need tile_size >= 1 and overlap >= 0 (got {self.tile_size}, {self.overlap})")

    @property
    def max_level(self) -> int:
        """Index of the full-resolution level: ``ceil(log2(max side))``."""
        return math.ceil(math.log2(max(self.width, self.height)))

    @property
    def n_levels(self) -> int:
        return self.max_level + 1

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of pyramid level ``level``: the image halved ``max_level - level`` times, rounded up."""
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level must be in [0, {self.max_level}] (got {level})")
        scale = 2 ** (self.max_level - level)
        return -(-self.width // scale), -(-self.height // scale)

    def tile_grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_size(level)
        return -(-w // self.tile_size), -(-h // self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` of tile (col, row) at ``level``, overlap included.

        Interior edges are extended by ``overlap``; the image border is not; the last column and
        row are cut at the level's edge (the "edge tiles" are smaller than ``tile_size``).
        """
        w, h = self.level_size(level)
        cols, rows = self.tile_grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"tile ({col}, {row}) outside the {cols}x{rows} grid of level {level}")
        t, o = self.tile_size, self.overlap
        x0 = max(0, col * t - o)
        y0 = max(0, row * t - o)
        return x0, y0, min(w, (col + 1) * t + o), min(h, (row + 1) * t + o)

    def n_tiles(self) -> int:
        """Tiles in the whole pyramid."""
        return sum(c * r for c, r in (self.tile_grid(z) for z in range(self.n_levels)))

    def dzi_xml(self, fmt: str) -> str:
        """The ``.dzi`` descriptor OpenSeadragon reads (``fmt``: the tiles' file extension)."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">\n'
            f'  <Size Width="{self.width}" Height="{self.height}"/>\n</Image>\n'
        )
