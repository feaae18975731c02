"""Benchmark the web viewer in headless Chromium: load time, data fetched, hover/search/draw work.

    python bench/viewer.py [ATLAS] [--smoke] [--out bench/results/viewer.json] [--shots docs]
    python bench/viewer.py ATLAS --export-from data/scale/m1.zarr [--donor-icons data/store.icons.zarr]

Copies this checkout's viewer into the export ``ATLAS`` (default ``data/atlas``; as a re-export
would) and opens it from ``file://`` and over ``atlas serve``'s server, with a fresh 1280 x 800
Chromium page each time, and measures:

* **open**: the page's own clock (``performance.now()``, ms since navigation) when the atlas is
  open, when the shown level's cells are loaded and when every visible tile of it is drawn;
* **data fetched**: the export's data scripts (``*.js`` twins of the JSON files) the page loaded
  and their bytes, and all bytes fetched (tiles included);
* **per level**: zoomed to each level in turn, the ms from requesting its cells.js to its cells
  indexed (the page's clock) and their bytes;
* **work per frame**: ms of the hover handler (tooltip, at the finest level), of each search
  keystroke (matching + list) and of each overlay redraw (tint + labels) while panning with a
  class highlighted; one frame at 60 Hz is 16.7 ms.

Baseline, measured in the same run from ``file://``: the data the viewer loaded before levels
became lazy, every level's cells at open (a page that loads the same manifest, layout and all
``cells.js`` scripts); the table reports lazy / eager for time and bytes.

``--export-from STORE`` first exports STORE's grid into ATLAS with another atlas's real rendered
icons repeated in cell order (timing substitutes, titled so): how the 1M-row atlas of
docs/scaling.md is measured without hours of rendering. ``--shots DIR`` also writes the README pictures (region labels at the overview, a highlighted
class, a frame half way through a level cross-fade). ``--smoke`` exports a tiny atlas itself (levels 4 and 8 of real photo crops as icons, no store:
a timing-harness check, not an atlas) and runs everything on it in seconds. Prints a table and
writes the JSON. Needs Debian's ``chromium`` + ``chromium-driver`` and selenium.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from benchlib import machine_record, write_json  # noqa: E402

WIDTH, HEIGHT = 1280, 800
FRAME_MS = 1000 / 60


# ------------------------------------------------------------------------------- the browser
def browser(profile: Path) -> Any:
    from tests.chromium import ChromiumMissing, start_chromium

    try:
        driver = start_chromium(
            profile,
            WIDTH,
            HEIGHT,
            ["--disable-extensions", "--disk-cache-size=1", "--media-cache-size=1"],
            browser_log=False,
        )
    except ChromiumMissing as missing:
        raise SystemExit(str(missing)) from None
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.set_script_timeout(60)
    return driver


def wait(driver: Any, script: str, timeout: float = 60.0) -> float:
    """Seconds until the JS expression is truthy."""
    t0 = time.perf_counter()
    while not driver.execute_script(f"return {script}"):
        if time.perf_counter() - t0 > timeout:
            logs = [e["message"] for e in driver.get_log("browser")]
            raise TimeoutError(f"{script} (console: {logs[-5:]})")
        time.sleep(0.01)
    return time.perf_counter() - t0


def point(driver: Any, x: float, y: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver, duration=0)
    actions.w3c_actions.pointer_action.move_to_location(int(x), int(y))
    actions.perform()


# ------------------------------------------------------------------------------- bytes
def resource_bytes(driver: Any, atlas: Path) -> dict[str, Any]:
    """The export's data scripts the page loaded (the viewer's own list: file:// pages get no
    resource timing) and the tiles it loaded, with their sizes on disk."""
    base = driver.execute_script("return location.href.split('#')[0].replace(/index\\.html$/, '')")
    files = ["atlases.js"] + driver.execute_script("return atlasViewer.loadedFiles()")
    data = sum((atlas / unquote(f)).stat().st_size for f in files)
    tiles = [
        u[len(base) :] if u.startswith(base) else u for u in driver.execute_script("return atlasViewer.tileUrls()")
    ]
    tile_bytes = sum((atlas / unquote(u)).stat().st_size for u in tiles)
    return {
        "data_bytes": data,
        "data_files": files,
        "tiles": len(tiles),
        "tile_bytes": tile_bytes,
        "all_bytes": data + tile_bytes,
    }


# ------------------------------------------------------------------------------- measurements
def open_page(driver: Any, url: str) -> dict[str, float]:
    """Open ``url`` fresh and return the page's own timings (ms since navigation) and wall seconds."""
    driver.get("about:blank")
    t0 = time.perf_counter()
    driver.get(url)
    wait(driver, "window.atlasViewer && atlasViewer.ready() && atlasViewer.cellsReady() && atlasViewer.marks().tiles")
    wall = time.perf_counter() - t0
    marks = driver.execute_script("return atlasViewer.marks()")
    nav = driver.execute_script(
        "var t = performance.getEntriesByType('navigation')[0]; "
        "return {dom: t.domContentLoadedEventEnd, load: t.loadEventEnd}"
    )
    error = driver.execute_script("return atlasViewer.error()")
    if error:
        raise SystemExit(f"the viewer reported: {error}")
    return {
        "dom_ms": nav["dom"],
        "load_ms": nav["load"],
        "open_ms": marks["open"],
        "cells_ms": marks["cells"],
        "tiles_ms": marks["tiles"],
        "ready_ms": max(marks["open"], marks["cells"], marks["tiles"]),
        "wall_s": wall,
    }


