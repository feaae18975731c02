"""Pixels of one exported level: the icon canvas and its Deep Zoom (DZI) pyramid, with Pillow.

The canvas is composed in memory (``Image.fromarray``), so Pillow's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``, checked by ``Image.open`` only) never applies to it and is left
untouched; input photos elsewhere keep that protection. Pillow writes a 4096^2 pyramid in
~0.8 s and a 16384^2 one in ~7 s (docs/method.md §10), so a level of 160 cells at 80 px
(12,800^2) is seconds, with memory of about two canvases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageColor

from stages.tiles.geometry import DziGeometry, icon_pixel_boxes, icon_pixel_sides

_SAVE_OPTIONS = {"jpg": {"format": "JPEG", "optimize": False}, "webp": {"format": "WEBP", "method": 2}}


def compose_canvas(
    icons: NDArray[np.uint8],
    i: NDArray[np.integer],
    j: NDArray[np.integer],
    n: int,
    scale: NDArray[np.floating],
    background: str,
) -> tuple[Image.Image, NDArray[np.int64]]:
    """The level's square canvas (``n * S`` px for ``S`` px icons) and each icon's pixel box.

    Every kept cell's icon is resized to ``round(scale * S)`` px (Lanczos) and centred in its
    cell; cells without an icon keep the ``background`` colour.
    """
    k, s = icons.shape[0], icons.shape[1]
    canvas = np.empty((n * s, n * s, 3), np.uint8)
    canvas[:] = np.asarray(ImageColor.getrgb(background)[:3], np.uint8)
    sides = icon_pixel_sides(scale, s)
    boxes = icon_pixel_boxes(i, j, s, sides)
    for c in range(k):
        x0, y0, x1, y1 = (int(v) for v in boxes[c])
        icon = icons[c]
        if sides[c] != s:
            icon = np.asarray(Image.fromarray(icon).resize((int(sides[c]), int(sides[c])), Image.Resampling.LANCZOS))
        canvas[y0:y1, x0:x1] = icon
    return Image.fromarray(canvas), boxes


def pyramid_levels(image: Image.Image, geometry: DziGeometry) -> list[tuple[int, Image.Image]]:
    """``(level, image)`` from the full image down to 1x1, each level made from the one above.

    Halving from the previous level (not from the full image each time) keeps the cost to about
    one third of a full resize, and the antialiased resample avoids the aliasing of nearest.
    """
    out = [(geometry.max_level, image)]
    current = image
    for z in range(geometry.max_level - 1, -1, -1):
        current = current.resize(geometry.level_size(z), Image.Resampling.LANCZOS)
        out.append((z, current))
    return out


def write_dzi(
    image: Image.Image,
    dzi_path: Path,
    geometry: DziGeometry,
    fmt: str,
    quality: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``<name>.dzi`` and ``<name>_files/<level>/<col>_<row>.<fmt>``; returns the tile count.

    ``progress(k)`` is called after each pyramid level with the ``k`` tiles it wrote.
    """
    if image.size != (geometry.width, geometry.height):
        raise ValueError(f"image is {image.size}, geometry says {geometry.width}x{geometry.height}")
    files = dzi_path.with_name(dzi_path.stem + "_files")
    options: dict[str, Any] = {**_SAVE_OPTIONS[fmt], "quality": quality}
    written = 0
    for z, level in pyramid_levels(image, geometry):
        folder = files / str(z)
        folder.mkdir(parents=True, exist_ok=True)
        cols, rows = geometry.tile_grid(z)
        for row in range(rows):
            for col in range(cols):
                level.crop(geometry.tile_box(z, col, row)).save(folder / f"{col}_{row}.{fmt}", **options)
        written += cols * rows
        if progress is not None:
            progress(cols * rows)
    dzi_path.write_text(geometry.dzi_xml(fmt))
    return written
