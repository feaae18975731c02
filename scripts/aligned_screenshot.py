"""Screenshot of the synced side-by-side viewer of an aligned atlas, taken in headless Chromium.

Serves the pair's export folder on 127.0.0.1, opens ``aligned.html``, optionally zooms side A (side B
follows) and clicks the most populated cell of a level (both sides select it; the panel shows both
cells and their agreement), then saves the page as a PNG (the README's ``docs/aligned_viewer.png``)::

    python3 scripts/aligned_screenshot.py data/atlas/align/mobilenet_v2-vs-efficientnet_lite0 \\
        --png docs/aligned_viewer.png --zoom 1.6 --level 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _wait(driver, script: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(f"return {script}"):
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {script}: {[e['message'] for e in driver.get_log('browser')]}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="an aligned atlas's export folder (<data.atlas>/align/<pair>)")
    parser.add_argument("--png", default="aligned_viewer.png")
    parser.add_argument("--zoom", type=float, default=1.0, help="zoom factor applied to side A (B follows)")
    parser.add_argument("--level", type=int, default=None, help="click the most populated cell of this level")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    return parser.parse_args(argv)


def _start_chromium(width: int, height: int, profile: str):
    """Headless Chromium at ``width`` x ``height`` CSS px, its browser log kept."""
    from tests.chromium import start_chromium

    return start_chromium(profile, width, height)


def _click_fullest_cell(driver, folder: Path, level: int, width: int, height: int) -> None:
    """Centre side A on the level's most populated cell, click it, then move the pointer off the atlases."""
    from selenium.webdriver.common.action_chains import ActionChains

    cells = json.loads((folder / "a" / f"level_{level}" / "cells.json").read_text())
    cell = max(cells, key=lambda c: c["count"])
    x0, y0, x1, y1 = cell["bounds"]
    driver.execute_script("alignedViewer.panTo('a', arguments[0], arguments[1])", (x0 + x1) / 2, (y0 + y1) / 2)
    _wait(driver, "!alignedViewer.animating()")
    p = driver.execute_script(
        "return alignedViewer.worldToClient('a', arguments[0], arguments[1])", (x0 + x1) / 2, (y0 + y1) / 2
    )
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(p["x"]), int(p["y"]))
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    _wait(driver, "alignedViewer.selected() !== null")
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(width - 5, height - 5)
    actions.perform()  # the pointer off the atlases: no tooltip over the picture


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from pipeline.serve import serve_in_thread

    folder = Path(args.folder)
    server, url = serve_in_thread(folder)
    profile = tempfile.mkdtemp(prefix="chromium_profile_")
    driver = _start_chromium(args.width, args.height, profile)
    try:
        driver.get(url + "aligned.html")
        _wait(driver, "window.alignedViewer && alignedViewer.ready()")
        if args.zoom != 1.0:
            driver.execute_script("alignedViewer.zoomBy('a', arguments[0])", args.zoom)
            time.sleep(1.5)
        if args.level is not None:
            _click_fullest_cell(driver, folder, args.level, args.width, args.height)
        time.sleep(3)  # tiles and the panel's icons
        driver.save_screenshot(args.png)
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        print(f"wrote {args.png}" + (f"; browser errors: {errors}" if errors else ""))
        return 1 if errors or driver.execute_script("return alignedViewer.error()") else 0
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
