"""Exploring the atlas in real headless Chromium: class highlight, labels, links, keys, downloads.

The real ``small_atlas`` export (levels 3 and 6 of four photos, tests/atlas_fixtures.py) in
Debian's Chromium through Selenium, with the browser and helpers of tests/test_viewer_browser.py
(skipped only where chromium/chromedriver are missing). Expected values come from the store
(the grid's attribution, the cells' positions) or from matplotlib's viridis, never from the
viewer's own code. Screenshots go to ``$ATLAS_TEST_ARTEFACTS/viewer/``.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.keys import Keys

from stages.tiles.viewer_assets import VIEWER_SOURCE
from store import derived
from tests.atlas_fixtures import SmallAtlas
from tests.test_viewer_browser import (  # noqa: F401
    HEIGHT,
    WAIT_S,
    WIDTH,
    artefacts,
    browser,
    cell_centre,
    load_cells,
    move_pointer,
    screenshot,
    served_atlas,
    settle,
    wait_for,
)


def open_ready(driver: Any, url: str) -> None:
    """Open ``url`` and wait for the atlas, its shown level's tiles and cells."""
    driver.get("about:blank")  # a hash-only change of the same page would not reload it
    driver.get(url)
    wait_for(
        driver,
        "window.atlasViewer && atlasViewer.ready() && atlasViewer.levelFullyLoaded() && atlasViewer.cellsReady()",
        what="the atlas, its tiles and cells",
    )
    assert driver.execute_script("return atlasViewer.error()") is None
    move_pointer(driver, 5, 5)  # off the atlas (the header): no tooltip or hover box in the pictures
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"browser console errors: {severe}"


def body_key(driver: Any, key: str) -> None:
    driver.find_element("tag name", "body").send_keys(key)


def pick_class(store: Any, n: int) -> tuple[int, np.ndarray]:
    """A class supported by some but not all cells of level ``n``, with the widest spread of values."""
    attribution = derived.read_level(store, n).attribution
    support = (attribution > 0).sum(axis=0)
    ok = np.flatnonzero((support >= 2) & (support <= len(attribution) - 2))
    best = ok[np.argmax([attribution[:, c].max() - attribution[:, c][attribution[:, c] > 0].min() for c in ok])]
    return int(best), attribution[:, best]


# ------------------------------------------------------------------------------- pure functions
def _check_hash(run: Any) -> None:
    """hash.js: the URL fragment parsed and formatted; malformed parts dropped."""
    parsed = run("P.hash.parse('#atlas=class%2Ftabby&level=40&view=0.25,0.5,0.125&cell=40:7&hl=label:3')")
    assert parsed == {
        "atlas": "class/tabby",
        "level": 40,
        "view": {"x": 0.25, "y": 0.5, "width": 0.125},
        "cell": {"n": 40, "cell": 7},
        "hl": {"kind": "label", "index": 3},
    }
    assert (
        run("P.hash.format(arguments[0])", parsed)
        == "#atlas=class%2Ftabby&level=40&view=0.25000,0.50000,0.12500&cell=40:7&hl=label:3"
    )
    assert run("P.hash.parse('#class%2Ftabby')")["atlas"] == "class/tabby"  # the older bare form
    assert run("P.hash.parse('#atlas=main&view=1,2,-1&cell=x&hl=foo:1')") == {
        "atlas": "main",
        "level": None,
        "view": None,
        "cell": None,
        "hl": None,
    }


