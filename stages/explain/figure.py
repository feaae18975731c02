"""The one PNG of ``atlas explain``: photo, semantic dictionary, NMF overlay, group visualizations.

Layout (two rows of two panels)::

    [ the photo as the model sees it ] [ H x W grid: each position's nearest atlas-cell icon ]
    [ the photo + NMF groups overlay ] [ each group's feature visualization, colour-framed   ]

Drawing only (Pillow); the numbers come from :mod:`stages.explain.groups`. Text is set in DejaVu
Sans (the TrueType font matplotlib ships, so it is always installed): Pillow's built-in default
font draws spaces a pixel wide at this size ("nearestatlascell").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10, so the group colours are the ones people know from plots
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
_PAD = 12
_TITLE = 18
_LABEL = 28  # two lines of 11 px text under each group
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class ExplainPanels:
    """Everything the figure shows; ``grid`` is the layer's spatial size ``(H, W)``."""

    photo: Image.Image  # RGB, square, as fed to the model
    grid: tuple[int, int]
    cell: NDArray[np.int64]  # [H*W] nearest cell per position, -1: none
    icons: NDArray[np.uint8]  # [K, S, S, 3] the level's icons (cell order)
    level: int
    assignment: NDArray[np.int64]  # [H*W] NMF group per position, -1: none
    strength: NDArray[np.float32]  # [H*W] in [0, 1]
    group_images: NDArray[np.uint8]  # [G, s, s, 3]
    group_labels: list[str]


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px (matplotlib's bundled copy: a dependency, so never missing)."""
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
    return ImageFont.truetype(path, size)


def colour(group: int) -> tuple[int, int, int]:
    return PALETTE[group % len(PALETTE)]


def dictionary_panel(
    cell: NDArray[np.int64], icons: NDArray[np.uint8], grid: tuple[int, int], icon_px: int
) -> Image.Image:
    """The ``H x W`` mosaic: position (y, x) shows the icon of its nearest cell (blank: none)."""
    h, w = grid
    canvas = Image.new("RGB", (w * icon_px, h * icon_px), _BACKGROUND)
    cache: dict[int, Image.Image] = {}
    for p, c in enumerate(cell.tolist()):
        if c < 0:
            continue
        if c not in cache:
            cache[c] = Image.fromarray(icons[c]).resize((icon_px, icon_px), Image.Resampling.LANCZOS)
        y, x = divmod(p, w)
        canvas.paste(cache[c], (x * icon_px, y * icon_px))
    return canvas


def overlay_panel(
    photo: Image.Image,
    assignment: NDArray[np.int64],
    strength: NDArray[np.float32],
    grid: tuple[int, int],
    max_alpha: float = 0.7,
) -> Image.Image:
    """The photo with each position tinted by its group's colour, opacity = the group's strength."""
    h, w = grid
    rgb = np.zeros((h * w, 3), np.float32)
    alpha = np.zeros(h * w, np.float32)
    for p, g in enumerate(assignment.tolist()):
        if g >= 0:
            rgb[p] = colour(g)
            alpha[p] = max_alpha * float(strength[p])
    size = photo.size
    tint = Image.fromarray(rgb.reshape(h, w, 3).astype(np.uint8)).resize(size, Image.Resampling.NEAREST)
    mask = Image.fromarray((alpha.reshape(h, w) * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return Image.composite(tint, photo, mask)


def groups_panel(images: NDArray[np.uint8], labels: list[str], width: int, height: int) -> Image.Image:
    """Each group's visualization framed in its colour, with its label underneath."""
    panel = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(panel)
    small = font(11)
    g = len(images)
    cols = int(np.ceil(np.sqrt(g)))
    rows = int(np.ceil(g / cols))
    side = max(8, min((width - _PAD * (cols - 1)) // cols, (height - rows * _LABEL - _PAD * (rows - 1)) // rows))
    for k in range(g):
        r, c = divmod(k, cols)
        x0, y0 = c * (side + _PAD), r * (side + _LABEL + _PAD)
        draw.rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=colour(k))
        inner = Image.fromarray(images[k]).resize((side - 8, side - 8), Image.Resampling.LANCZOS)
        panel.paste(inner, (x0 + 4, y0 + 4))
        for line, text in enumerate(labels[k].split(", ", 1)):
            draw.text((x0, y0 + side + 2 + 12 * line), _fit(draw, text, side, small), fill=(0, 0, 0), font=small)
    return panel


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, face: ImageFont.FreeTypeFont) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    if draw.textlength(text, font=face) <= width:
        return text
    while text and draw.textlength(text + "\u2026", font=face) > width:
        text = text[:-1]
    return text + "\u2026"


def compose(panels: ExplainPanels, icon_px: int) -> Image.Image:
    """The whole figure (see the module docstring)."""
    photo = panels.photo
    side = photo.size[0]
    mosaic = dictionary_panel(panels.cell, panels.icons, panels.grid, icon_px)
    overlay = overlay_panel(photo, panels.assignment, panels.strength, panels.grid)
    right = max(mosaic.size[0], side)
    top = max(side, mosaic.size[1])
    groups = groups_panel(panels.group_images, panels.group_labels, right, side)
    width = _PAD + side + _PAD + right + _PAD
    height = _PAD + _TITLE + top + _PAD + _TITLE + side + _PAD
    figure = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(figure)
    title = font(13)
    x1, y0, y1 = _PAD + side + _PAD, _PAD, _PAD + _TITLE + top + _PAD
    titles = (
        ((_PAD, y0), "input, as the model sees it", side),
        ((x1, y0), f"nearest atlas cell, level {panels.level} ({panels.grid[0]}\u00d7{panels.grid[1]})", right),
        ((_PAD, y1), f"NMF groups of the activations ({len(panels.group_images)})", side),
        ((x1, y1), "each group's direction, rendered", right),
    )
    for xy, text, room in titles:  # cut with an ellipsis where a panel is narrower than its title
        draw.text(xy, _fit(draw, text, room, title), fill=(0, 0, 0), font=title)
    figure.paste(photo, (_PAD, y0 + _TITLE))
    figure.paste(mosaic, (x1, y0 + _TITLE))
    figure.paste(overlay, (_PAD, y1 + _TITLE))
    figure.paste(groups, (x1, y1 + _TITLE))
    return figure