def zoom_to_level(driver: Any, n: int, cx: float, cy: float) -> float:
    """Narrow the view about (cx, cy) until level ``n`` is shown; ms until its cells are loaded."""
    width = driver.execute_script("return atlasViewer.view().width")
    for _ in range(80):
        if driver.execute_script("return atlasViewer.currentLevel()") == n:
            break
        width *= 0.85
        driver.execute_script("atlasViewer.setView(arguments[0], arguments[1], arguments[2])", cx, cy, width)
    t0 = time.perf_counter()
    wait(driver, "atlasViewer.cellsReady()")
    return 1000 * (time.perf_counter() - t0)


def centre_of_mass(atlas: Path, entry: dict[str, Any], n: int) -> tuple[float, float]:
    cells = json.loads((atlas / entry["path"] / f"level_{n}" / "cells.json").read_text())
    w = np.array([c["count"] for c in cells], float)
    x = np.array([(c["bounds"][0] + c["bounds"][2]) / 2 for c in cells])
    y = np.array([(c["bounds"][1] + c["bounds"][3]) / 2 for c in cells])
    return float((w * x).sum() / w.sum()), float((w * y).sum() / w.sum())


def hover_work(driver: Any, moves: int = 60) -> dict[str, float]:
    """Move the real (CDP) mouse across the atlas; the hover handler's ms per move."""
    box = driver.find_element("id", "atlas").rect
    driver.execute_script("atlasViewer.resetPerf()")
    rng = np.random.default_rng(0)
    for x, y in zip(rng.uniform(0.2, 0.8, moves), rng.uniform(0.2, 0.8, moves)):
        point(driver, box["x"] + x * box["width"], box["y"] + y * box["height"])
    return driver.execute_script("return atlasViewer.perf().hover")


def search_work(driver: Any, text: str) -> dict[str, Any]:
    """Type ``text`` into the search box key by key; ms per keystroke; then pick the first match."""
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "search")
    box.click()
    t0 = time.perf_counter()
    wait(driver, "true")
    driver.execute_script("atlasViewer.resetPerf()")
    for ch in text:
        box.send_keys(ch)
    wait(driver, f"atlasViewer.perf().search.n >= {len(text)}")
    work = driver.execute_script("return atlasViewer.perf().search")
    box.send_keys(Keys.ENTER)
    t0 = time.perf_counter()
    wait(driver, "atlasViewer.highlightReady()")
    work["highlight_ready_ms"] = 1000 * (time.perf_counter() - t0)
    return work


