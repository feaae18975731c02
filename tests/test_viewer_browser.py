"""The exported atlas in a real browser: Debian's headless Chromium driven by Selenium.

``small_atlas`` (tests/atlas_fixtures.py) is a real export of real activations; it is served by
``atlas serve``'s server on 127.0.0.1 (a free port, a thread) and also opened from ``file://``.
Screenshots go to ``$ATLAS_TEST_ARTEFACTS`` (default: a pytest temp folder) so a person can look
at what the browser drew. Chromium and chromedriver come from apt (scripts/test.sh installs them);
the tests skip only if they cannot be found.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipeline.serve import serve_in_thread
from stages.tiles.viewer_assets import VIEWER_SOURCE
from tests import chromium
from tests.atlas_fixtures import SmallAtlas
from tests.viewer_export import make_viewer_export

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

WIDTH, HEIGHT = 1280, 800


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("ATLAS_TEST_ARTEFACTS")
    path = Path(folder) / "viewer" if folder else tmp_path_factory.mktemp("viewer_screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_chromium(profile: Path) -> Any:
    """Headless Chromium with a fresh profile folder and a viewport of exactly WIDTH x HEIGHT."""
    try:
        return chromium.start_chromium(profile, WIDTH, HEIGHT)
    except chromium.ChromiumMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium_profile"))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served_atlas(small_atlas: SmallAtlas) -> Iterator[str]:
    server, url = serve_in_thread(small_atlas.atlas_dir)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------- helpers
#: the ceiling of every wait for the page: generous, because CI machines are slow and busy; a wait
#: ends as soon as its condition holds, so a fast machine never pays it
WAIT_S = 90.0


def wait_for(driver: Any, script: str, timeout: float = WAIT_S, what: str = "") -> Any:
    """Poll a JS expression until it is truthy; fail with the page's console on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.05)
    logs = [entry["message"] for entry in driver.get_log("browser")]
    pytest.fail(f"timed out waiting for {what or script}; browser console: {logs}")


