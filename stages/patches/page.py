"""The page of one direction in the atlas folder: the table, the figure, the patches, the photos.

``<atlas>/experiments/patches/<a>-to-<b>/index.html``, listed in ``atlases.json`` (kind ``experiment``,
``page`` and ``atlas``: the comparison atlas the patches were read from), so the viewer's picker lists
it under "experiments"; the page links back to the comparison atlas and to each patch's cell in it.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from stages.sections import PatchesSection
from store.atlas_store import AtlasStore

if TYPE_CHECKING:
    from stages.patches.candidates import Comparison
    from stages.patches.stage import Direction

FOLDER = "experiments/patches"


def pct(rate: dict[str, Any] | None) -> str:
    if not rate or not rate["n"]:
        return "n/a"
    lo, hi = rate["interval95"]
    return f"{100 * rate['rate']:.0f}% ({rate['k']}/{rate['n']}; 95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"


def prob(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table_rows(report: dict[str, Any], atlas_id: str, level: int) -> str:
    rows = []
    for k, p in enumerate(report["patches"]):
        cell = (
            (
                f'<a href="../../../index.html#atlas={html.escape(atlas_id)}&level={level}&cell={level}:{p["cell"]}">'
                f"cell {p['cell']}</a>"
            )
            if p.get("cell") is not None
            else ""
        )
        rows.append(
            f'<tr><td><img src="patches/{k}.png" alt=""></td><td>{html.escape(p["name"])} ({p["kind"]})<br>{cell}'
            f"</td><td>{pct(p['dynamic'])}</td><td>{pct(p['static'])}</td>"
            f"<td>{prob(p['p_b_before'])} &rarr; {prob(p['p_b_after_dynamic'])} / {prob(p['p_b_after_static'])}</td>"
            f"<td>{'yes' if p['works'] else 'no'}</td><td>{p['rank_score']:+.2f}</td></tr>"
        )
    for kind, c in (
        ("uniform noise", report["controls"]["noise"]),
        ("random cell (not on B's side)", report["controls"]["random_cell"]),
    ):
        if c:
            rows.append(
                f'<tr class="control"><td></td><td>control: {kind} ({c["patches"]} patches, pooled)</td>'
                f"<td>{pct(c['dynamic'])}</td><td>{pct(c['static'])}</td>"
                f"<td>{prob(report['overall']['p_b_before'])} &rarr; {prob(c['p_b_after_dynamic'])} / "
                f"{prob(c['p_b_after_static'])}</td><td></td><td></td></tr>"
            )
    return "".join(rows)


def render_html(report: dict[str, Any], published: str, level: int) -> str:
    a, b = report["a"]["name"], report["b"]["name"]
    o, ph, pr = report["overall"], report["photos"], report["protocol"]
    atlas_id = report["comparison_atlas"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Patches: {html.escape(a)} -> {html.escape(b)}</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:1150px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right;vertical-align:middle}}td:nth-child(2){{text-align:left}}
td img{{width:56px;height:56px;image-rendering:auto}}tr.control{{background:#f4f4f4}}img.fig{{max-width:100%}}</style>
</head><body><p><a href="../../../index.html">back to the atlas</a> &middot;
<a href="../../../index.html#atlas={html.escape(atlas_id)}">the comparison atlas {html.escape(atlas_id)}</a></p>
<h1>Patches found on a comparison atlas: photos of {html.escape(a)} &rarr; {html.escape(b)}</h1>
<p>Carter et al. (2019) read features that push toward one class off the comparison atlas of two classes and
pasted pictures of them onto photos of the other. Here the candidates are not chosen by hand: the
cells farthest toward <b>{html.escape(b)}</b> on the comparison axis, each as its dataset-example crops and its
icon, ranked by the mean {html.escape(b)}-minus-{html.escape(a)} logit gain on {len(ph["rank"])} photo(s) kept
apart; the best {o["patches"]} were measured on the other {len(ph["test"])} test photo(s). Only photos the model
classifies as {html.escape(a)} beforehand count ({ph["classified_a"]} of {ph["given"]} from {html.escape(ph["from"])}).
Each patch is a square of side r &times; the input side, r in {", ".join(f"{r:g}" for r in pr["sizes"])},
at each of the four corners. <b>Dynamic</b>: the best corner and size per photo; <b>static</b>:
{pr["static"]["corner"].replace("_", " ")} at r = {pr["static"]["r"]:g} for every photo. Success: the top-1 becomes
{html.escape(b)}. A patch <b>works</b> when the lower end of its dynamic 95% Wilson interval is above the noise
control's dynamic rate.</p>
<p><b>Overall</b> ({o["patches"]} patches x {len(ph["test"])} test photos, pooled pairs, not independent):
dynamic {pct(o["dynamic"])}, static {pct(o["static"])}; P({html.escape(b)}) {prob(o["p_b_before"])} &rarr;
{prob(o["p_b_after_dynamic"])} (dynamic) / {prob(o["p_b_after_static"])} (static); patches that work: {o["works"]}.
With so few test photos the intervals are wide: this shows what the atlas proposes, not a rate.</p>
<p>Published: {html.escape(published)}.</p>
<table><tr><th>patch</th><th>what</th><th>dynamic</th><th>static</th><th>P({html.escape(b)}) before &rarr; dynamic / static</th>
<th>works</th><th>rank score</th></tr>{table_rows(report, atlas_id, level)}</table>
<img class="fig" src="figure.png" alt="patches, their cells' icons, test photos before and after">
<p>Ranking photos: {html.escape(", ".join(Path(p).name for p in ph["rank"]))}; test photos:
{html.escape(", ".join(Path(p).name for p in ph["test"]))}; left out (not classified {html.escape(a)}):
{html.escape(", ".join(Path(p).name for p in ph["dropped"])) or "none"}.</p>
</body></html>
"""


def write_page(
    config: PatchesSection,
    store: AtlasStore,
    d: Direction,
    comp: Comparison,
    *,
    slug: str,
    report: dict[str, Any],
    published: str,
) -> Path | None:
    """Write the page and register it; None, with a warning, when the atlas folder has no exported atlas.

    ``slug``, ``report`` and ``published`` come from the stage (which imports this module, not the reverse)."""
    import logging

    from stages.tiles.export import update_index
    from stages.tiles.source import page_entry

    atlas = Path(config.data.atlas)
    if not (atlas / "atlases.json").exists():
        logging.getLogger(__name__).warning(
            "patches.page: %s holds no exported atlas (run `atlas tiles`); no page", atlas
        )
        return None
    folder_id = f"{FOLDER}/{slug}"
    folder = atlas / folder_id
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    for k, o in enumerate(d.result.outcomes):
        Image.fromarray(np.clip(np.rint(o.patch.image * 255), 0, 255).astype(np.uint8)).save(
            folder / "patches" / f"{k}.png"
        )
    if d.figure is not None and d.figure.exists():
        shutil.copyfile(d.figure, folder / "figure.png")
    page = folder / "index.html"
    tmp = folder / ".index.html.tmp"
    tmp.write_text(render_html(report, published, comp.level.n))
    tmp.replace(page)
    entry = page_entry(
        folder_id,
        "experiment",
        f"patches: {d.a[1]} photos -> {d.b[1]}",
        icon_px=56,
        model=store.model.entry(),
        index={"page": f"{folder_id}/index.html", "atlas": comp.atlas_id},
    )
    update_index(atlas, entry)
    return page