def _check_regions(run: Any) -> None:
    """labels.js: class regions of connected cells, by count x value over each 3 x 3 neighbourhood."""

    # regions: on a 3 x 3 level, a cell's class is the largest count x value in its 3 x 3
    # neighbourhood: A (0,0) and B (1,0) share class 5 (mass 5 + 6), C (2,2) is class 7, D (0,2)
    # is class 5 but not connected to A, B; B's own top class is 7 < 5 in its neighbourhood
    def cell(k, i, j, count, classes):
        return {
            "cell": k,
            "i": i,
            "j": j,
            "count": count,
            "classes": [{"index": c, "name": f"class {c}, long", "value": v} for c, v in classes],
        }

    cells = [
        cell(0, 0, 0, 10, [(5, 0.5)]),
        cell(1, 1, 0, 30, [(7, 0.25), (5, 0.2)]),
        cell(2, 2, 2, 5, [(7, 0.9)]),
        cell(3, 0, 2, 1, [(5, 0.1)]),
    ]
    regions = run("P.labels.regions(arguments[0], 3)", cells)
    # A, B: S(5) = 5 + 6 = 11 > S(7) = 7.5; anchor: the only member whose own top class is 5 (A)
    assert [(r["index"], r["cells"], r["anchor"]) for r in regions] == [(5, 2, 0), (7, 1, 2), (5, 1, 3)]
    assert [r["mass"] for r in regions] == pytest.approx([11, 4.5, 0.1])
    assert regions[0]["name"] == "class 5, long" and (regions[0]["x"], regions[0]["y"]) == pytest.approx((1 / 6, 1 / 6))
    assert run("P.labels.shortName('great white shark, white shark')") == "great white shark"


def _check_label_placement(run: Any) -> None:
    """labels.js: labels placed without overlap, a margin apart, inside the view."""
    # placement: 100 x 16 px labels on a 400 x 400 view (room for 9); b overlaps a, c stays
    # 74 px below a (> 10 px margin), e comes within the margin of c (6 px), d would leave the view
    placed = run(
        "P.labels.place(arguments[0], function (x, y) { return {x: x * 400, y: y * 400}; },"
        " function () { return 94; }, {width: 400, height: 400})",
        [
            {"name": "a", "index": 1, "anchor": 0, "x": 0.5, "y": 0.5},
            {"name": "b", "index": 2, "anchor": 1, "x": 0.6, "y": 0.5},
            {"name": "c", "index": 3, "anchor": 2, "x": 0.5, "y": 0.725},
            {"name": "d", "index": 4, "anchor": 3, "x": 0.01, "y": 0.5},
            {"name": "e", "index": 5, "anchor": 4, "x": 0.5, "y": 0.78},
        ],
    )
    assert [(p["text"], p["x"], p["y"], p["w"]) for p in placed] == [("a", 150, 192, 100), ("c", 150, 282, 100)]


def _check_search(run: Any) -> None:
    """search.js: classes and labels matched, prefixes first, then word starts."""
    entries = run(
        "P.search.entries({classes: ['tabby', 'tiger cat', 'Egyptian cat', 'cattle'],"
        " labels: [{index: 0, name: 'cat_photos', class: -1, rows: 9}]})"
    )
    match = lambda q: [e["name"] for e in run("P.search.match(arguments[0], arguments[1], 10)", entries, q)]  # noqa: E731
    assert match("cat") == ["cat_photos", "cattle", "Egyptian cat", "tiger cat"]  # prefix first, then word starts
    assert match("TAB") == ["tabby"] and match("zebra") == [] and match("  ") == []


def test_hash_labels_and_search_functions(browser: Any) -> None:
    """hash.js, labels.js and search.js run alone on a blank page, against hand-computed cases."""
    browser.get("about:blank")
    for name in ("hash.js", "labels.js", "search.js"):
        browser.execute_script((VIEWER_SOURCE / "viewer" / name).read_text())
    run = lambda script, *args: browser.execute_script(f"var P = AtlasViewerParts; return {script}", *args)  # noqa: E731
    _check_hash(run)
    _check_regions(run)
    _check_label_placement(run)
    _check_search(run)