def open_viewer(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(
        driver,
        "window.atlasViewer && atlasViewer.ready() && atlasViewer.levelFullyLoaded()",
        what="the atlas to open and its tiles to load",
    )
    assert driver.execute_script("return atlasViewer.error()") is None
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"


def screenshot(driver: Any, path: Path) -> Image.Image:
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    return Image.open(io.BytesIO(png)).convert("RGB")


def element_pixels(image: Image.Image, driver: Any, element_id: str) -> np.ndarray:
    r = driver.find_element("id", element_id).rect
    box = (int(r["x"]), int(r["y"]), int(r["x"] + r["width"]), int(r["y"] + r["height"]))
    return np.asarray(image.crop(box), dtype=np.float64)


def next_frames(driver: Any, frames: int = 2) -> None:
    """Return once the page has drawn ``frames`` more animation frames (what was set is now painted)."""
    driver.execute_async_script(
        "var done = arguments[arguments.length - 1], left = arguments[0];"
        "function tick() { if (--left <= 0) done(); else requestAnimationFrame(tick); }"
        "requestAnimationFrame(tick);",
        frames,
    )


def settle(driver: Any, what: str = "the view to settle") -> None:
    """Wait until the main viewer's view stops moving and its hash is written, then for a painted frame."""
    wait_for(driver, "atlasViewer.settled()", what=what)
    next_frames(driver)


def blank_reason(pixels: np.ndarray, what: str, min_colours: int = 100) -> str | None:
    """Why ``pixels`` look blank (None: they look like an icon)."""
    colours = len(np.unique((pixels // 8).reshape(-1, 3), axis=0))
    if pixels.std() <= 15:
        return f"{what} looks blank (pixel std {pixels.std():.1f})"
    if colours <= min_colours:
        return f"{what} has only {colours} distinct colours"
    return None


def eventually_not_blank(
    driver: Any, path: Path, element_id: str, what: str, min_colours: int = 100, timeout: float = WAIT_S
) -> Image.Image:
    """Screenshot until ``element_id`` shows a textured picture (tiles and icons load asynchronously);
    fail with the last reason after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        image = screenshot(driver, path)
        reason = blank_reason(element_pixels(image, driver, element_id), what, min_colours)
        if reason is None:
            return image
        if time.monotonic() > deadline:
            pytest.fail(reason)
        time.sleep(0.2)


def assert_not_blank(pixels: np.ndarray, what: str, min_colours: int = 100) -> None:
    """Icons are textured images: a blank or single-colour canvas fails both checks.

    (A blank canvas has 1 colour, a flat grey panel a handful; the small atlas's 32 px icons,
    shown enlarged, have ~150-200 distinct colours at 5 bits per channel, the whole canvas more.)
    """
    colours = len(np.unique((pixels // 8).reshape(-1, 3), axis=0))
    assert pixels.std() > 15, f"{what} looks blank (pixel std {pixels.std():.1f})"
    assert colours > min_colours, f"{what} has only {colours} distinct colours"


def tile_requests(driver: Any, needle: str = "_files/") -> list[str]:
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if needle in n and n.endswith((".jpg", ".webp"))]


def move_pointer(driver: Any, x: float, y: float, click: bool = False) -> None:
    """Move the real (CDP) mouse to page pixel (x, y), optionally click there."""
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(round(x)), int(round(y)))
    if click:
        actions.w3c_actions.pointer_action.click()
    actions.perform()


def load_cells(atlas_dir: Path, atlas_path: str, n: int) -> list[dict[str, Any]]:
    return json.loads((atlas_dir / atlas_path / f"level_{n}" / "cells.json").read_text())


def cell_centre(driver: Any, cell: dict[str, Any]) -> tuple[float, float]:
    x0, y0, x1, y1 = cell["icon_bounds"]
    p = driver.execute_script(
        "return atlasViewer.worldToClient(arguments[0], arguments[1])", (x0 + x1) / 2, (y0 + y1) / 2
    )
    return p["x"], p["y"]


# ------------------------------------------------------------------------------- tests
def test_level_choice_math(browser: Any) -> None:
    """The pure level-switch rule (levels.js, run alone on a blank page), against hand-computed cases."""
    browser.get("about:blank")
    browser.execute_script((VIEWER_SOURCE / "viewer" / "levels.js").read_text())
    pick: Callable[..., dict] = lambda levels, world, home: browser.execute_script(  # noqa: E731
        "return AtlasViewerParts.levels.levelOpacities(arguments[0], arguments[1], arguments[2])", levels, world, home
    )
    prod = [{"n": 20, "cell_px": 80}, {"n": 40, "cell_px": 80}, {"n": 80, "cell_px": 80}]
    assert pick(prod, 600, 600) == {"chosen": 0, "opacity": [1, 0, 0]}  # home: the coarsest level
    # 40-level cells 2300/40 = 57.5 px >= 80 / sqrt(2) = 56.57 px: switch
    assert pick(prod, 2300, 600)["chosen"] == 1
    # just before the switch (55 px) the 40 level is fading in: (55 / 56.57 - 0.75) / 0.25 = 0.889
    fading = pick(prod, 2200, 600)
    assert fading["chosen"] == 0 and fading["opacity"][1] == pytest.approx(0.889, abs=0.002)
    assert pick(prod, 10000, 600)["chosen"] == 2
    # a tiny atlas (3 and 6 cells of 32 px) still opens on its coarse level and switches on zoom-in:
    # 6-level cells must reach 0.707 x (600 / 3) = 141 px -> world 849 px
    tiny = [{"n": 3, "cell_px": 32}, {"n": 6, "cell_px": 32}]
    assert pick(tiny, 600, 600)["chosen"] == 0
    assert pick(tiny, 840, 600)["chosen"] == 0 and pick(tiny, 860, 600)["chosen"] == 1


def test_served_atlas_renders_zooms_hovers_and_clicks(
    browser: Any, served_atlas: str, small_atlas: SmallAtlas, artefacts: Path
) -> None:
    open_viewer(browser, served_atlas)
    levels = browser.execute_script("return atlasViewer.levels()")
    assert levels == small_atlas.levels
    coarse, fine = levels[0], levels[-1]
    assert browser.execute_script("return atlasViewer.currentLevel()") == coarse
    assert browser.execute_script("return atlasViewer.tilesLoaded()") > 0
    assert any(f"level_{coarse}_files/" in name for name in tile_requests(browser)), tile_requests(browser)
    assert_not_blank(
        element_pixels(screenshot(browser, artefacts / "http_home.png"), browser, "atlas"), "the atlas canvas"
    )

    # hover the coarse level's most populated cell: the tooltip names its top attributed class
    cells = load_cells(small_atlas.atlas_dir, "main", coarse)
    cell = max(cells, key=lambda c: c["count"])
    move_pointer(browser, *cell_centre(browser, cell))
    wait_for(browser, "!document.getElementById('tooltip').hidden", what="the tooltip")
    tooltip = browser.find_element("id", "tooltip").text
    assert cell["classes"][0]["name"] in tooltip and f"{cell['count']} samples" in tooltip, tooltip
    screenshot(browser, artefacts / "http_tooltip.png")

    # click it: the side panel shows the enlarged icon, its count and its dataset examples
    move_pointer(browser, *cell_centre(browser, cell), click=True)
    wait_for(browser, "atlasViewer.selected() !== null", what="a selected cell")
    assert browser.execute_script("return atlasViewer.selected()") == {"n": coarse, "cell": cell["cell"]}
    panel = browser.find_element("id", "panel").text
    assert f"{cell['count']} samples" in panel and cell["classes"][0]["name"] in panel, panel
    n_examples = len(cell["examples"])
    assert n_examples > 0
    wait_for(
        browser,
        f"Array.from(document.querySelectorAll('#cell-info .examples img'))"
        f".filter(i => i.complete && i.naturalWidth > 0).length === {n_examples}",
        what="the dataset example thumbnails",
    )
    # the enlarged icon is drawn when its tiles have loaded
    eventually_not_blank(browser, artefacts / "http_panel.png", "panel-icon", "the enlarged icon")

    # zoom in with the mouse wheel over the atlas: the finer level takes over
    stage = browser.find_element("id", "atlas").rect
    origin = ScrollOrigin.from_viewport(int(stage["x"] + stage["width"] / 2), int(stage["y"] + stage["height"] / 2))
    for _ in range(3):
        ActionChains(browser).scroll_from_origin(origin, 0, -120).perform()
        time.sleep(0.15)
    wait_for(browser, f"atlasViewer.currentLevel() === {fine}", what=f"the switch to level {fine}")
    wait_for(browser, "atlasViewer.levelFullyLoaded()", what=f"level {fine}'s tiles")
    assert any(f"level_{fine}_files/" in name for name in tile_requests(browser))
    settle(browser, "the zoom animation to settle")
    eventually_not_blank(browser, artefacts / "http_zoomed.png", "atlas", "the zoomed-in atlas")


def test_picker_switches_atlas_and_shows_axes(
    browser: Any, small_atlas: SmallAtlas, tmp_path_factory: pytest.TempPathFactory, artefacts: Path
) -> None:
    """The picker lists every atlas of atlases.js and opens the chosen one (a comparison shows its axes).

    ``small_atlas`` exports the main atlas only, so this uses the hand-made three-atlas export
    (tests/viewer_export.py) unless the real one has several.
    """
    index = json.loads((small_atlas.atlas_dir / "atlases.json").read_text())
    root = (
        small_atlas.atlas_dir
        if len(index["atlases"]) > 1
        else make_viewer_export(tmp_path_factory.mktemp("viewer_export"), levels=[8, 16], examples=1)
    )
    index = json.loads((root / "atlases.json").read_text())
    server, url = serve_in_thread(root)
    try:
        open_viewer(browser, url)
        ids = [a["id"] for a in index["atlases"]]
        assert browser.execute_script("return atlasViewer.atlases()") == ids
        picker = Select(browser.find_element("id", "picker"))
        assert [o.get_attribute("value") for o in picker.options] == ids
        for entry in index["atlases"][1:]:
            picker.select_by_value(entry["id"])
            wait_for(
                browser,
                f"atlasViewer.atlasId() === {json.dumps(entry['id'])} && atlasViewer.ready() "
                "&& atlasViewer.levelFullyLoaded()",
                what=f"atlas {entry['id']}",
            )
            assert any(entry["path"] in name for name in tile_requests(browser))
            manifest = json.loads((root / entry["path"] / "manifest.json").read_text())
            axis_x = browser.find_element("id", "axis-x")
            if manifest["axes"]["x"]:
                assert axis_x.is_displayed() and axis_x.text == " ".join(
                    manifest["axes"]["x"].split()
                )  # HTML collapses spaces
            else:
                assert not axis_x.is_displayed()
        screenshot(browser, artefacts / "picker_last_atlas.png")
    finally:
        server.shutdown()
        server.server_close()


def test_file_url_renders_tiles(browser: Any, small_atlas: SmallAtlas, artefacts: Path) -> None:
    """Opened straight from the folder (no server, no XHR): tiles and cells still load."""
    open_viewer(browser, small_atlas.index_html.resolve().as_uri())
    assert browser.execute_script("return atlasViewer.tilesLoaded()") > 0
    assert browser.execute_script("return atlasViewer.currentLevel()") == small_atlas.levels[0]
    assert_not_blank(
        element_pixels(screenshot(browser, artefacts / "file_home.png"), browser, "atlas"),
        "the atlas canvas from file://",
    )
    cell = max(load_cells(small_atlas.atlas_dir, "main", small_atlas.levels[0]), key=lambda c: c["count"])
    move_pointer(browser, *cell_centre(browser, cell))
    wait_for(browser, "!document.getElementById('tooltip').hidden", what="the tooltip from file://")
    assert cell["classes"][0]["name"] in browser.find_element("id", "tooltip").text
