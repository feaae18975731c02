"""Aligned atlases: the same image locations on two layers, linear maps, one shared layout, agreement,
`atlas align` end to end (real MobileNetV2, two layers of different resolution) and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages.align import agreement, maps
from stages.align.layout import shared_layout, split_groups
from stages.align.sides import require_same_inputs
from stages.collect.blocks import image_positions, to_layer_grid
from stages.config import Config, ReduceConfig
from stages.context import StageContext
from stages.sections import AlignSection, CollectSection
from store.errors import AtlasError

MOBILENET = "mobilenet_v2"
DEEP, MID = "features.17.conv.0", "features.13.conv.0"  # 960 x 7 x 7 and 576 x 14 x 14


# ------------------------------------------------------------------------------- pure math
def test_image_locations_map_to_the_same_place_on_grids_of_any_resolution() -> None:
    points = image_positions(range(10, 60), 3, margin=1 / 7, seed=0)
    assert points.shape == (50, 3, 2) and points.min() >= 1 / 7 and points.max() < 6 / 7
    assert np.array_equal(points, image_positions(range(10, 60), 3, margin=1 / 7, seed=0))  # a pure function
    assert not np.array_equal(points, image_positions(range(10, 60), 3, margin=1 / 7, seed=1))
    coarse, fine, odd = to_layer_grid(points, 7, 7), to_layer_grid(points, 14, 14), to_layer_grid(points, 10, 10)
    assert coarse.min() >= 1 and coarse.max() <= 5  # the margin keeps the 7x7 layer's border cells out
    assert np.array_equal(fine // 2, coarse)  # a 14x14 cell lies inside the 7x7 cell over the same place
    for grid, n in ((coarse, 7), (fine, 14), (odd, 10)):  # each cell covers the point it was mapped from
        assert np.all(grid / n <= points) and np.all(points < (grid + 1) / n)


def test_linear_maps_recover_a_known_map_and_score_on_held_out_photos() -> None:
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(600, 20)), 0) * 3.0
    true_map = rng.normal(size=(20, 20))
    b = a @ true_map + 0.01 * rng.normal(size=(600, 20))
    photos = np.repeat(np.arange(150), 4)  # 4 rows per photo
    fitted = maps.fit_aligned_maps(a, b, photos, test_fraction=0.2, ridge=[1e-6, 1e-3, 1.0], seed=0)
    assert fitted.n_test == 120 and fitted.n_fit == 480  # 30 whole photos held out
    assert fitted.a_to_b.r2_test > 0.999 and fitted.b_to_a.r2_test > 0.99
    assert fitted.a_to_b.ridge < 1.0  # cross-validation chose a small penalty for an exact map
    # on the RMS-normalised sides the map is the true one rescaled
    scale = fitted.scale_a / fitted.scale_b
    assert np.allclose(fitted.a_to_b.coef, true_map * scale, atol=0.02 * np.abs(true_map * scale).max())
    unrelated = maps.fit_aligned_maps(a, rng.normal(size=(600, 20)), photos, 0.2, [0.01, 1.0, 100.0], seed=0)
    assert unrelated.a_to_b.r2_test < 0.05
    test = maps.held_out_split(photos, 0.2, seed=3)
    for photo in range(150):  # a photo's rows are all fit or all test
        assert len(set(test[photos == photo].tolist())) == 1


def test_shared_layout_is_one_fit_split_in_two() -> None:
    rng = np.random.default_rng(1)
    rows_a = rng.normal(size=(200, 12)).astype(np.float32)
    cfg = ReduceConfig(method="pca", metric="euclidean", pca_dims=None)
    same = shared_layout(rows_a, rows_a.copy(), cfg)
    assert np.array_equal(same.layout_a, same.layout_b)  # identical rows land on identical points
    shifted = rows_a + np.float32(8.0) * np.eye(12, dtype=np.float32)[0]
    apart = shared_layout(rows_a, shifted, cfg)
    from stages.reduce.stage import layout_in_memory

    whole = layout_in_memory(np.concatenate([rows_a, shifted]), cfg)
    assert np.array_equal(np.concatenate([apart.layout_a, apart.layout_b]), whole.layout)  # one fit, split
    assert abs(apart.layout_a[:, 0].mean() - apart.layout_b[:, 0].mean()) > 0.5  # one frame: the shift shows
    with pytest.raises(ValueError):
        split_groups(np.zeros(5), (2, 2))


def test_knn_overlap_and_cell_agreement() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    same = agreement.knn_overlap(agreement.knn_indices(x, 5), agreement.knn_indices(x * 3.0, 5))
    assert np.all(same == 1.0)
    other = agreement.knn_overlap(agreement.knn_indices(x, 5), agreement.knn_indices(rng.normal(size=(300, 16)), 5))
    assert other.mean() < 0.1
    from store.derived import CellLevel

    def level(i: list[int], j: list[int], members: list[list[int]]) -> CellLevel:
        offsets = np.cumsum([0] + [len(m) for m in members])
        k = len(i)
        return CellLevel(
            n=2,
            i=np.array(i, np.int32),
            j=np.array(j, np.int32),
            count=np.diff(offsets),
            direction=np.zeros((k, 1), np.float32),
            attribution=None,
            top_idx=np.array([[c, -1] for c in range(k)], np.int32),
            top_val=np.ones((k, 2), np.float32),
            member_offsets=offsets.astype(np.int64),
            member_rows=np.concatenate(members).astype(np.int64),
        )

    a = level([0, 1], [0, 0], [[0, 1, 2], [3, 4]])
    b = level([0], [0], [[0, 3, 4]])
    row_knn = np.array([1.0, 0.5, 0.0, 0.2, 0.4], np.float32)
    b_cells = np.array([0, 0, 1, 0, 0])  # b puts rows 0, 1, 3, 4 in cell 0 and row 2 in cell (1, 0)
    got = agreement.cell_agreement(a, b, row_knn, b_cells)
    assert np.allclose(got.knn, [0.5, 0.3]) and np.allclose(got.same_cell, [2 / 3, 0.0])
    assert got.partner.tolist() == [0, -1]


def test_label_ceiling_is_whether_a_cells_label_meets_its_members_own_predictions() -> None:
    """A side's label ceiling (align.json, the aligned viewer): a cell's top-5 attributed classes against the 5
    classes its own model most often predicts for the cell's members; cells without a label are not judged."""
    from store.derived import CellLevel

    members = [[0, 1, 2], [3, 4], [5, 6]]
    offsets = np.cumsum([0] + [len(m) for m in members]).astype(np.int64)
    level = CellLevel(
        n=2,
        i=np.array([0, 1, 0], np.int32),
        j=np.array([0, 0, 1], np.int32),
        count=np.diff(offsets),
        direction=np.zeros((3, 1), np.float32),
        attribution=None,
        top_idx=np.array([[7, 3, -1], [9, -1, -1], [-1, -1, -1]], np.int32),
        top_val=np.array([[2, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32),
        member_offsets=offsets,
        member_rows=np.concatenate(members).astype(np.int64),
    )
    row_top1 = np.array([3, 3, 5, 8, 8, 7, 7])  # cell 0's members: 3, 3, 5 (meets 3); cell 1's: 8, 8 (not 9)
    meets = agreement.label_meets(level, row_top1)
    assert meets[:2].tolist() == [1.0, 0.0] and np.isnan(meets[2])  # cell 2 has no label: not judged
    assert agreement.ceiling(meets) == {"cells": 2, "meet": 1, "fraction": 0.5}
    row_top1[[3, 4]] = 9  # now cell 1's members are predicted as its label
    assert agreement.ceiling(agreement.label_meets(level, row_top1))["fraction"] == 1.0
    assert np.isnan(agreement.ceiling(np.full(2, np.nan, np.float32))["fraction"])


def test_command_line_specs() -> None:
    from pipeline.cli import main
    from pipeline.commands.align import parse_spec

    assert parse_spec("stages.model.factories:efficientnet_lite0@_blocks.15._swish") == {
        "name": "stages.model.factories:efficientnet_lite0",
        "layer": "_blocks.15._swish",
    }
    assert parse_spec("resnet50@layer3@/w/r.pth") == {"name": "resnet50", "layer": "layer3", "weights": "/w/r.pth"}
    with pytest.raises(AtlasError, match="expected MODEL@LAYER"):
        parse_spec("mobilenet_v2")
    assert main(["align", "mobilenet_v2@features.17.conv.0"]) == 2  # one spec: a one-line error, exit 2


# ------------------------------------------------------------------------------- stores and the stage
def _config(root: Path, photos: Path, b_name: str = MOBILENET, b_layer: str = MID) -> Config:
    cfg = Config()
    cfg.data.source, cfg.data.atlas = str(photos), str(root / "atlas")
    cfg.collect.num_workers, cfg.collect.batch_size, cfg.collect.device, cfg.collect.rows_per_chunk = 0, 16, "cpu", 32
    cfg.reduce.method, cfg.reduce.n_neighbors = "pca", 10
    cfg.render.size, cfg.render.steps, cfg.render.batch_size, cfg.render.device = 24, 8, 16, "cpu"
    cfg.tiles.tile_size, cfg.tiles.examples, cfg.tiles.example_px = 64, 1, 32
    pair = {"a": {"name": MOBILENET, "layer": DEEP}, "b": {"name": b_name, "layer": b_layer}, "name": "pair"}
    cfg.align = type(cfg.align).model_validate(
        {
            "pairs": [pair],
            "folder": str(root / "align"),
            "views_per_image": 4,
            "positions_per_image": 4,
            "levels": [2, 4],
            "min_count": 1,
            "knn": 5,
            "test_fraction": 0.25,
            "ridge": [0.1, 1.0],
            "render": {},  # no overrides: the tiny main render above (the default is the demo's 64 px, 64 steps)
        }
    )
    return cfg


@pytest.mark.parametrize(
    "side, spec, message",
    [
        ("a", {"name": "no_such_package_xyz:factory"}, r"model a \(no_such_package_xyz:factory @ .*cannot import"),
        (
            "b",
            {"layer": "features.99.conv"},
            r"model b \(mobilenet_v2 @ features\.99\.conv\).*layer 'features\.99\.conv' not found",
        ),
    ],
)
def test_bad_pair_is_one_line_and_writes_nothing(
    side: str, spec: dict, message: str, tmp_path: Path, photo_folder: Path, mobilenet
) -> None:
    from stages.align import stage as align

    cfg = _config(tmp_path, photo_folder)
    pair = cfg.align.pairs[0].model_dump()
    pair[side].update(spec)
    cfg.align.pairs = [type(cfg.align.pairs[0]).model_validate(pair)]
    with pytest.raises(AtlasError, match=message) as err:
        align.run(AlignSection.of(cfg), StageContext(device=torch.device("cpu")))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "align").exists() and not (tmp_path / "atlas").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ("source", r"missing_photos: image source not found"),
        ("image_size", r"align pair second: image_size 224 vs 160"),
    ],
)
def test_inputs_are_checked_before_any_model_loads(
    change: str, message: str, tmp_path: Path, photo_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing data.source, or a later pair whose sides see other input sizes, stops before the first
    model loads (each side's load is seconds to minutes), in one line, with nothing written."""
    from stages.align import stage as align

    loads: list[str] = []
    monkeypatch.setattr(align, "load_model", lambda config, device: loads.append(config.name))
    cfg = _config(tmp_path, photo_folder)
    pair = cfg.align.pairs[0].model_dump()
    if change == "source":
        cfg.data.source = str(tmp_path / "missing_photos")
    else:
        second = {
            **pair,
            "name": "second",
            "a": {**pair["a"], "image_size": 224},
            "b": {**pair["b"], "image_size": 160},
        }
        cfg.align.pairs = [type(cfg.align.pairs[0]).model_validate(p) for p in (pair, second)]
    with pytest.raises(AtlasError, match=message) as err:
        align.run(AlignSection.of(cfg), StageContext(device=torch.device("cpu")))
    assert "\n" not in str(err.value)
    assert loads == []
    assert not (tmp_path / "align").exists() and not (tmp_path / "atlas").exists()


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path, mobilenet):
    """`atlas align` run once on two layers of real MobileNetV2 (7x7 and 14x14) over the four photos."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("aligned")
    cfg = _config(root, photo_folder)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return root, cfg, params, main(["align", "--params", str(params), "-q"])


def _check_same_locations(stores: dict, cfg: Config, mobilenet, photo_folder: Path) -> None:
    """Both sides' rows are the same image locations (the 14x14 layer's cell inside the 7x7 one's)."""
    from stages.collect.stage import store_spec
    from stages.images.sources import open_image_source

    yx_a, yx_b = stores["a"].row_values("yx"), stores["b"].row_values("yx")
    assert stores["a"].n_rows == stores["b"].n_rows == 4 * 4 * 4
    assert np.array_equal(yx_b // 2, yx_a)  # the 14x14 layer's cell lies inside the 7x7 layer's, row by row
    assert stores["a"].attrs["sampling"]["image_margin"] == cfg.align.image_margin
    assert (
        "image_margin"
        not in store_spec(CollectSection.of(Config()), mobilenet, open_image_source(str(photo_folder))).sampling
    )


def _check_export(out: Path, report: dict, stores: dict, root: Path) -> tuple[dict, dict]:
    """align.json, both sides' cells and the synced page; one layout frame over both groups.
    Returns the sides' subsets and layouts."""
    from store import derived
    from store.subset import SubsetStore

    assert report["rows"] == 64 and report["sides"]["b"]["layer_shape"] == [576, 14, 14]
    for direction in ("a_to_b", "b_to_a"):
        # 48 fit rows of 960 / 576 channels: the fit is good, the held-out score is only reported
        assert np.isfinite(report["maps"][direction]["r2_test"]) and report["maps"][direction]["r2_fit"] > 0.5
    assert [lv["n"] for lv in report["levels"]] == [2, 4]
    for key in "ab":
        cells = json.loads((out / key / "level_4" / "cells.json").read_text())
        assert len(report["cells"]["4"][key]["knn"]) == len(cells) > 0
    assert (out / "aligned.html").is_file() and (out / "viewer" / "aligned.js").is_file()
    subsets = {k: SubsetStore.open(stores[k], k, root / "align" / "pair") for k in "ab"}
    layouts = {k: derived.read_layout(subsets[k]) for k in "ab"}
    assert np.array_equal(layouts["a"].rows, layouts["b"].rows)
    both = np.concatenate([layouts["a"].layout, layouts["b"].layout])
    assert both.min() == 0.0 and both.max() == 1.0  # one frame, normalised over both groups
    return subsets, layouts


def _check_label_ceilings(report: dict, stores: dict, subsets: dict) -> None:
    """Each side's label ceiling: atlas fidelity's, per cell and level, pooled per side."""
    from stages.render.fidelity import members_overlap
    from store import derived

    for key in "ab":
        top1 = stores[key].row_values("top_pred_idx")[:, 0]
        pooled = []
        for lv in report["levels"]:
            level = derived.read_level(subsets[key], lv["n"], with_attribution=False)
            want, labelled = members_overlap(level, top1), (level.top_idx[:, :5] >= 0).any(axis=1)
            got = report["cells"][str(lv["n"])][key]["meets"]
            assert len(got) == len(level) and all((g is None) == (not lab) for g, lab in zip(got, labelled))
            assert [g for g in got if g is not None] == want[labelled].astype(float).tolist()
            assert lv[f"labelled_{key}"] == int(labelled.sum()) > 0
            assert lv[f"ceiling_{key}"] == pytest.approx(want[labelled].mean())
            pooled += want[labelled].tolist()
        assert report["sides"][key]["label_ceiling"] == {
            "cells": len(pooled),
            "meet": int(sum(pooled)),
            "fraction": pytest.approx(float(np.mean(pooled))),
        }


def _check_rerun_prints_the_ceilings(params: Path, report: dict, capsys) -> None:
    """A rerun renders nothing and prints each side's ceiling, per side and per level."""
    from pipeline.cli import main

    capsys.readouterr()
    assert main(["align", "--params", str(params), "-q"]) == 0  # resumed: nothing left to do
    printed = capsys.readouterr().out
    assert " 0 icons rendered" in printed and "held-out R^2" in printed and "aligned.html" in printed

    def pct(v: float) -> str:
        return f"{100 * v:.1f}%" if abs(v) < 0.1 else f"{100 * v:.0f}%"

    for key in "ab":  # a label never without its credibility
        side = report["sides"][key]
        got = side["label_ceiling"]
        assert (
            f"label ceiling {key} ({side['label']}): {pct(got['fraction'])} of its labelled cells "
            f"({got['meet']} of {got['cells']})"
        ) in printed
    for lv in report["levels"]:
        assert f"{pct(lv['ceiling_a'])} ({lv['labelled_a']}) / {pct(lv['ceiling_b'])} ({lv['labelled_b']})" in printed


def _check_other_inputs_refused(root: Path, cfg: Config, photo_folder: Path, stores: dict) -> None:
    """A store of other photos, or one that sampled its layer's own cells, is refused in one line."""
    from stages.align.sides import side_config
    from stages.collect import stage as collect
    from store.atlas_store import AtlasStore

    other = root / "other_photos"
    other.mkdir()
    for p in sorted(photo_folder.rglob("*.jpg"))[:3]:
        (other / p.name).write_bytes(p.read_bytes())
    other_cfg = side_config(AlignSection.of(cfg), cfg.align.pairs[0].b).model_copy(deep=True)
    other_cfg.data.source, other_cfg.data.store = str(other), str(root / "other.zarr")
    other_cfg.collect.head = False  # activations suffice here
    collect.run(other_cfg, StageContext(device=torch.device("cpu")))
    with pytest.raises(AtlasError, match="different inputs: photos") as err:
        require_same_inputs(stores["a"], AtlasStore.open(root / "other.zarr"))
    assert "\n" not in str(err.value)
    plain = side_config(AlignSection.of(cfg), cfg.align.pairs[0].b).model_copy(deep=True)
    plain.collect.image_margin, plain.collect.head, plain.data.store = None, False, str(root / "plain.zarr")
    collect.run(plain, StageContext(device=torch.device("cpu")))
    with pytest.raises(AtlasError, match="sampled its layer's own cells"):
        require_same_inputs(stores["a"], AtlasStore.open(root / "plain.zarr"))


def test_align_end_to_end_two_layers_resume_and_inputs_check(aligned, photo_folder: Path, mobilenet, capsys) -> None:
    """The stores' rows are the same image locations on both layers; the export holds both sides,
    align.json and the synced page; a rerun reuses the layout and renders nothing; stores of other
    inputs are refused in one line."""
    from stages.align.sides import side_config
    from store import derived
    from store.atlas_store import AtlasStore

    root, cfg, params, status = aligned
    assert status == 0
    stores = {
        k: AtlasStore.open(side_config(AlignSection.of(cfg), getattr(cfg.align.pairs[0], k)).data.store) for k in "ab"
    }
    _check_same_locations(stores, cfg, mobilenet, photo_folder)
    out = root / "atlas" / "align" / "pair"
    report = json.loads((out / "align.json").read_text())
    subsets, layouts = _check_export(out, report, stores, root)
    _check_label_ceilings(report, stores, subsets)
    _check_rerun_prints_the_ceilings(params, report, capsys)
    assert derived.read_layout(subsets["a"]).layout_id == layouts["a"].layout_id  # the rerun reused the layout
    _check_other_inputs_refused(root, cfg, photo_folder, stores)


# ------------------------------------------------------------------------------- the synced viewer
def _chromium(tmp: Path):
    """Headless Chromium as tests/test_viewer_browser.py starts it (skips when it is not installed)."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from tests.test_viewer_browser import start_chromium

    return start_chromium(tmp / "chromium_profile")


def _wait(driver, script: str, what: str) -> object:
    """Poll a JS expression until truthy (tests/test_viewer_browser.py's wait_for and its generous ceiling)."""
    from tests.test_viewer_browser import wait_for

    return wait_for(driver, script, what=what)


def _check_zoom_and_pan_follow(driver) -> None:
    """Zooming one side zooms the other to the same view and level; panning either moves both."""
    view = lambda key: driver.execute_script("return alignedViewer.view(arguments[0])", key)  # noqa: E731
    home = view("a")
    assert view("b") == pytest.approx(home)

    driver.execute_script("alignedViewer.zoomBy('a', 3)")  # zoom one side: the other follows
    _wait(
        driver,
        "!alignedViewer.animating() && alignedViewer.view('a').width < 0.5 && alignedViewer.currentLevel('a') === 4",
        "side a to zoom in to the 4x4 level and settle",
    )
    _wait(
        driver,
        "Math.abs(alignedViewer.view('b').width - alignedViewer.view('a').width) < 1e-6 && "
        "Math.abs(alignedViewer.view('b').x - alignedViewer.view('a').x) < 1e-6",
        "side b to follow",
    )
    zoomed = view("a")
    assert zoomed["width"] < home["width"] / 2 and view("b") == pytest.approx(zoomed, abs=1e-6)
    assert driver.execute_script("return alignedViewer.currentLevel('b')") == 4

    driver.execute_script("alignedViewer.panTo('b', 0.3, 0.6)")  # and the other way round
    _wait(
        driver,
        "!alignedViewer.animating() && "
        "Math.abs(alignedViewer.view('a').x + alignedViewer.view('a').width / 2 - 0.3) < 1e-3",
        "side a to follow side b",
    )


def _click_the_biggest_cell(driver, out: Path) -> dict:
    """Centre both sides on side a's most populated level-4 cell and click it; the cell's record."""
    from selenium.webdriver.common.action_chains import ActionChains

    cells = json.loads((out / "a" / "level_4" / "cells.json").read_text())
    cell = max(cells, key=lambda c: c["count"])
    x0, y0, x1, y1 = cell["bounds"]
    driver.execute_script("alignedViewer.panTo('a', arguments[0], arguments[1])", (x0 + x1) / 2, (y0 + y1) / 2)
    _wait(
        driver,
        "!alignedViewer.animating() && "
        f"Math.abs(alignedViewer.view('b').x + alignedViewer.view('b').width / 2 - {(x0 + x1) / 2}) < 1e-3",
        "the view to centre on the cell",
    )
    p = driver.execute_script(
        "return alignedViewer.worldToClient('a', arguments[0], arguments[1])", (x0 + x1) / 2, (y0 + y1) / 2
    )
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(p["x"]), int(p["y"]))
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    _wait(driver, "alignedViewer.selected() !== null", "the click to select the cell")
    return cell


def _check_selection_on_both_sides(driver, cell: dict) -> None:
    """The clicked cell is selected, outlined at the same place of both panes and described."""
    assert driver.execute_script("return alignedViewer.selected()") == {"n": 4, "i": cell["i"], "j": cell["j"]}
    boxes = {k: driver.execute_script("return alignedViewer.box(arguments[0], 'selected')", k) for k in "ab"}
    panes = {k: driver.find_element("id", f"atlas-{k}").rect for k in "ab"}
    assert boxes["a"]["width"] > 20  # the same cell outlined at the same place of both panes
    assert boxes["a"]["left"] - panes["a"]["x"] == pytest.approx(boxes["b"]["left"] - panes["b"]["x"], abs=1)
    assert boxes["a"]["top"] == pytest.approx(boxes["b"]["top"], abs=1)
    panel = driver.find_element("id", "agree").text
    assert f"cell ({cell['i']}, {cell['j']}) of 4\u00d74" in panel and "kNN overlap" in panel
    assert "label vs members' predictions" in panel
    assert cell["classes"][0]["name"] in driver.find_element("id", "cell-a").text


def _check_pane_drawn_and_no_errors(driver) -> None:
    """Side a's pane shows icons (varied pixels, many colours); the browser logged no error."""
    import io

    from PIL import Image

    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    r = driver.find_element("id", "atlas-a").rect
    pixels = np.asarray(shot.crop((int(r["x"]), int(r["y"]), int(r["x"] + r["width"]), int(r["y"] + r["height"]))))
    assert pixels.std() > 15 and len(np.unique((pixels // 8).reshape(-1, 3), axis=0)) > 100
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_synced_viewer_zoom_hover_and_click_follow_on_both_sides(aligned, tmp_path: Path) -> None:
    from pipeline.serve import serve_in_thread

    root, _cfg, _params, status = aligned
    assert status == 0
    out = root / "atlas" / "align" / "pair"
    server, url = serve_in_thread(out)
    driver = _chromium(tmp_path)
    try:
        driver.get(url + "aligned.html")
        _wait(driver, "window.alignedViewer && alignedViewer.ready()", "both atlases to open")
        assert driver.execute_script("return alignedViewer.error()") is None
        assert driver.execute_script("return alignedViewer.levels()") == [2, 4]
        for key in "ab":  # every side's name carries its label ceiling (n cells and the share)
            ceiling = json.loads((out / "align.json").read_text())["sides"][key]["label_ceiling"]
            assert f"of {ceiling['cells']} cells" in driver.find_element("id", f"ceiling-{key}").text
        _check_zoom_and_pan_follow(driver)
        cell = _click_the_biggest_cell(driver, out)
        _check_selection_on_both_sides(driver, cell)
        _check_pane_drawn_and_no_errors(driver)
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