# ------------------------------------------------------------------------------- zoom and lazy loading
def test_zoom_crossfade_draws_both_levels_and_loads_levels_lazily(
    browser: Any, small_atlas: SmallAtlas, artefacts: Path
) -> None:
    coarse, fine = small_atlas.levels
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    files = browser.execute_script("return atlasViewer.loadedFiles()")
    assert f"main/level_{coarse}/cells.js" in files and f"main/level_{fine}/cells.js" not in files, files
    assert not [f for f in files if "highlight" in f], files  # nothing of the highlight until it is used
    assert browser.execute_script("return atlasViewer.loadedLevels()") == [coarse]

    # narrow the view step by step until the finer level is half faded in
    width = browser.execute_script("return atlasViewer.view().width")
    for _ in range(60):
        width *= 0.98
        browser.execute_script("atlasViewer.setView(0.5, 0.5, arguments[0])", width)
        opacity = browser.execute_script("return atlasViewer.opacities()")
        if 0.3 < opacity[1] < 0.7:
            break
    assert opacity[0] == 1 and 0.3 < opacity[1] < 0.7, opacity
    assert browser.execute_script("return atlasViewer.currentLevel()") == coarse
    wait_for(
        browser,
        f"atlasViewer.levelDrawn({coarse}) && atlasViewer.levelDrawn({fine})",
        what="tiles of both levels drawn during the fade",
    )
    wait_for(browser, "atlasViewer.loadedLevels().length === 2", what="the fading level's cells")
    screenshot(browser, artefacts / "explore_midfade.png")

    browser.execute_script("atlasViewer.setView(0.5, 0.5, arguments[0])", width * 0.6)
    wait_for(
        browser,
        f"atlasViewer.currentLevel() === {fine} && atlasViewer.opacities()[1] === 1",
        what=f"the switch to level {fine}",
    )


# ------------------------------------------------------------------------------- class highlight
def test_highlighted_class_tints_the_right_cells(browser: Any, small_atlas: SmallAtlas, artefacts: Path) -> None:
    from matplotlib import colormaps

    n = small_atlas.levels[0]
    cls, values = pick_class(small_atlas.store, n)
    name = small_atlas.store.class_names[cls]
    cells = load_cells(small_atlas.atlas_dir, "main", n)
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    before = np.asarray(screenshot(browser, artefacts / "explore_before_highlight.png"), np.float64)

    search = browser.find_element("id", "search")
    search.click()
    search.send_keys(name)
    wait_for(browser, "document.querySelectorAll('#search-results li').length > 0", what="autocomplete results")
    first = browser.find_element("css selector", "#search-results li")
    assert first.get_attribute("data-kind") == "class" and first.get_attribute("data-index") == str(cls), first.text
    search.send_keys(Keys.ENTER)
    wait_for(browser, "atlasViewer.highlightReady()", what="the highlight values")
    settle(browser, "the highlight to be drawn")
    after = np.asarray(screenshot(browser, artefacts / "explore_highlight.png"), np.float64)
    assert browser.execute_script("return atlasViewer.highlight()") == {"kind": "class", "index": cls, "name": name}
    assert f"hl=class:{cls}" in browser.execute_script("return location.hash")
    legend = browser.find_element("id", "hl-legend").text
    assert name in legend and "mean attribution" in legend, legend

    top = float(values.max())
    viridis = colormaps["viridis"]
    supported = 0
    for c in cells:
        x0, y0, x1, y1 = c["icon_bounds"]
        p0 = browser.execute_script("return atlasViewer.worldToClient(arguments[0], arguments[1])", x0, y0)
        p1 = browser.execute_script("return atlasViewer.worldToClient(arguments[0], arguments[1])", x1, y1)
        # a patch a quarter into the icon (region labels sit at cell centres)
        y, x = int(0.75 * p0["y"] + 0.25 * p1["y"]), int(0.75 * p0["x"] + 0.25 * p1["x"])
        patch = after[y - 3 : y + 3, x - 3 : x + 3]
        value = float(values[c["cell"]])
        shown = browser.execute_script(f"return atlasViewer.highlightValue({n}, {c['cell']})")
        if value > 0:
            supported += 1
            assert shown == pytest.approx(value, rel=1e-3)
            # the top edge's frame is >= 2 px from y0: row floor(y0) + 1 lies wholly inside it
            frame = after[int(p0["y"]) + 1, int(p0["x"]) + 10]
            want = np.array(viridis(value / top)[:3]) * 255
            assert np.abs(frame - want).max() < 12, (c["cell"], value / top, frame, want)
        else:  # no support: dimmed toward white
            assert shown == 0
            assert patch.min() > 195, (c["cell"], patch.reshape(-1, 3).mean(0))
            assert patch.std() < before[y - 3 : y + 3, x - 3 : x + 3].std() + 1e-6
    assert 2 <= supported <= len(cells) - 2

    # hover the most attributed cell: the class's value beside the top 5
    best = max(cells, key=lambda c: values[c["cell"]])
    move_pointer(browser, *cell_centre(browser, best))
    wait_for(browser, "!document.getElementById('tooltip').hidden", what="the tooltip")
    highlight_row = browser.find_element("css selector", "#tooltip .tt-highlight").text
    assert name in highlight_row and f"{float(f'{top:.3g}'):g}" in highlight_row, highlight_row
    assert len(browser.find_elements("css selector", "#tooltip ol.classes li")) == min(5, len(best["classes"]))


