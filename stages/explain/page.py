"""The HTML page of one explained image, written inside the exported atlas folder.

``<atlas>/explain/<slug>/index.html`` shows the figures of ``atlas explain`` and links every
spatial position of the semantic dictionary, and every NMF group, to its nearest cell in the main
atlas. The page is listed in ``atlases.json`` (kind ``explain``, with a ``page`` field), so the
viewer's atlas picker opens it.

Cell links: ``../../index.html#atlas=main&level=N&cell=N:K`` (``K``: the cell's number in that
level's ``cells.json``, the ``cell`` field), the viewer's view-restoring hash (docs/viewer.md)
with only the atlas, the level and the selected cell given. A viewer that reads those keys opens
that cell; an older one that takes the whole hash as an atlas id does not find it and opens the
first atlas (the main one), so the link degrades to "the atlas" rather than to an error.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

EXPLAIN_FOLDER = "explain"


def page_slug(image: str | Path) -> str:
    """``<stem>-<6 hex>``: readable, and two photos with one file name never share a page."""
    path = Path(image).resolve()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")[:40] or "image"
    return f"{stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def cell_link(level: int, cell: int, atlas_id: str = "main", root: str = "../../") -> str:
    """The viewer URL of one cell (see the module docstring for the format)."""
    return f"{root}index.html#atlas={atlas_id}&level={level}&cell={level}:{cell}"


@dataclass(frozen=True)
class GroupEntry:
    label: str
    cell: int
    cosine: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class PageContent:
    image_name: str
    model: str
    layer: str
    level: int
    grid: tuple[int, int]
    predictions: list[tuple[str, float]]
    cell: NDArray[np.int64]  # [h*w] nearest cell per position, -1 none
    cosine: NDArray[np.float32]  # [h*w]
    cell_names: list[str]  # top class of each cell of the level ("" none)
    cell_ij: list[tuple[int, int]]  # grid position of each cell
    groups: list[GroupEntry]
    figures: dict[str, Path]  # caption -> PNG written by the stage
    dictionary_png: Path  # the mosaic alone, the clickable map's background
    notes: list[str]


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #ddd}
header h1{font-size:19px;margin:0 0 4px}
main{padding:8px 20px 40px;max-width:1400px}
h2{font-size:17px;margin:26px 0 8px}
figure{margin:8px 0 18px}
figure img{max-width:100%;border:1px solid #ddd;background:#fff}
figcaption{font-size:13px;color:#555}
.mosaic{position:relative;display:inline-block;border:1px solid #ddd}
.mosaic img{display:block;width:100%;height:100%}
.mosaic a{position:absolute;box-sizing:border-box}
.mosaic a:hover{outline:2px solid #ff7f0e;z-index:2}
table{border-collapse:collapse;font-size:14px}
td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
.note{color:#8a5a00}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(content: PageContent, files: dict[str, str], dictionary_file: str, mosaic_px: int) -> str:
    """The page's HTML; ``files`` maps each figure caption to its file name next to the page."""
    h, w = content.grid
    side = mosaic_px / max(h, w)
    areas = []
    for p, c in enumerate(content.cell.tolist()):
        if c < 0:
            continue
        y, x = divmod(p, w)
        i, j = content.cell_ij[c]
        name = content.cell_names[c]
        title = (
            f"position ({y}, {x}) \u2192 cell {c} at ({i}, {j}) of level {content.level}, "
            f"cosine {float(content.cosine[p]):.2f}" + (f", '{name}'" if name else "")
        )
        areas.append(
            f'<a href="{_esc(cell_link(content.level, c))}" title="{_esc(title)}" '
            f'style="left:{x * side:.2f}px;top:{y * side:.2f}px;width:{side:.2f}px;height:{side:.2f}px"></a>'
        )
    preds = "".join(
        f"<tr><td>{k + 1}</td><td>{_esc(n)}</td><td>{p:.3f}</td></tr>" for k, (n, p) in enumerate(content.predictions)
    )
    groups = "".join(
        f'<tr><td><span class="swatch" style="background:rgb{g.colour}"></span>{_esc(g.label)}</td>'
        f'<td><a href="{_esc(cell_link(content.level, g.cell))}">cell {g.cell}</a> '
        f"({content.cell_ij[g.cell][0]}, {content.cell_ij[g.cell][1]}), cosine {g.cosine:.2f}"
        f"{', ' + _esc(repr(content.cell_names[g.cell])) if content.cell_names[g.cell] else ''}</td></tr>"
        for g in content.groups
        if g.cell >= 0
    )
    figures = "".join(
        f'<figure><img src="{_esc(f)}" alt="{_esc(cap)}" loading="lazy"><figcaption>{_esc(cap)}</figcaption></figure>'
        for cap, f in files.items()
    )
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in content.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>explain {_esc(content.image_name)}</title><link rel="icon" href="data:,"><style>{_STYLE}</style></head>
<body><header><h1>{_esc(content.image_name)} through the atlas</h1>
<div>{_esc(content.model)} \u00b7 {_esc(content.layer)} \u00b7 level {content.level} \u00b7
<a href="../../index.html">back to the atlas</a></div></header>
<main>{notes}
<h2>Top predictions</h2><table><tr><th>#</th><th>class</th><th>probability</th></tr>{preds}</table>
<h2>Semantic dictionary: each position's nearest atlas cell</h2>
<p>Each square is one of the layer's {h}\u00d7{w} positions, drawn as the icon of the atlas cell whose direction
is nearest (cosine). Click one to open that cell in the atlas.</p>
<div class="mosaic" style="width:{mosaic_px}px;height:{mosaic_px}px"><img src="{_esc(dictionary_file)}"
alt="nearest atlas cell per position">{"".join(areas)}</div>
<h2>NMF groups and their nearest cells</h2><table><tr><th>group</th><th>nearest atlas cell</th></tr>{groups}</table>
{figures}
</main></body></html>
"""


def write_page(folder: Path, content: PageContent, mosaic_px: int) -> Path:
    """Copy the figures into ``folder`` and write its ``index.html``; returns the page."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for caption, png in content.figures.items():
        target = folder / Path(png).name
        if Path(png).resolve() != target.resolve():
            shutil.copyfile(png, target)
        files[caption] = target.name
    dictionary = folder / "dictionary.png"
    if Path(content.dictionary_png).resolve() != dictionary.resolve():
        shutil.copyfile(content.dictionary_png, dictionary)
    page = folder / "index.html"
    tmp = folder / ".index.html.tmp"
    tmp.write_text(render_html(content, files, dictionary.name, mosaic_px))
    tmp.replace(page)
    return page