def draw_work(driver: Any, cx: float, cy: float, steps: int = 30) -> dict[str, float]:
    """Pan in small steps with the highlight on; the overlay redraw's ms (tint + labels + selection)."""
    view = driver.execute_script("return atlasViewer.view()")
    driver.execute_script("atlasViewer.resetPerf()")
    for k in range(steps):
        dx = view["width"] * 0.02 * np.sin(k / 3)
        driver.execute_script(
            "atlasViewer.setView(arguments[0], arguments[1], arguments[2])", cx + dx, cy, view["width"]
        )
    return driver.execute_script("return atlasViewer.perf().draw")


def data_load(driver: Any, srcs: list[Path], work: Path) -> dict[str, Any]:
    """ms and bytes to load these data scripts on a bare page (no viewer), from file://."""
    page = work / "data_load.html"
    tags = "".join(f'<script src="{p.resolve().as_uri()}"></script>' for p in srcs)
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'>{tags}</head><body>"
        "<script>window.done = performance.now();</script></body></html>"
    )
    driver.get("about:blank")
    driver.get(page.as_uri())
    wait(driver, "window.done !== undefined")
    return {
        "data_ready_ms": driver.execute_script("return window.done"),
        "data_bytes": sum(p.stat().st_size for p in srcs),
        "data_files": len(srcs),
    }


def baseline(driver: Any, atlas: Path, entry: dict[str, Any], work: Path, repeats: int = 3) -> dict[str, Any]:
    """The data the viewer needs at open now (index, manifest, layout, the coarsest level's cells)
    against what it loaded before levels became lazy (every level's cells), each on a bare page."""
    folder = atlas / entry["path"]
    manifest = json.loads((folder / "manifest.json").read_text())
    common = [atlas / "atlases.js", folder / "manifest.js", folder / "layout.js"]
    cells = [folder / lv["cells_js"] for lv in manifest["levels"]]
    lazy = min((data_load(driver, common + cells[:1], work) for _ in range(repeats)), key=lambda r: r["data_ready_ms"])
    eager = min((data_load(driver, common + cells, work) for _ in range(repeats)), key=lambda r: r["data_ready_ms"])
    return {"lazy": lazy, "eager": eager}


