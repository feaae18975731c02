"""``atlas plot-layout``: a PNG of the normalised layout with one level's grid over it.

A check a person can look at before spending hours rendering: are the clusters separated, does
the grid resolve them, how many cells does the level keep. Up to ``SCATTER_MAX`` points are drawn
as small dots coloured by the dataset label or by each sample's top attributed class; beyond
that a log-density image (hist2d) is drawn instead, with a random ``SCATTER_MAX`` subsample of
coloured dots over it, so a 1M-point layout is still readable and fast to draw.

Uses matplotlib's object API (no pyplot), so it never touches a global backend or figure state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from store import derived
from store.errors import AtlasError

log = logging.getLogger(__name__)

SCATTER_MAX = 30_000
N_COLOURS = 20  # the most frequent groups get tab20 colours, the rest grey

ColorBy = Literal["label", "top_class"]


def row_groups(store: Any, rows: NDArray[np.int64], color_by: ColorBy) -> tuple[NDArray[np.int64], list[str]]:
    """Per laid-out row a group id (-1: unknown) and the names of the groups."""
    if color_by == "label":
        groups = np.asarray(store.row_labels(), dtype=np.int64)[rows]
        names = list(store.label_names)
        return groups, names
    if color_by == "top_class":
        idx, val = store.attribution_topk()
        idx_np = np.asarray(idx.compute())[rows]
        val_np = np.asarray(val.compute(), dtype=np.float32)[rows]
        val_np[idx_np < 0] = -np.inf
        best = np.argmax(val_np, axis=1)
        groups = idx_np[np.arange(len(rows)), best].astype(np.int64)
        return groups, list(store.class_names)
    raise AtlasError(f"--color-by {color_by!r}: choose one of: label, top_class")


def _colours(groups: NDArray[np.int64]) -> tuple[NDArray[np.float64], list[int]]:
    from matplotlib import colormaps

    known = groups[groups >= 0]
    values, counts = np.unique(known, return_counts=True)
    top = values[np.argsort(-counts, kind="stable")][:N_COLOURS].tolist()
    tab20 = colormaps["tab20"]
    palette = tab20(np.arange(tab20.N))[:, :3]  # its 20 RGB colours (the typed path to ListedColormap.colors)
    rgba = np.tile([0.6, 0.6, 0.6, 0.5], (len(groups), 1))
    for k, g in enumerate(top):
        rgba[groups == g] = (*palette[k % len(palette)], 0.8)
    return rgba, top


def _draw_grid(ax: Any, level: derived.CellLevel) -> None:
    n = level.n
    width = 0.6 if n <= 40 else 0.25
    edges = np.arange(n + 1) / n
    ax.vlines(edges, 0, 1, colors="black", linewidths=width, alpha=0.35)
    ax.hlines(edges, 0, 1, colors="black", linewidths=width, alpha=0.35)
    # outline the kept cells so dropped (sparse) regions stand out
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    cells = [Rectangle((i / n, j / n), 1 / n, 1 / n) for i, j in zip(level.i.tolist(), level.j.tolist())]
    ax.add_collection(PatchCollection(cells, facecolor="none", edgecolor="tab:red", linewidth=width, alpha=0.6))


def draw_layout(
    fig: Any,
    xy: NDArray[np.floating],
    groups: NDArray[np.int64],
    names: list[str],
    level: Any | None,
    title: str,
    legend: str,
    *,
    y_down: bool = False,
    seed: int = 0,
) -> Any:
    """Draw the layout on ``fig``: dots coloured by group (a log-density image under a subsample of
    ``SCATTER_MAX`` dots for large layouts), ``level``'s grid with kept cells outlined, a legend of
    the ten commonest groups. ``level`` is anything with ``n``, ``i``, ``j`` (a grid level).
    ``y_down`` puts y = 0 at the top, as the atlas images are drawn."""
    from matplotlib.colors import LogNorm

    ax = fig.add_subplot(1, 1, 1)
    shown = np.arange(len(xy))
    if len(xy) > SCATTER_MAX:
        ax.hist2d(xy[:, 0], xy[:, 1], bins=400, range=[[0, 1], [0, 1]], cmap="Greys", norm=LogNorm(), rasterized=True)
        shown = np.sort(np.random.default_rng(seed).choice(len(xy), SCATTER_MAX, replace=False))
    rgba, top = _colours(groups[shown])
    size = 4.0 if len(shown) < 5_000 else 1.0
    ax.scatter(xy[shown, 0], xy[shown, 1], s=size, c=rgba, linewidths=0, rasterized=True)
    if level is not None:
        _draw_grid(ax, level)
    handles = [ax.scatter([], [], s=20, color=rgba[groups[shown] == g][0][:3]) for g in top[:10]]
    labels = [names[g] if 0 <= g < len(names) else f"{legend} {g}" for g in top[:10]]
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, title=legend)
    ax.set(xlim=(0, 1), ylim=(1, 0) if y_down else (0, 1), aspect="equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_layout(store: Any, level: int | None, out_png: str | Path, color_by: ColorBy = "label", seed: int = 0) -> Path:
    """Write the layout scatter (or density) with the grid of ``level`` (None: no grid) to ``out_png``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = derived.read_layout(store)
    cell_level = derived.read_level(store, level, with_attribution=False) if level is not None else None
    groups, names = row_groups(store, layout.rows, color_by)
    xy = layout.layout
    fig = Figure(figsize=(9, 9), dpi=110)
    FigureCanvasAgg(fig)
    title = f"{len(xy):,} samples, {layout.info.method or '?'} (seed {'?' if layout.info.seed is None else layout.info.seed})"
    if cell_level is not None:
        title += f"; level {cell_level.n}: {len(cell_level)} cells with > {'?' if cell_level.info.min_count is None else cell_level.info.min_count} samples"
    draw_layout(fig, xy, groups, names, cell_level, title, color_by.replace("_", " "), seed=seed)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    log.info("wrote %s (%d points, colour by %s, level %s)", out, len(xy), color_by, level)
    return out