def test_label_highlight_tints_by_share_of_photos(browser: Any, small_atlas: SmallAtlas) -> None:
    """A data-set label (the fixture's 'tabby' folder) tints cells by the share of their samples."""
    n = small_atlas.levels[0]
    store = small_atlas.store
    label = list(store.attrs["label_names"]).index("tabby")
    level = derived.read_level(store, n, with_attribution=False)
    row_labels = store.row_labels()
    share = [float(np.mean(row_labels[level.members(c)] == label)) for c in range(len(level))]
    open_ready(browser, small_atlas.index_html.resolve().as_uri() + f"#atlas=main&hl=label:{label}")
    wait_for(browser, "atlasViewer.highlightReady()", what="the label's values")
    assert browser.execute_script("return atlasViewer.highlight()")["name"] == "tabby"
    shown = [browser.execute_script(f"return atlasViewer.highlightValue({n}, {c})") for c in range(len(level))]
    assert shown == pytest.approx(share, abs=1e-3)
    assert "photos labelled" in browser.find_element("id", "hl-legend").text


# ------------------------------------------------------------------------------- labels
def _expected_regions(cells: dict) -> tuple[dict, dict]:
    """Regions computed independently of the viewer: a cell's class is the largest count x value
    among the top classes of its 3 x 3 neighbourhood; a region is a 4-connected set of cells with
    the same class. Returns ({(i, j): class}, {(i, j): the region's first cell})."""
    at = {(c["i"], c["j"]): c for c in cells.values()}

    def dominant(c: dict) -> int:
        total: dict[int, float] = {}
        for (i, j), nb in at.items():
            if abs(i - c["i"]) <= 1 and abs(j - c["j"]) <= 1:
                for k in nb["classes"]:
                    if k["value"] > 0:
                        total[k["index"]] = total.get(k["index"], 0.0) + nb["count"] * k["value"]
        return min(total, key=lambda k: (-total[k], k))

    dom = {pos: dominant(c) for pos, c in at.items()}
    region: dict = {}
    for start in sorted(at):
        if start in region:
            continue
        region[start], stack = start, [start]
        while stack:
            i, j = stack.pop()
            for nb in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if nb in at and nb not in region and dom[nb] == dom[start]:
                    region[nb] = start
                    stack.append(nb)
    return dom, region


def _check_labels_drawn(labels: list, cells: dict, image: np.ndarray, atlas_box: dict) -> None:
    """Each label is its class's short name, overlaps no other and is drawn as dark text."""
    names = {k["index"]: k["name"] for c in cells.values() for k in c["classes"]}
    for a in labels:
        short = names[a["index"]].split(",")[0].strip()
        assert a["text"] == (short if len(short) <= 18 else short[:17] + "\u2026")
        for b in labels:
            if a is not b:
                assert (
                    a["x"] + a["w"] <= b["x"]
                    or b["x"] + b["w"] <= a["x"]
                    or a["y"] + a["h"] <= b["y"]
                    or b["y"] + b["h"] <= a["y"]
                )
        box = image[
            int(atlas_box["y"] + a["y"]) : int(atlas_box["y"] + a["y"] + a["h"]),
            int(atlas_box["x"] + a["x"]) : int(atlas_box["x"] + a["x"] + a["w"]),
        ]
        assert (box.max(axis=2) < 60).sum() > 20, a  # dark text drawn there


