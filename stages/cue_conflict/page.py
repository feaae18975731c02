"""The cue-conflict page in the atlas folder: shape bias with its counts, and where texture wins on the atlas.

``<atlas>/experiments/cue-conflict/index.html``, listed in ``atlases.json`` (kind ``experiment``,
with a ``page`` field) so the viewer's picker opens it. The map is the level's icons with every
cell that stimulus positions landed in tinted from blue (all shape) to red (all texture), more
opaque the more positions it holds; each such cell links to itself in the main atlas.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from stages.sections import CueConflictSection
from store import derived
from store.errors import AtlasError
from store.icons import IconStore
from store.view import RowStore

if TYPE_CHECKING:
    from stages.cue_conflict.result import CueConflictResult

log = logging.getLogger(__name__)

FOLDER = "experiments/cue-conflict"
PUBLISHED = "ResNet-50 21.4%, AlexNet 25.3%, VGG-16 9.2%, humans about 96% (Geirhos et al. 2019, all 1,280 stimuli)"
CELL_PX = 48


def texture_colour(share: float) -> tuple[int, int, int]:
    """Blue (0: every position shape) to red (1: every position texture), through grey."""
    s = float(np.clip(share, 0.0, 1.0))
    blue, grey, red = np.array([40, 90, 230]), np.array([150, 150, 150]), np.array([230, 50, 40])
    c = blue + (grey - blue) * (2 * s) if s < 0.5 else grey + (red - grey) * (2 * s - 1)
    return tuple(int(v) for v in c)  # type: ignore[return-value]


def level_icons(store: RowStore, level: int) -> NDArray[np.uint8] | None:
    """The level's icons when they are all rendered, else None (the map then shows plain cells)."""
    path = store.derived_path("icons")
    if not IconStore.exists(path):
        return None
    try:
        icons = IconStore.open(path)
        if level in icons.levels and icons.complete(level):
            return icons.read_level(level).icons
    except AtlasError:
        pass
    return None


def atlas_map(
    n: int,
    ij: list[tuple[int, int]],
    icons: NDArray[np.uint8] | None,
    counts: NDArray[np.int64],
    texture: NDArray[np.float64],
) -> Image.Image:
    """The level as an image (y up, like the viewer), with the stimuli's cells tinted by texture share."""
    img = Image.new("RGB", (n * CELL_PX, n * CELL_PX), (245, 245, 245))
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    top = max(1, int(counts.max())) if len(counts) else 1
    for c, (i, j) in enumerate(ij):
        x0, y0 = i * CELL_PX, (n - 1 - j) * CELL_PX
        if icons is not None:
            img.paste(Image.fromarray(icons[c]).resize((CELL_PX, CELL_PX), Image.Resampling.LANCZOS), (x0, y0))
        else:
            draw.rectangle([x0 + 1, y0 + 1, x0 + CELL_PX - 2, y0 + CELL_PX - 2], fill=(200, 200, 200, 255))
        if counts[c] > 0:
            alpha = int(90 + 140 * np.sqrt(counts[c] / top))
            draw.rectangle([x0, y0, x0 + CELL_PX - 1, y0 + CELL_PX - 1], fill=(*texture_colour(texture[c]), alpha))
    img.paste(overlay, (0, 0), overlay)
    return img


def _rate(d: dict[str, object], key: str = "shape_bias") -> str:
    value, interval = d[key], d["interval95"]
    if not isinstance(value, int | float) or not isinstance(interval, list | tuple):
        return "n/a"  # no stimuli of that kind: no rate (the report's null)
    lo, hi = interval
    return f"{100 * float(value):.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"


def _table(rows: dict[str, dict[str, object]], head: str) -> str:
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['shape']}</td><td>{v['texture']}</td><td>{v['other']}</td>"
        f"<td>{_rate(v)}</td></tr>"
        for k, v in rows.items()
    )
    return (
        f"<table><tr><th>{head}</th><th>shape</th><th>texture</th><th>other</th><th>shape bias</th></tr>{body}</table>"
    )


