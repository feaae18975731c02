"""The viewer in headless Chromium: the docs screenshot (docs/viewer.png) and its load times.

    python bench/viewer_screenshot.py [data/atlas] [--png docs/viewer.png] [--zoom 0]
                                      [--out bench/results/viewer_screenshot.json]
    python bench/viewer_screenshot.py ATLAS --smoke --png X.png --out X.json     # what CI runs

Opens the export over ``atlas serve``'s server and from ``file://``, times how long the page
takes to open the atlas and to load every visible tile of the level shown, then (served) zooms in
``--zoom`` wheel steps, clicks a well-populated cell near the centre (its details fill the side
panel), hovers its neighbour (tooltip) and saves a 1280 x 800 screenshot (``--png``). Prints a
table and writes ``--out`` (JSON, with the model and layer the export's atlases.json names).
``--smoke`` is the same path at the home view with the settle pauses cut (nothing to shrink: the
size is the atlas given). Needs Debian's ``chromium`` + ``chromium-driver`` and selenium.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_record, model_record, write_json

from pipeline.serve import serve_in_thread
from tests.chromium import start_chromium

WIDTH, HEIGHT = 1280, 800


def browser() -> Any:
    return start_chromium(tempfile.mkdtemp(prefix="atlas-chromium-"), WIDTH, HEIGHT, browser_log=False)


def wait(driver: Any, script: str, timeout: float = 20.0) -> float:
    """Seconds until the JS expression is truthy."""
    t0 = time.perf_counter()
    while not driver.execute_script(f"return {script}"):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(script)
        time.sleep(0.02)
    return time.perf_counter() - t0


def open_timed(driver: Any, url: str) -> dict[str, float]:
    t0 = time.perf_counter()
    driver.get(url)
    loaded = time.perf_counter() - t0
    ready = loaded + wait(driver, "window.atlasViewer && atlasViewer.ready()")
    tiles = ready + wait(driver, "atlasViewer.levelFullyLoaded()")
    return {"page_load_s": loaded, "atlas_open_s": ready, "tiles_loaded_s": tiles}


def point(driver: Any, x: float, y: float, click: bool = False) -> None:
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(x), int(y))
    if click:
        actions.w3c_actions.pointer_action.click()
    actions.perform()


def atlas_folder(atlas: Path, atlas_id: str) -> Path:
    """The folder of atlas ``atlas_id`` of the export (atlases.json's ``path``)."""
    index = json.loads((atlas / "atlases.json").read_text())
    paths = {a["id"]: a["path"] for a in index["atlases"]}
    if atlas_id not in paths:
        raise SystemExit(
            f"--atlas-id {atlas_id!r} is not in {atlas / 'atlases.json'}; choose one of: {', '.join(paths)}"
        )
    return atlas / paths[atlas_id]


def centre_cells(folder: Path, n: int) -> list[dict[str, Any]]:
    """The level's cells ordered by closeness to the centre, then count (a representative pick)."""
    cells = json.loads((folder / f"level_{n}" / "cells.json").read_text())

    def key(c: dict[str, Any]) -> float:
        x0, y0, x1, y1 = c["bounds"]
        return ((x0 + x1) / 2 - 0.5) ** 2 + ((y0 + y1) / 2 - 0.45) ** 2 - 1e-5 * c["count"]

    return sorted(cells, key=key)


def screenshot(driver: Any, folder: Path, out: Path, zoom: int, settle: float = 1.0) -> dict[str, Any]:
    # zoom about the count-weighted centre of the cells, so the zoomed view stays on the atlas
    n0 = driver.execute_script("return atlasViewer.currentLevel()")
    cells0 = json.loads((folder / f"level_{n0}" / "cells.json").read_text())
    total = sum(c["count"] for c in cells0)
    cx = sum(c["count"] * (c["bounds"][0] + c["bounds"][2]) / 2 for c in cells0) / total
    cy = sum(c["count"] * (c["bounds"][1] + c["bounds"][3]) / 2 for c in cells0) / total
    p = driver.execute_script("return atlasViewer.worldToClient(arguments[0], arguments[1])", cx, cy)
    origin = ScrollOrigin.from_viewport(int(p["x"]), int(p["y"]))
    for _ in range(zoom):
        ActionChains(driver).scroll_from_origin(origin, 0, -120).perform()
        time.sleep(0.3 * settle)
    time.sleep(1.2 * settle)
    wait(driver, "atlasViewer.levelFullyLoaded()")
    n = driver.execute_script("return atlasViewer.currentLevel()")
    cells = centre_cells(folder, n)
    where = [
        driver.execute_script(
            "return atlasViewer.worldToClient(arguments[0], arguments[1])",
            (c["bounds"][0] + c["bounds"][2]) / 2,
            (c["bounds"][1] + c["bounds"][3]) / 2,
        )
        for c in cells[:2]
    ]
    point(driver, where[0]["x"], where[0]["y"], click=True)
    wait(driver, "Array.from(document.querySelectorAll('#cell-info .examples img')).every(i => i.complete)")
    point(driver, where[1]["x"], where[1]["y"])
    wait(driver, "!document.getElementById('tooltip').hidden")
    time.sleep(0.6 * settle)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    # 256 colours (dithered) keep the PNG a few hundred KB; the icons' noise defeats plain deflate
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        out, optimize=True
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB), level {n}, clicked cell {cells[0]['cell']}")
    return {"png": str(out), "png_kb": round(out.stat().st_size / 1024), "level": n, "clicked_cell": cells[0]["cell"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", nargs="?", default="data/atlas")
    parser.add_argument("--png", default="docs/viewer.png", help="the screenshot")
    parser.add_argument("--zoom", type=int, default=0, help="mouse-wheel steps before the screenshot (0: home view)")
    parser.add_argument(
        "--out",
        "--json",
        dest="out",
        default="bench/results/viewer_screenshot.json",
        help="the timings (JSON; bench/results/viewer.json is bench/viewer.py's)",
    )
    parser.add_argument("--atlas-id", default="main", help="which atlas of the export to show (atlases.json id)")
    parser.add_argument("--smoke", action="store_true", help="home view, short settle pauses")
    args = parser.parse_args()
    if args.out.endswith(".png"):
        parser.error("--out is the JSON now; the screenshot is --png")
    if args.smoke:
        args.zoom = 0
    atlas = Path(args.atlas)
    model = json.loads((atlas / "atlases.json").read_text()).get("model") or {}
    server, url = serve_in_thread(atlas)
    driver = browser()
    try:
        folder, hash_ = atlas_folder(atlas, args.atlas_id), f"#{args.atlas_id}"
        rows = {
            "file": open_timed(driver, (atlas / "index.html").resolve().as_uri() + hash_),
            "http": open_timed(driver, url + hash_),
        }
        shot = screenshot(driver, folder, Path(args.png), args.zoom, settle=0.25 if args.smoke else 1.0)
    finally:
        driver.quit()
        server.shutdown()
    print(f"{'opened via':10s} {'page load s':>12s} {'atlas open s':>13s} {'tiles loaded s':>15s}")
    for how, r in rows.items():
        print(f"{how:10s} {r['page_load_s']:12.2f} {r['atlas_open_s']:13.2f} {r['tiles_loaded_s']:15.2f}")
    write_json(
        args.out,
        {
            "atlas": str(atlas),
            "atlas_id": args.atlas_id,
            "model": model_record(model),
            "smoke": args.smoke,
            "viewport": [WIDTH, HEIGHT],
            "zoom": args.zoom,
            "timings": rows,
            "screenshot": shot,
            **machine_record(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