def test_region_labels_at_the_overview(browser: Any, small_atlas: SmallAtlas, artefacts: Path) -> None:
    coarse = small_atlas.levels[0]
    cells = {c["cell"]: c for c in load_cells(small_atlas.atlas_dir, "main", coarse)}
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    labels = browser.execute_script("return atlasViewer.labels()")
    image = np.asarray(screenshot(browser, artefacts / "explore_labels.png"), np.float64)
    dom, region = _expected_regions(cells)
    assert len(labels) == len(set(region.values()))  # every region labelled: the 3 x 3 overview has room
    anchors = [(cells[a["anchor"]]["i"], cells[a["anchor"]]["j"]) for a in labels]
    assert len({region[pos] for pos in anchors}) == len(labels)  # one label per region
    for a, pos in zip(labels, anchors):
        assert a["index"] == dom[pos]  # the region's class
    _check_labels_drawn(labels, cells, image, browser.find_element("id", "atlas").rect)

    width = browser.execute_script("return atlasViewer.view().width")
    browser.execute_script("atlasViewer.setView(0.5, 0.5, arguments[0])", width / 3)
    wait_for(browser, f"atlasViewer.currentLevel() === {small_atlas.levels[-1]}", what="the finer level")
    assert browser.execute_script("return atlasViewer.labels()") == []
    browser.find_element("id", "labels-toggle").click()  # off at the overview too
    browser.execute_script("atlasViewer.setView(0.5, 0.5, arguments[0])", width)
    assert browser.execute_script("return atlasViewer.labels()") == []
    browser.find_element("id", "labels-toggle").click()


# ------------------------------------------------------------------------------- links, history, keys
def _select_and_highlight(browser: Any, small_atlas: SmallAtlas, fine: int, cls: int) -> tuple[dict, dict, str]:
    """Zoom to the finer level, click its fullest cell near the centre, highlight ``cls``; the
    cell, the settled view and the page's link."""
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    browser.execute_script(
        "atlasViewer.setView(0.55, 0.45, arguments[0])", browser.execute_script("return atlasViewer.view().width") / 2.4
    )
    wait_for(browser, f"atlasViewer.currentLevel() === {fine} && atlasViewer.cellsReady()", what="the finer level")
    cells = load_cells(small_atlas.atlas_dir, "main", fine)
    visible = [
        c
        for c in cells
        if 0.3 < (c["bounds"][0] + c["bounds"][2]) / 2 < 0.8 and 0.25 < (c["bounds"][1] + c["bounds"][3]) / 2 < 0.65
    ]
    target = max(visible, key=lambda c: c["count"])
    move_pointer(browser, *cell_centre(browser, target), click=True)
    wait_for(browser, f"atlasViewer.selected() && atlasViewer.selected().cell === {target['cell']}", what="the click")
    browser.execute_script(f"atlasViewer.setHighlight('class', {cls})")
    wait_for(browser, "atlasViewer.highlightReady()", what="the highlight")
    settle(browser, "the view to settle")  # the viewport part of the hash is written once the view settles
    return target, browser.execute_script("return atlasViewer.view()"), browser.current_url