# ------------------------------------------------------------------------------- smoke export
def smoke_export(root: Path) -> Path:
    """A tiny export written by the real exporter from photo crops (levels 4 and 8, no store)."""
    import skimage.data
    from PIL import Image

    from stages.config import TilesConfig
    from stages.tiles.export import export_atlas
    from stages.tiles.source import AtlasSource, MiniMap
    from store.derived import CellLevel
    from store.icons import IconLevel

    classes = [281, 967, 812, 834]  # ImageNet's tabby, espresso, space shuttle, suit: one per photo
    names = [f"imagenet class {k}" for k in range(1000)]  # display names only (no torchvision import)
    for k, name in zip(classes, ("tabby", "espresso", "space shuttle", "suit")):
        names[k] = name
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.astronaut()]
    px = 32

    def cells(n: int) -> CellLevel:
        ij = [
            (i, j) for j in range(n) for i in range(n) if ((i + 0.5) / n - 0.5) ** 2 + ((j + 0.5) / n - 0.5) ** 2 < 0.2
        ]
        i = np.array([a for a, _ in ij], np.int32)
        j = np.array([b for _, b in ij], np.int32)
        quad = (i >= n // 2).astype(int) + 2 * (j >= n // 2)
        count = (5 + (i * 7 + j * 3) % 20).astype(np.int64)
        attribution = np.zeros((len(ij), len(names)), np.float32)
        for k, q in enumerate(quad):
            attribution[k, classes[q]] = 0.2 + 0.05 * ((i[k] + j[k]) % 5)
            attribution[k, classes[(q + 1) % 4]] = 0.05
        top = np.argsort(-attribution, axis=1)[:, :5].astype(np.int32)
        top[np.take_along_axis(attribution, top, 1) <= 0] = -1  # the grid's padding: positive classes only
        offsets = np.r_[0, np.cumsum(count)].astype(np.int64)
        return CellLevel(
            n=n,
            i=i,
            j=j,
            count=count,
            direction=np.zeros((len(ij), 1), np.float32),
            attribution=attribution,
            top_idx=top,
            top_val=np.where(top >= 0, np.take_along_axis(attribution, np.maximum(top, 0), 1), 0),
            member_offsets=offsets,
            member_rows=np.arange(offsets[-1], dtype=np.int64),
            class_names=names,
        )

    def icons(n: int) -> IconLevel:
        level = cells(n)
        out = []
        for i, j in zip(level.i, level.j):
            p = photos[int(i >= n // 2) + 2 * int(j >= n // 2)]
            h, w = p.shape[:2]
            s = min(h, w) // 4
            y0, x0 = int((j + 0.5) / n * (h - s)), int((i + 0.5) / n * (w - s))
            out.append(np.asarray(Image.fromarray(p[y0 : y0 + s, x0 : x0 + s]).resize((px, px))))
        k = len(out)
        return IconLevel(
            n=n,
            icons=np.stack(out),
            objective=np.ones(k, np.float32),
            cossim=np.full(k, 0.8, np.float32),
            done=np.ones(1, bool),
        )

    def minimap(k: int, seed: int) -> MiniMap:
        rng = np.random.default_rng(seed)
        xy = rng.uniform(0.1, 0.9, (min(k, 500), 2)).astype(np.float32)
        label = np.array([classes[int(x >= 0.5) + 2 * int(y >= 0.5)] for x, y in xy], np.int32)
        return MiniMap(x=xy[:, 0], y=xy[:, 1], label=label)

    source = AtlasSource(
        id="main",
        kind="main",
        title="smoke export (photo crops, not an atlas)",
        levels=[4, 8],
        cell_level=cells,
        icon_level=icons,
        minimap=minimap,
        class_names=names,
        model={"name": "mobilenet_v2", "layer": "smoke"},
        icon_px=px,
        fingerprint="smoke",
    )
    export_atlas(source, root, TilesConfig(tile_size=64, examples=0))
    return root


# ------------------------------------------------------------------------------- a large export
def large_export(store_path: Path, donor_path: Path, out: Path, levels: list[int], examples: int) -> Path:
    """Export ``store_path``'s grid (e.g. the 1M-row store of docs/scaling.md) with real rendered
    icons of another store (``donor_path``, an ``*.icons.zarr``) repeated in cell order.

    Rendering 13.6k icons takes hours on a CPU; the viewer's cost depends on the cells, their
    data and the tiles, not on which icon is drawn, so the icons are timing substitutes and the
    atlas is titled so. Cells, classes, highlight values, labels and examples are the store's own.
    """
    from tiles import donor_icons  # bench/tiles.py: every rendered icon batch of an icon store

    from stages.config import TilesConfig
    from stages.tiles.export import export_atlas
    from stages.tiles.source import AtlasSource, store_minimap
    from store import derived
    from store.atlas_store import AtlasStore
    from store.icons import IconLevel, IconStore

    store = AtlasStore.open(store_path, mode="r")
    pool = donor_icons(IconStore.open(donor_path))

    def icon_level(n: int) -> IconLevel:
        k = len(derived.read_level(store, n, with_attribution=False))
        pick = np.arange(k) % len(pool.icons)
        return IconLevel(
            n=n, icons=pool.icons[pick], objective=pool.objective[pick], cossim=pool.cossim[pick], done=np.ones(1, bool)
        )

    model = store.attrs.get("model") or {}
    source = AtlasSource(
        id="main",
        kind="main",
        title=f"{model.get('name')} {model.get('layer')}: {store.n_rows:,} rows (icons: real icons of another atlas repeated)",
        levels=levels,
        cell_level=lambda n: derived.read_level(store, n, with_attribution=True),
        icon_level=icon_level,
        minimap=lambda k, seed: store_minimap(store, k, seed),
        class_names=list(store.class_names),
        model={"name": model.get("name"), "layer": model.get("layer")},
        icon_px=int(pool.icons.shape[1]),
        store=store,
        label_names=[str(v) for v in store.attrs.get("label_names") or []],
        fingerprint=f"large-{store_path}-{donor_path}",
    )
    t0 = time.perf_counter()
    export_atlas(source, out, TilesConfig(examples=examples))
    print(f"exported {store_path} levels {levels} into {out} in {time.perf_counter() - t0:.0f} s")
    return out


# ------------------------------------------------------------------------------- README pictures
def save_png(driver: Any, path: Path) -> None:
    """The page as a 256-colour PNG (the icons' noise defeats plain deflate; a few hundred KB)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        path, optimize=True
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def readme_shots(atlas: Path, out: Path, highlight: str | None, work: Path) -> dict[str, Any]:
    """Three pictures of the main atlas from file://: region labels at the overview, a class
    highlighted (hovering its strongest cell), and a frame half way through a level cross-fade."""
    from selenium.webdriver.common.keys import Keys

    index = json.loads((atlas / "atlases.json").read_text())
    entry = next(a for a in index["atlases"] if a["id"] == "main")
    folder = atlas / entry["path"]
    manifest = json.loads((folder / "manifest.json").read_text())
    coarse = manifest["levels"][0]["n"]
    cells = json.loads((folder / f"level_{coarse}" / "cells.json").read_text())
    if highlight is None:  # the most frequent top class of the overview's cells
        tops = [c["classes"][0]["name"] for c in cells if c["classes"]]
        highlight = max(set(tops), key=tops.count)
    out.mkdir(parents=True, exist_ok=True)
    driver = browser(work / "profile_shots")
    info: dict[str, Any] = {"highlight": highlight}
    try:
        page = (atlas / "index.html").resolve().as_uri()
        open_page(driver, page)
        point(driver, 5, 5)
        time.sleep(0.5)
        info["labels"] = len(driver.execute_script("return atlasViewer.labels()"))
        save_png(driver, out / "viewer_labels.png")

        box = driver.find_element("id", "search")
        box.click()
        box.send_keys(highlight)
        wait(driver, "document.querySelectorAll('#search-results li').length > 0")
        box.send_keys(Keys.ENTER)
        wait(driver, "atlasViewer.highlightReady()")
        hl = driver.execute_script("return atlasViewer.highlight()")
        values = [
            (driver.execute_script(f"return atlasViewer.highlightValue({coarse}, {c['cell']})") or 0, c) for c in cells
        ]
        best = max(values, key=lambda v: v[0])[1]
        b = best["bounds"]
        p = driver.execute_script(
            "return atlasViewer.worldToClient(arguments[0], arguments[1])", (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        )
        point(driver, p["x"], p["y"])
        wait(driver, "!document.getElementById('tooltip').hidden")
        time.sleep(0.5)
        info["highlighted"] = hl
        save_png(driver, out / "viewer_highlight.png")

        driver.execute_script("document.getElementById('search-clear').click()")
        point(driver, 5, 5)
        cx, cy = centre_of_mass(atlas, entry, coarse)
        width = driver.execute_script("return atlasViewer.view().width")
        for _ in range(200):
            opacity = driver.execute_script("return atlasViewer.opacities()")
            if len(opacity) > 1 and 0.4 <= opacity[1] <= 0.6:
                break
            width *= 0.99
            driver.execute_script("atlasViewer.setView(arguments[0], arguments[1], arguments[2])", cx, cy, width)
        levels = [lv["n"] for lv in manifest["levels"]]
        wait(driver, f"atlasViewer.levelDrawn({levels[0]}) && atlasViewer.levelDrawn({levels[1]})")
        time.sleep(2.0)  # every tile of both levels at this view
        info["midfade_opacity"] = driver.execute_script("return atlasViewer.opacities()")
        save_png(driver, out / "viewer_midfade.png")
    finally:
        driver.quit()
    return info


# ------------------------------------------------------------------------------- main
def measure(atlas: Path, search_text: str | None, work: Path, moves: int, repeats: int) -> dict[str, Any]:
    from pipeline.serve import serve_in_thread

    index = json.loads((atlas / "atlases.json").read_text())
    entry = next(a for a in index["atlases"] if a["id"] == "main")
    manifest = json.loads((atlas / entry["path"] / "manifest.json").read_text())
    levels = [lv["n"] for lv in manifest["levels"]]
    server, url = serve_in_thread(atlas)
    driver = browser(work / "profile")
    out: dict[str, Any] = {"levels": levels, "cells": {str(lv["n"]): lv["cells"] for lv in manifest["levels"]}}
    try:
        for how, page in (("file", (atlas / "index.html").resolve().as_uri()), ("http", url)):
            runs = [open_page(driver, page) for _ in range(repeats)]
            timing = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}  # median of the opens
            timing["runs"] = runs
            timing.update(resource_bytes(driver, atlas))
            out[how] = timing
        out["baseline"] = baseline(driver, atlas, entry, work, repeats)

        # from file:// again: every level in turn, then hover / search / draw at the finest one
        open_page(driver, (atlas / "index.html").resolve().as_uri())
        out["hover_home"] = hover_work(driver, moves)
        per_level = []
        for n in levels[1:]:
            cx, cy = centre_of_mass(atlas, entry, levels[0])
            ms = zoom_to_level(driver, n, cx, cy)
            cells_js = atlas / entry["path"] / f"level_{n}" / "cells.js"
            loads = driver.execute_script("return atlasViewer.levelLoads()")
            per_level.append(
                {
                    "level": n,
                    "cells": out["cells"][str(n)],
                    "cells_js_bytes": cells_js.stat().st_size,
                    "cells_load_ms": round(loads[str(n)], 1),
                    "cells_wait_after_zoom_ms": round(ms, 1),
                }
            )
        out["per_level"] = per_level
        time.sleep(0.3)
        out["hover_finest"] = hover_work(driver, moves)
        if manifest.get("highlight"):
            index_hl = json.loads((atlas / entry["path"] / "highlight.json").read_text())
            finest = str(levels[-1])
            if search_text is None:  # the class with support in most cells of the finest level
                best, most = 0, -1
                for c in index_hl["levels"][finest]["classes"][
                    :: max(1, len(index_hl["levels"][finest]["classes"]) // 50)
                ]:
                    rec = json.loads(
                        (atlas / entry["path"] / f"level_{finest}" / "highlight" / f"class_{c}.json").read_text()
                    )
                    if len(rec["cells"]) > most:
                        best, most = c, len(rec["cells"])
                search_text = index_hl["classes"][best]
            out["search"] = {"text": search_text, **search_work(driver, search_text)}
            cx, cy = centre_of_mass(atlas, entry, levels[0])
            out["draw_highlight_finest"] = draw_work(driver, cx, cy, moves // 2)
            out["hover_highlight_finest"] = hover_work(driver, moves)
            out["data_after_all"] = resource_bytes(driver, atlas)["data_bytes"]
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return out


def table(r: dict[str, Any]) -> str:
    lazy, eager = r["baseline"]["lazy"], r["baseline"]["eager"]
    lines = [
        f"levels {r['levels']}, cells per level {r['cells']}",
        f"median of {len(r['file']['runs'])} fresh opens (ms since navigation):",
        f"{'opened via':10s} {'atlas open ms':>13s} {'cells ms':>9s} {'tiles ms':>9s} {'data scripts':>12s} "
        f"{'data KB':>8s} {'tiles':>6s} {'tiles KB':>9s}",
    ]
    for how in ("file", "http"):
        t = r[how]
        lines.append(
            f"{how:10s} {t['open_ms']:13.0f} {t['cells_ms']:9.0f} {t['tiles_ms']:9.0f} {len(t['data_files']):12d} "
            f"{t['data_bytes'] / 1024:8.1f} {t['tiles']:6d} {t['tile_bytes'] / 1024:9.1f}"
        )
    lines.append(f"data needed at open, loaded on a bare page from file:// (best of {len(r['file']['runs'])}):")
    for name, b in (("lazy (now)", lazy), ("eager (before)", eager)):
        lines.append(
            f"  {name:16s} {b['data_files']:3d} scripts {b['data_bytes'] / 1024:10.1f} KB {b['data_ready_ms']:8.0f} ms"
        )
    lines.append(
        f"  lazy / eager: {lazy['data_bytes'] / eager['data_bytes']:.3f}x the bytes, "
        f"{lazy['data_ready_ms'] / eager['data_ready_ms']:.2f}x the time"
    )
    lines.append(
        f"{'level':>6s} {'cells':>6s} {'cells.js KB':>12s} {'load ms':>8s}   (request to cells indexed, in the page)"
    )
    for lv in r["per_level"]:
        lines.append(
            f"{lv['level']:>6d} {lv['cells']:>6d} {lv['cells_js_bytes'] / 1024:12.1f} {lv['cells_load_ms']:8.0f}"
        )
    lines.append(
        f"{'work per event (ms)':28s} {'n':>4s} {'mean':>7s} {'p95':>7s} {'max':>7s}   (one frame = {FRAME_MS:.1f} ms)"
    )
    for key in ("hover_home", "hover_finest", "search", "draw_highlight_finest", "hover_highlight_finest"):
        if key in r:
            w = r[key]
            lines.append(f"{key:28s} {w['n']:4d} {w['mean']:7.2f} {w['p95']:7.2f} {w['max']:7.2f}")
    if "search" in r:
        lines.append(f"search '{r['search']['text']}' -> highlight ready in {r['search']['highlight_ready_ms']:.0f} ms")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", nargs="?", default=str(REPO / "data" / "atlas"))
    parser.add_argument("--smoke", action="store_true", help="export a tiny atlas and measure it (seconds)")
    parser.add_argument("--search", default=None, help="class name to type (default: the most supported class)")
    parser.add_argument("--repeat", type=int, default=5, help="opens per mode (the table shows the median; smoke: 1)")
    parser.add_argument("--label", default=None, help="what the atlas is, for the JSON (e.g. '1M-row atlas')")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "viewer.json"))
    parser.add_argument(
        "--export-from",
        default=None,
        metavar="STORE",
        help="first export STORE's grid into ATLAS with --donor-icons (a large atlas, e.g. 1M rows)",
    )
    parser.add_argument(
        "--donor-icons",
        default=str(REPO / "data" / "store.icons.zarr"),
        help="rendered icons repeated in cell order for --export-from (timing substitutes)",
    )
    parser.add_argument("--levels", default="20,40,80,160", help="levels for --export-from")
    parser.add_argument("--examples", type=int, default=4, help="dataset examples per cell for --export-from")
    parser.add_argument(
        "--shots",
        default=None,
        help="also write the README pictures (viewer_labels.png, "
        "viewer_highlight.png, viewer_midfade.png) into this folder, e.g. docs",
    )
    parser.add_argument(
        "--shot-class",
        default=None,
        help="class highlighted in viewer_highlight.png (default: the most frequent top class of the coarsest level)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    try:
        if args.export_from:
            large_export(
                Path(args.export_from),
                Path(args.donor_icons),
                Path(args.atlas),
                [int(v) for v in args.levels.split(",")],
                args.examples,
            )
        atlas = smoke_export(work / "atlas") if args.smoke else Path(args.atlas)
        if not (atlas / "atlases.json").is_file():
            raise SystemExit(f"{atlas} is not an exported atlas (no atlases.json); run `atlas tiles` or pass --smoke")
        from stages.tiles.viewer_assets import install_viewer

        install_viewer(atlas)  # measure this checkout's viewer, as a re-export would install it
        result = measure(atlas, args.search, work, 20 if args.smoke else 60, 1 if args.smoke else args.repeat)
        if args.shots:
            result["shots"] = readme_shots(atlas, Path(args.shots), args.shot_class, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    record = {
        "atlas": "smoke export" if args.smoke else str(atlas),
        "label": args.label or ("smoke" if args.smoke else None),
        "viewport": [WIDTH, HEIGHT],
        "frame_ms": FRAME_MS,
        **result,
        "machine": machine_record(),
    }
    print(f"wrote {write_json(args.out, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