def render_html(
    data: dict[str, Any], n: int, cells: list[tuple[int, str, int, float]], thumbs: list[tuple[str, str]]
) -> str:
    overall = data["shape_bias"]
    assert isinstance(overall, dict)
    atlas = data.get("atlas") or {}
    assert isinstance(atlas, dict)
    pos = atlas.get("positions") or {}
    leans = atlas.get("stimuli") or {}
    cell_rows = "".join(
        f'<tr><td><a href="../../index.html#atlas=main&level={n}&cell={n}:{c}">cell {c}</a></td><td>{k}</td>'
        f'<td style="color:rgb{texture_colour(t)}">{100 * t:.0f}% texture</td><td>{html.escape(name)}</td></tr>'
        for c, name, k, t in cells
    )
    thumb_html = "".join(
        f'<figure><img src="{src}" alt=""><figcaption>{html.escape(cap)}</figcaption></figure>' for src, cap in thumbs
    )
    atlas_html = "<p>No atlas given: run with a store that has a layout and a grid to see where the stimuli land.</p>"
    if pos:
        atlas_html = (
            f"<p>Each stimulus's interior positions at <code>{html.escape(str(data['layer']))}</code> are placed on the "
            f"atlas like the reduce stage places rows (nearest fitted row), at level {n}. A position counts as "
            f"<b>shape</b> or <b>texture</b> when the first of its cell's top {atlas.get('top_classes')} attributed classes "
            f"that belongs to either category belongs to that one. Positions: shape {pos['shape']}, texture "
            f"{pos['texture']}, neither {pos['neither']}, in a dropped cell {pos['off']}; shape share "
            f"{_rate(pos, 'shape_share')} (positions of one image are not independent: the per-stimulus count is the "
            f"safer figure). Stimuli whose positions lean to shape: {leans.get('shape')}, to texture: "
            f"{leans.get('texture')}, tied: {leans.get('tie')}.</p>"
            f'<img class="map" src="atlas_map.png" alt="the atlas with the stimuli\'s cells tinted by texture share">'
            f"<p>Blue: the positions landing there read as the shape category; red: as the texture category; "
            f"more opaque: more positions.</p>"
            f"<table><tr><th>cell</th><th>positions</th><th>texture share</th><th>top class</th></tr>{cell_rows}</table>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Texture vs shape: {html.escape(str(data["model"]))}</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}
img.map{{max-width:100%;image-rendering:pixelated;border:1px solid #999}}
figure{{display:inline-block;margin:3px;width:96px;font-size:10px}}figure img{{width:96px;height:96px}}</style></head>
<body><p><a href="../../index.html">back to the atlas</a></p>
<h1>Texture vs shape: {html.escape(str(data["model"]))}</h1>
<p>Cue-conflict stimuli of Geirhos et al. (ICLR 2019): one category's shape in another's texture. Recipe:
each of the 16 categories is scored by the mean probability of its ImageNet classes, the decision is the
best category, stimuli whose shape and texture category agree are left out, shape bias = shape / (shape +
texture).</p>
<p><b>Shape bias {_rate(overall)}</b>: shape {overall["shape"]}, texture {overall["texture"]}, other
{overall["other"]} of {overall["total"]} cue-conflict stimuli ({overall["left_out"]} same-category left out).
Published: {PUBLISHED}.</p>
<h2>Per shape category</h2>{_table(data["by_shape_category"], "shape category")}
<h2>Per texture category</h2>{_table(data["by_texture_category"], "texture category")}
<h2>On the atlas</h2>{atlas_html}
<h2>Stimuli</h2><p>Caption: shape-texture, the model's 16-class decision.</p>{thumb_html}
</body></html>
"""


def write_page(config: CueConflictSection, store: RowStore, result: CueConflictResult) -> Path | None:
    """Write the page (and register it in ``atlases.json``); None, with a warning, without an exported atlas."""
    from stages.cue_conflict.result import report
    from stages.tiles.export import update_index
    from stages.tiles.source import page_entry

    atlas = Path(config.data.atlas)
    if not (atlas / "atlases.json").exists():
        log.warning("cue_conflict.page: %s holds no exported atlas (run `atlas tiles`); no HTML page written", atlas)
        return None
    folder = atlas / FOLDER
    (folder / "stimuli").mkdir(parents=True, exist_ok=True)
    data = report(result)
    cells: list[tuple[int, str, int, float]] = []
    n = result.level or 0
    if result.cell_counts is not None and result.cell_texture is not None:
        level = derived.read_level(store, n, with_attribution=False)
        ij = list(zip(level.i.tolist(), level.j.tolist()))
        atlas_map(n, ij, level_icons(store, n), result.cell_counts, result.cell_texture).save(folder / "atlas_map.png")
        names = level.top_names()
        order = np.argsort(-result.cell_counts, kind="stable")
        cells = [
            (int(c), names[c][0] if names[c] else "", int(result.cell_counts[c]), float(result.cell_texture[c]))
            for c in order[:20]
            if result.cell_counts[c] > 0
        ]
    thumbs = []
    for r in result.stimuli:
        name = f"stimuli/{r.stimulus.path.stem}.jpg"
        with Image.open(r.stimulus.path) as im:
            im.convert("RGB").resize((96, 96), Image.Resampling.LANCZOS).save(folder / name, quality=85)
        thumbs.append((name, f"{r.stimulus.shape}-{r.stimulus.texture}: {r.decision}"))
    page = folder / "index.html"
    tmp = folder / ".index.html.tmp"
    tmp.write_text(render_html(data, n, cells, thumbs))
    tmp.replace(page)
    entry = page_entry(
        FOLDER,
        "experiment",
        "texture vs shape (cue conflict)",
        icon_px=CELL_PX,
        model=store.model.entry(),
        index={"page": f"{FOLDER}/index.html"},
    )
    update_index(atlas, entry)
    return page
