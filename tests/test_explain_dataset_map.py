"""stages/explain/dataset_map.py and `atlas dataset-map`: every image on the grid once, exported as a photo atlas.

The grid assignment is checked on its own (a permutation of cells, optimal where the answer is
known), then the command runs on the four real photos (three views each: twelve items) with the
real model and exports into a copy of the small atlas's folder next to the main atlas.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from stages.explain.dataset_map import grid_side, penultimate, snap_to_grid
from stages.model.registry import LoadedModel
from tests.atlas_fixtures import SmallAtlas
from tests.test_viewer_browser import browser  # noqa: F401 - fixture (one headless Chromium per module)


def test_snap_to_grid_gives_every_point_its_own_cell() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((50, 2)) ** 3  # crowded in one corner: many want the same cells
    n = grid_side(50)
    assert n == 8
    i, j = snap_to_grid(points, n)
    cells = i.astype(int) * n + j
    assert len(set(cells.tolist())) == 50 and i.min() >= 0 and j.max() < n
    # points sitting on distinct cell centres keep their own cells (zero cost is optimal)
    centres = np.array([[(3 + 0.5) / 4, (1 + 0.5) / 4], [(0 + 0.5) / 4, (2 + 0.5) / 4], [(2 + 0.5) / 4, (2 + 0.5) / 4]])
    i, j = snap_to_grid(centres, 4)
    assert list(zip(i.tolist(), j.tolist())) == [(3, 1), (0, 2), (2, 2)]
    assert grid_side(10, slack=1.6) == 4 and grid_side(16) == 4 and grid_side(17) == 5


def test_penultimate_captures_the_pooled_features_and_unhooks(mobilenet: LoadedModel) -> None:
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), penultimate(mobilenet.module) as captured:
        logits = mobilenet.module(x)
    codes = torch.cat(captured)
    assert codes.shape == (2, 1280)
    head = mobilenet.module.classifier[1]
    torch.testing.assert_close(head(codes), logits, rtol=1e-4, atol=1e-4)  # the linear layer's input indeed
    assert all(not m._forward_pre_hooks for m in mobilenet.module.modules())


@pytest.fixture(scope="module")
def mapped_atlas(small_atlas: SmallAtlas, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the small atlas's export with `atlas dataset-map` run into it (12 items), and what it printed."""
    import contextlib
    import io

    atlas = tmp_path_factory.mktemp("mapped") / "atlas"
    shutil.copytree(small_atlas.atlas_dir, atlas)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "dataset-map",
                "-q",
                "--set",
                f"data.source={small_atlas.photos}",
                "--set",
                f"data.atlas={atlas}",
                "--set",
                "dataset_map.views_per_image=3",
                "--set",
                "dataset_map.icon_px=32",
                "--set",
                "dataset_map.device=cpu",
                "--set",
                "tiles.tile_size=64",
            ]
        )
    assert code == 0
    return atlas, printed.getvalue()


def test_dataset_map_command_exports_every_image_once(mapped_atlas: tuple[Path, str]) -> None:
    atlas, printed = mapped_atlas
    assert "12 items of 4 photos on a 4x4 grid" in printed
    index = json.loads((atlas / "atlases.json").read_text())
    kinds = {a["id"]: a["kind"] for a in index["atlases"]}
    assert kinds["dataset"] == "dataset" and kinds["main"] == "main"  # added next to the main atlas
    manifest = json.loads((atlas / "dataset" / "manifest.json").read_text())
    assert [lv["n"] for lv in manifest["levels"]] == [4] and manifest["kind"] == "dataset"
    cells = json.loads((atlas / "dataset" / "level_4" / "cells.json").read_text())
    assert len(cells) == 12 and len({(c["i"], c["j"]) for c in cells}) == 12  # every item, each in its own cell
    assert all(c["count"] == 1 and len(c["classes"]) == 5 for c in cells)
    probs = [[k["value"] for k in c["classes"]] for c in cells]
    assert all(p == sorted(p, reverse=True) and 0 < sum(p) <= 1.0001 for p in probs)  # top-5 probabilities
    assert (atlas / "dataset" / "level_4_files").is_dir()
    layout = json.loads((atlas / "dataset" / "layout.json").read_text())
    assert len(layout["x"]) == 12


def test_the_viewer_opens_the_dataset_map_and_explain_pages(mapped_atlas: tuple[Path, str], browser) -> None:
    """The picker lists the map and an explained image; the map opens, hovering a photo names its
    predicted classes; picking the explained image opens its page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    from stages.tiles.export import update_index
    from stages.tiles.source import page_entry
    from tests.test_viewer_browser import wait_for

    atlas, _ = mapped_atlas
    page = atlas / "explain" / "cat-000000" / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<!doctype html><title>explained cat</title><h1>explained</h1>")
    model = json.loads((atlas / "atlases.json").read_text())["model"]
    update_index(
        atlas,
        page_entry(
            "explain/cat-000000",
            "explain",
            "explained: cat.jpg",
            icon_px=16,
            model=model,
            index={"page": "explain/cat-000000/index.html"},
        ),
    )
    browser.get((atlas / "index.html").resolve().as_uri() + "#atlas=dataset")
    wait_for(
        browser,
        "window.atlasViewer && atlasViewer.ready() && atlasViewer.atlasId() === 'dataset'",
        what="the dataset map to open",
    )
    groups = browser.execute_script(
        "return Array.from(document.querySelectorAll('#picker optgroup')).map(g => g.label)"
    )
    assert "dataset maps" in groups and "explained images" in groups
    cells = json.loads((atlas / "dataset" / "level_4" / "cells.json").read_text())
    b = cells[0]["bounds"]
    p = browser.execute_script(
        "return atlasViewer.worldToClient(arguments[0], arguments[1])", (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    )
    actions = ActionChains(browser)
    actions.w3c_actions.pointer_action.move_to_location(int(p["x"]), int(p["y"]))
    actions.perform()
    wait_for(browser, "!document.getElementById('tooltip').hidden", what="the hover tooltip")
    tooltip = browser.execute_script("return document.getElementById('tooltip').textContent")
    assert cells[0]["classes"][0]["name"] in tooltip
    Select(browser.find_element("id", "picker")).select_by_value("explain/cat-000000")
    wait_for(browser, "document.title === 'explained cat'", what="the explain page")
