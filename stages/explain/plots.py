"""The figures of ``atlas explain`` beyond the dictionary PNG: attribution methods, building blocks,
channel view, sanity checks. Drawing only, with matplotlib's object API (``Figure`` + Agg canvas:
no pyplot, no global state); the numbers come from the other modules of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from stages.explain.figure import PALETTE
from stages.explain.methods import TITLES

_DPI = 100


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=_DPI, facecolor="white")
    return out


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def normalise(m: NDArray[np.floating], signed: bool = False) -> NDArray[np.float32]:
    """A map scaled for display: [0, 1] by its 99.5th percentile of |m| (signed: [-1, 1]), so one
    hot pixel does not wash the rest of the map out."""
    m = np.asarray(m, dtype=np.float32)
    top = float(np.percentile(np.abs(m), 99.5)) or float(np.abs(m).max()) or 1.0
    return np.clip(m / top, -1.0 if signed else 0.0, 1.0)


def overlay(ax, photo: NDArray[np.uint8], heat: NDArray[np.floating], signed: bool = False, alpha: float = 0.6) -> None:
    """The photo in grey under a heatmap (``inferno`` for magnitudes, ``RdBu_r`` for signed maps)."""
    grey = np.asarray(photo, np.float32).mean(axis=2)
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
    if signed:
        ax.imshow(normalise(heat, True), cmap="RdBu_r", vmin=-1, vmax=1, alpha=alpha)
    else:
        ax.imshow(normalise(heat), cmap="inferno", vmin=0, vmax=1, alpha=alpha)
    _off(ax)


SIGNED = {"gradient_x_input", "cam", "occlusion"}  # drawn red (+) / blue (-)


@dataclass(frozen=True)
class ClassColumn:
    index: int
    name: str
    probability: float


def attribution_figure(
    photo: NDArray[np.uint8],
    columns: list[ClassColumn],
    maps: dict[str, NDArray[np.float32]],
    pictures: dict[str, NDArray[np.float32]],
    methods: list[str],
    skipped: dict[str, str],
    out: Path,
    notes: dict[str, str] | None = None,
) -> Path:
    """Rows: methods; columns: the photo, then one class each (top-5 and any asked for by name).

    Guided backprop and the deconvnet are shown as the RGB gradient pictures of their papers;
    the other maps as heatmaps over the photo in grey (signed maps in red/blue).
    """
    notes = notes or {}
    rows = [m for m in methods if m in maps or m in skipped]
    n_cols = len(columns) + 1
    fig = _figure(1.75 * n_cols, 1.9 * len(rows) + 0.2)
    grid = fig.add_gridspec(
        len(rows),
        n_cols,
        left=0.09,
        right=0.995,
        top=1 - 0.45 / (1.9 * len(rows) + 0.2),
        bottom=0.01,
        wspace=0.04,
        hspace=0.22,
    )
    for r, method in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(photo)
        _off(ax)
        label = TITLES.get(method, method) + (f"\n{notes[method]}" if method in notes else "")
        ax.set_ylabel(label, fontsize=9.5, rotation=90, labelpad=4)
        if r == 0:
            ax.set_title("input", fontsize=9.5)
        for c, column in enumerate(columns):
            ax = fig.add_subplot(grid[r, c + 1])
            if method in skipped:
                _off(ax)
                if c == 0:
                    ax.text(
                        0.0,
                        0.5,
                        "not available:\n" + _wrap(skipped[method], 38),
                        fontsize=7.5,
                        va="center",
                        transform=ax.transAxes,
                    )
                continue
            if method in pictures:
                ax.imshow(pictures[method][c])
                _off(ax)
            else:
                overlay(ax, photo, maps[method][c], signed=method in SIGNED)
            if r == 0:
                ax.set_title(f"{_short(column.name)}\np = {column.probability:.2f}", fontsize=9)
    return _save(fig, out)


def _short(name: str, width: int = 20) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:6])


@dataclass(frozen=True)
class BlockRow:
    """One NMF group of the building-blocks figure."""

    extent: NDArray[np.float32]  # [h, w] the group's spatial weights
    rendered: NDArray[np.uint8]  # [s, s, 3] its direction, rendered
    cell_icon: NDArray[np.uint8]  # [S, S, 3] the icon of its nearest atlas cell
    cell_label: str  # "cell 123 (i, j), cos 0.61, 'tabby'"
    share: float  # fraction of positions assigned to it
    contributions: NDArray[np.float32]  # [K] its attribution to each class column


def blocks_figure(
    photo: NDArray[np.uint8], rows: list[BlockRow], classes: list[ClassColumn], level: int, out: Path
) -> Path:
    """Building Blocks (Olah et al., 2018): per NMF group, where it is, what it looks like, which
    atlas cell it is nearest, and how much it adds to each top class's logit."""
    n = len(rows)
    fig = _figure(11.5, 2.25 * n + 0.5)
    top = 1 - 0.5 / (2.25 * n + 0.5)
    grid = fig.add_gridspec(
        n, 4, width_ratios=[1, 1, 1, 2.3], left=0.055, right=0.85, top=top, bottom=0.03, wspace=0.12, hspace=0.32
    )
    scale = max(float(np.abs(np.stack([r.contributions for r in rows])).max()), 1e-9)
    heads = [
        "where (NMF factor)",
        "its direction, rendered",
        f"nearest atlas cell (level {level})",
        "contribution to each class logit",
    ]
    for g, row in enumerate(rows):
        colour = np.asarray(PALETTE[g % len(PALETTE)]) / 255.0
        ax = fig.add_subplot(grid[g, 0])
        overlay(ax, photo, _upsample(row.extent, photo.shape[:2]))
        ax.set_ylabel(f"group {g + 1}\n{row.share:.0%} of positions", fontsize=9.5, color=colour)
        for k, (image, text) in enumerate(((row.rendered, None), (row.cell_icon, row.cell_label))):
            ax = fig.add_subplot(grid[g, 1 + k])
            ax.imshow(image)
            _off(ax)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(colour)
                spine.set_linewidth(3)
            if text:
                ax.set_xlabel(_wrap(text, 30), fontsize=8)
        ax = fig.add_subplot(grid[g, 3])
        y = np.arange(len(classes))
        ax.barh(y, row.contributions, color=[colour if v >= 0 else (0.6, 0.6, 0.6) for v in row.contributions])
        ax.set_yticks(y, [_short(c.name, 22) for c in classes], fontsize=8.5)
        ax.invert_yaxis()
        ax.set_xlim(-scale * 1.05, scale * 1.05)
        ax.axvline(0, color="black", linewidth=0.6)
        ax.tick_params(axis="x", labelsize=8)
        ax.yaxis.tick_right()
        for side in ("top", "left"):
            ax.spines[side].set_visible(False)
        if g == 0:
            for ax_, text in zip(fig.axes[-4:], heads):
                ax_.set_title(text, fontsize=10)
    return _save(fig, out)