def _check_smaller_window(browser: Any, url: str, fine: int, target: dict, view: dict) -> None:
    """A smaller window shows the same viewport with smaller cells; the link's level still wins."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 760, "height": 560, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        open_ready(browser, url)
        wait_for(browser, "atlasViewer.selected() && atlasViewer.highlightReady()", what="the restored state")
        assert browser.execute_script("return atlasViewer.currentLevel()") == fine
        assert browser.execute_script("return atlasViewer.selected()") == {"n": fine, "cell": target["cell"]}
        small = browser.execute_script("return atlasViewer.view()")
        assert (small["x"], small["y"]) == pytest.approx((view["x"], view["y"]), abs=2e-3)
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )


def _check_back_steps_through_key_selections(browser: Any) -> None:
    """Two more selections by keyboard, then back steps through them."""
    first = browser.execute_script("return atlasViewer.selected()")
    seen = [first]
    for key in (Keys.ARROW_LEFT, Keys.ARROW_UP, Keys.ARROW_RIGHT, Keys.ARROW_DOWN):
        body_key(browser, key)
        time.sleep(0.1)
        now = browser.execute_script("return atlasViewer.selected()")
        if now != seen[-1]:
            seen.append(now)
        if len(seen) == 3:
            break
    assert len(seen) == 3, seen
    for expected in (seen[1], seen[0]):
        browser.back()
        wait_for(
            browser,
            f"atlasViewer.selected() && atlasViewer.selected().n === {expected['n']} "
            f"&& atlasViewer.selected().cell === {expected['cell']}",
            what=f"back to {expected}",
        )


def test_deep_link_reopens_the_same_view_and_back_steps_through_selections(
    browser: Any, small_atlas: SmallAtlas, served_atlas: str
) -> None:
    coarse, fine = small_atlas.levels
    cls, _ = pick_class(small_atlas.store, coarse)
    target, view, link = _select_and_highlight(browser, small_atlas, fine, cls)
    assert f"cell={fine}:{target['cell']}" in link and f"hl=class:{cls}" in link and f"level={fine}" in link, link

    hash_ = link[link.index("#") :]
    for url in (small_atlas.index_html.resolve().as_uri() + hash_, served_atlas + hash_):
        open_ready(browser, url)
        wait_for(browser, "atlasViewer.selected() && atlasViewer.highlightReady()", what="the restored state")
        assert browser.execute_script("return atlasViewer.currentLevel()") == fine
        assert browser.execute_script("return atlasViewer.selected()") == {"n": fine, "cell": target["cell"]}
        assert browser.execute_script("return atlasViewer.highlight()")["index"] == cls
        again = browser.execute_script("return atlasViewer.view()")
        assert again == pytest.approx(view, abs=2e-5)
        assert f"{target['count']} samples" in browser.find_element("id", "panel").text

    _check_smaller_window(browser, small_atlas.index_html.resolve().as_uri() + hash_, fine, target, view)
    open_ready(browser, served_atlas + hash_)
    _check_back_steps_through_key_selections(browser)


def test_arrow_keys_move_the_selection_and_plus_minus_escape(browser: Any, small_atlas: SmallAtlas) -> None:
    coarse = small_atlas.levels[0]
    cells = load_cells(small_atlas.atlas_dir, "main", coarse)
    at = {(c["i"], c["j"]): c for c in cells}
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    start = max(cells, key=lambda c: c["count"])
    move_pointer(browser, *cell_centre(browser, start), click=True)
    wait_for(browser, f"atlasViewer.selected() && atlasViewer.selected().cell === {start['cell']}", what="the click")
    n = coarse

    def neighbour(c: dict, di: int, dj: int) -> dict:
        """The nearest kept cell in that direction along the row/column, or c itself at the edge."""
        i, j = c["i"] + di, c["j"] + dj
        while 0 <= i < n and 0 <= j < n:
            if (i, j) in at:
                return at[(i, j)]
            i, j = i + di, j + dj
        return c

    current = start
    for key, d in (
        (Keys.ARROW_RIGHT, (1, 0)),
        (Keys.ARROW_DOWN, (0, 1)),
        (Keys.ARROW_LEFT, (-1, 0)),
        (Keys.ARROW_LEFT, (-1, 0)),
        (Keys.ARROW_UP, (0, -1)),
        (Keys.ARROW_UP, (0, -1)),
    ):
        body_key(browser, key)
        current = neighbour(current, *d)
        wait_for(browser, f"atlasViewer.selected().cell === {current['cell']}", what=f"cell {current['cell']}")
        assert f"cell ({current['i']}, {current['j']})" in browser.find_element("id", "cell-info").text

    width = browser.execute_script("return atlasViewer.view().width")
    body_key(browser, "+")
    wait_for(browser, f"Math.abs(atlasViewer.view().width / {width / 1.5} - 1) < 0.02", what="the zoom in by 1.5")
    settle(browser, "the zoom to end")
    assert browser.execute_script("return atlasViewer.view().width") == pytest.approx(width / 1.5, rel=0.02)
    body_key(browser, "-")
    wait_for(browser, f"Math.abs(atlasViewer.view().width / {width} - 1) < 0.02", what="the zoom back out")
    settle(browser, "the zoom to end")
    assert browser.execute_script("return atlasViewer.view().width") == pytest.approx(width, rel=0.02)
    browser.execute_script("atlasViewer.setHighlight('class', arguments[0])", pick_class(small_atlas.store, coarse)[0])
    wait_for(browser, "atlasViewer.highlight() !== null", what="the highlight")
    body_key(browser, Keys.ESCAPE)
    assert browser.execute_script("return atlasViewer.selected()") is None
    assert browser.execute_script("return atlasViewer.highlight()") is not None
    body_key(browser, Keys.ESCAPE)
    assert browser.execute_script("return atlasViewer.highlight()") is None


# ------------------------------------------------------------------------------- downloads
def test_download_saves_the_view_png_and_the_cell_json(
    browser: Any, small_atlas: SmallAtlas, served_atlas: str, tmp_path: Path
) -> None:
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path), "eventsEnabled": True}
    )
    coarse = small_atlas.levels[0]
    cells = load_cells(small_atlas.atlas_dir, "main", coarse)
    cell = max(cells, key=lambda c: c["count"])
    open_ready(browser, served_atlas)
    move_pointer(browser, *cell_centre(browser, cell), click=True)
    wait_for(browser, "atlasViewer.selected() !== null", what="the click")
    atlas_rect = browser.find_element("id", "atlas").rect
    browser.find_element("id", "save-view").click()
    browser.find_element("id", "save-cell").click()
    view_png, cell_json = (
        tmp_path / "atlas-main-view.png",
        tmp_path / f"atlas-main-level{coarse}-cell{cell['cell']}.json",
    )
    deadline = time.monotonic() + WAIT_S  # a ceiling, not a speed requirement
    while not (view_png.exists() and cell_json.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert view_png.exists() and cell_json.exists(), list(tmp_path.iterdir())
    assert browser.find_element("id", "atlas").rect == atlas_rect  # status messages do not move the page
    view = Image.open(view_png).convert("RGB")
    assert view.size == (round(atlas_rect["width"]), round(atlas_rect["height"]))
    assert np.asarray(view, np.float64).std() > 15
    record = json.loads(cell_json.read_text())
    assert record["atlas"] == "main" and record["level"] == coarse and record["cell"] == cell
    assert record["link"].endswith(f"cell={coarse}:{cell['cell']}")
    icon = Image.open(io.BytesIO(base64.b64decode(record["icon"].split(",", 1)[1]))).convert("RGB")
    assert icon.size == (record["icon_px"], record["icon_px"]) and np.asarray(icon, np.float64).std() > 10

    # from file:// the browser refuses to read the tiles' pixels: a clear message, the data still saved
    open_ready(browser, small_atlas.index_html.resolve().as_uri())
    move_pointer(browser, *cell_centre(browser, cell), click=True)
    wait_for(browser, "atlasViewer.selected() !== null", what="the click")
    browser.find_element("id", "save-view").click()
    wait_for(browser, "document.getElementById('status').textContent.includes('atlas serve')", what="the file:// note")
    record = browser.execute_async_script("atlasViewer.cellRecord().then(arguments[arguments.length - 1])")
    assert record["cell"] == cell and record["icon"] is None and "atlas serve" in record["icon_note"]