def _upsample(m: NDArray[np.floating], size: tuple[int, int]) -> NDArray[np.float32]:
    from PIL import Image

    h, w = size
    image = Image.fromarray(np.asarray(m, np.float32), mode="F")
    return np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), np.float32)


@dataclass(frozen=True)
class ChannelRow:
    """One channel of the channel view."""

    channel: int
    mean: float  # its spatial mean activation on this image
    activation: NDArray[np.float32]  # [h, w]
    rendered: NDArray[np.uint8]  # [s, s, 3] feature visualization
    patches: list[NDArray[np.uint8]]  # top dataset patches


def channels_figure(photo: NDArray[np.uint8], rows: list[ChannelRow], layer: str, patches: int, out: Path) -> Path:
    """DeepVis (Yosinski et al., 2015) as a static figure: the image's strongest channels, each with
    its activation map, its feature visualization and its top dataset patches."""
    n = len(rows)
    cols = 2 + max(patches, 1)
    fig = _figure(1.6 * cols + 0.6, 1.7 * n + 0.45)
    top = 1 - 0.45 / (1.7 * n + 0.45)
    grid = fig.add_gridspec(n, cols, left=0.08, right=0.995, top=top, bottom=0.01, wspace=0.05, hspace=0.12)
    for r, row in enumerate(rows):
        ax = fig.add_subplot(grid[r, 0])
        overlay(ax, photo, _upsample(row.activation, photo.shape[:2]))
        ax.set_ylabel(f"channel {row.channel}\nmean {row.mean:.2f}", fontsize=9)
        ax = fig.add_subplot(grid[r, 1])
        ax.imshow(row.rendered)
        _off(ax)
        for k in range(patches):
            ax = fig.add_subplot(grid[r, 2 + k])
            _off(ax)
            if k < len(row.patches):
                ax.imshow(row.patches[k])
        if r == 0:
            fig.axes[0].set_title("activation on the image", fontsize=9.5)
            fig.axes[1].set_title("feature visualization", fontsize=9.5)
            if patches:
                fig.axes[2].set_title("top dataset patches \u2192", fontsize=9.5, loc="left")
    fig.suptitle(f"strongest channels of {layer}", fontsize=10.5, y=0.999, va="top")
    return _save(fig, out)


def sanity_figure(photo: NDArray[np.uint8], report, out: Path, columns: int = 6) -> Path:
    """Adebayo et al. (2018), Fig. 2 style: each method's map on the trained model and after
    randomizing more and more blocks from the top, with the rank-correlation curves underneath."""
    methods = [m for m in report.methods if report.maps.get(m)]
    steps = report.steps
    picks = sorted({round(k * (len(steps) - 1) / max(columns - 2, 1)) for k in range(columns - 1)}) if steps else []
    n_cols = 1 + len(picks)
    height = 1.45 * len(methods) + 2.9
    fig = _figure(1.45 * (n_cols + 1) + 0.4, height)
    grid = fig.add_gridspec(
        len(methods) + 1,
        n_cols + 1,
        height_ratios=[1] * len(methods) + [1.6],
        left=0.1,
        right=0.99,
        top=1 - 0.5 / height,
        bottom=0.08,
        wspace=0.05,
        hspace=0.25,
    )
    for r, m in enumerate(methods):
        maps = report.maps[m]
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(photo)
        _off(ax)
        ax.set_ylabel(TITLES.get(m, m), fontsize=9)
        for c, k in enumerate([None, *picks]):
            ax = fig.add_subplot(grid[r, c + 1])
            data = maps[0] if k is None else maps[k + 1]
            ax.imshow(normalise(np.abs(data)), cmap="inferno", vmin=0, vmax=1)
            _off(ax)
            if r == 0:
                ax.set_title("trained" if k is None else f"\u2192 {steps[k]}", fontsize=8)
            if k is not None:
                ax.set_xlabel(f"\u03c1 = {report.cascade[m][k]:.2f}", fontsize=8)
    ax = fig.add_subplot(grid[len(methods), :])
    x = np.arange(1, len(steps) + 1)
    for m in report.methods:
        ax.plot(x, report.cascade[m], marker="o", markersize=3, label=TITLES.get(m, m))
    ax.axhline(report.threshold, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, steps, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("rank correlation\nwith trained map", fontsize=8.5)
    ax.set_ylim(-0.5, 1.05)
    ax.legend(fontsize=7.5, ncol=3, loc="lower left")
    ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"cascading randomization, class {report.target_name!r}", fontsize=10.5, y=0.999, va="top")
    return _save(fig, out)
