"""stages/tiles*.py on the real small atlas: files per docs/export_format.md, pixels, atomicity, shards."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as atlas_main
from stages.config import Config
from stages.context import StageContext
from stages.sections import TilesSection
from stages.tiles import export as tiles_export
from stages.tiles import stage as tiles
from stages.tiles.geometry import DziGeometry
from stages.tiles.source import AtlasSource
from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.icons import IconStore

REPO = Path(__file__).resolve().parents[1]
CELL_KEYS = {"cell", "i", "j", "bounds", "icon_bounds", "count", "classes", "objective", "cossim", "examples"}


def _js_object(path: Path, target: str) -> object:
    """The object a ``.js`` twin assigns to ``target`` (it must be the last assignment)."""
    text = path.read_text()
    assert f"{target} = " in text, text[:200]
    return json.loads(text.split(f"{target} = ", 1)[1].rstrip().rstrip(";"))


def _stitch(dzi: Path, level: int) -> np.ndarray:
    """One pyramid level rebuilt from its tile files, overlap dropped (independent of the writer)."""
    xml = dzi.read_text()
    width, tile, overlap = (int(re.search(f'{k}="(\\d+)"', xml).group(1)) for k in ("Width", "TileSize", "Overlap"))
    side = -(-width // 2 ** (math.ceil(math.log2(width)) - level))
    out = np.zeros((side, side, 3), np.uint8)
    for f in (dzi.parent / f"{dzi.stem}_files" / str(level)).iterdir():
        col, row = map(int, f.stem.split("_"))
        px = np.asarray(Image.open(f))
        ox, oy = (overlap if col else 0), (overlap if row else 0)
        w, h = min(tile, side - col * tile), min(tile, side - row * tile)
        out[row * tile : row * tile + h, col * tile : col * tile + w] = px[oy : oy + h, ox : ox + w]
    return out


def test_export_folder_follows_the_contract(small_atlas) -> None:
    out, cfg = small_atlas.atlas_dir, small_atlas.config
    index = json.loads((out / "atlases.json").read_text())
    assert index["format"] == "activation-atlas-export" and index["version"] == 1
    assert index["model"] == {"name": "mobilenet_v2", "layer": "features.13.conv.0"}
    assert index["atlases"] == [
        {"id": "main", "kind": "main", "title": "mobilenet_v2 features.13.conv.0", "path": "main/"}
    ]
    assert _js_object(out / "atlases.js", "window.ATLAS_INDEX") == index
    assert (out / "index.html").is_file() and (out / "viewer" / "viewer.js").is_file()
    manifest = json.loads((out / "main" / "manifest.json").read_text())
    assert _js_object(out / "main" / "manifest.js", 'window.ATLAS_MANIFESTS["main"]') == manifest
    assert manifest["icon_px"] == 32 and manifest["density_scaling"] is True and manifest["layout"] == "layout.js"
    assert [lv["n"] for lv in manifest["levels"]] == [3, 6]
    for lv in manifest["levels"]:
        n = lv["n"]
        assert lv["canvas_px"] == 32 * n and lv["cell_px"] == 32 and lv["tile_size"] == 64 and lv["overlap"] == 1
        assert lv["cells"] == len(derived.read_level(small_atlas.store, n, with_attribution=False))
        assert (out / "main" / lv["dzi"]).is_file() and (out / "main" / lv["cells_js"]).is_file()
    layout = json.loads((out / "main" / "layout.json").read_text())
    assert len(layout["x"]) == len(layout["y"]) == len(layout["label"]) == 128  # all rows (< layout_points)
    assert 0 <= min(layout["x"]) and max(layout["y"]) <= 1 and all(-1 <= c < 1000 for c in layout["label"])
    assert not [p.name for p in out.iterdir() if p.name.endswith((".staging", ".new", ".old"))]
    assert cfg.data.atlas == str(out)


def test_dzi_files_match_the_geometry(small_atlas) -> None:
    for n in small_atlas.levels:
        dzi = small_atlas.atlas_dir / "main" / f"level_{n}.dzi"
        g = DziGeometry(32 * n, 32 * n, 64, 1)
        files = dzi.parent / f"level_{n}_files"
        assert sorted(int(p.name) for p in files.iterdir()) == list(range(g.n_levels))
        # level 6: 192 px -> max level 8 = ceil(log2 192); 3 x 3 tiles of 65/66 px at the top level
        if n == 6:
            assert g.max_level == 8 and g.tile_grid(8) == (3, 3) and g.n_tiles() == 9 + 4 + 7
        for z in range(g.n_levels):
            cols, rows = g.tile_grid(z)
            names = sorted(p.name for p in (files / str(z)).iterdir())
            assert names == sorted(f"{c}_{r}.jpg" for c in range(cols) for r in range(rows))
            for c in range(cols):
                for r in range(rows):
                    x0, y0, x1, y1 = g.tile_box(z, c, r)
                    assert Image.open(files / str(z) / f"{c}_{r}.jpg").size == (x1 - x0, y1 - y0)
        top = Image.open(files / str(g.max_level) / "0_0.jpg")
        assert np.asarray(top).std() > 5  # not blank


def test_canvas_shows_each_icon_in_its_cell(small_atlas) -> None:
    store = small_atlas.store
    icons = IconStore.open(store.derived_path("icons"))
    for n in small_atlas.levels:
        canvas = _stitch(small_atlas.atlas_dir / "main" / f"level_{n}.dzi", math.ceil(math.log2(32 * n)))
        cells = json.loads((small_atlas.atlas_dir / "main" / f"level_{n}" / "cells.json").read_text())
        level_icons = icons.read_level(n).icons
        kept = np.zeros((n, n), bool)
        for cell in cells:
            kept[cell["j"], cell["i"]] = True
            x0, y0, x1, y1 = (round(v * 32 * n) for v in cell["icon_bounds"])
            drawn = Image.fromarray(canvas[y0:y1, x0:x1])
            icon = Image.fromarray(level_icons[cell["cell"]]).resize(drawn.size, Image.Resampling.LANCZOS)
            assert np.abs(np.asarray(drawn, float) - np.asarray(icon, float)).mean() < 12  # JPEG noise only
        for j, i in zip(*np.nonzero(~kept)):  # cells without an icon keep the white background
            assert canvas[j * 32 + 4 : j * 32 + 28, i * 32 + 4 : i * 32 + 28].min() > 235


def test_cells_json_schema_and_density_scaling(small_atlas) -> None:
    names = small_atlas.store.class_names
    for n in small_atlas.levels:
        folder = small_atlas.atlas_dir / "main" / f"level_{n}"
        cells = json.loads((folder / "cells.json").read_text())
        assert _js_object(folder / "cells.js", f'window.ATLAS_CELLS["main/{n}"]') == cells
        level = derived.read_level(small_atlas.store, n, with_attribution=False)
        assert [c["cell"] for c in cells] == list(range(len(level)))
        mean = np.mean([c["count"] for c in cells])
        for c in cells:
            assert set(c) == CELL_KEYS
            assert (c["i"], c["j"], c["count"]) == (level.i[c["cell"]], level.j[c["cell"]], level.count[c["cell"]])
            bx, ix = c["bounds"], c["icon_bounds"]
            assert bx == pytest.approx([c["i"] / n, c["j"] / n, (c["i"] + 1) / n, (c["j"] + 1) / n], abs=1e-6)
            assert all(0 <= v <= 1 for v in bx + ix)
            assert bx[0] <= ix[0] < ix[2] <= bx[2] and bx[1] <= ix[1] < ix[3] <= bx[3]
            side = (ix[2] - ix[0]) * n  # icon side / cell side
            if c["count"] >= mean:
                assert side == pytest.approx(1.0, abs=1e-5)  # two 6-decimal roundings x n
            else:  # sqrt(count / mean) to the pixel
                assert side == pytest.approx(math.sqrt(c["count"] / mean), abs=0.6 / 32)
            assert 1 <= len(c["classes"]) <= 5
            for cls in c["classes"]:
                assert cls["name"] == names[cls["index"]] and cls["value"] > 0
            assert -1 <= c["cossim"] <= 1 and isinstance(c["objective"], float)


def test_highlight_columns_by_hand() -> None:
    """stages/tiles/highlight.py on hand-made cases: positive entries per column, label shares."""
    from stages.tiles.highlight import label_shares, split_columns

    cols = split_columns(np.array([[0, 0.5, -1], [0.2, 0, 0], [0.3, 0.1, 0]], np.float32))
    assert sorted(cols) == [0, 1]  # column 2 has no positive entry
    assert cols[0].cells.tolist() == [1, 2] and cols[0].values == pytest.approx([0.2, 0.3])
    assert cols[1].record() == {"cells": [0, 2], "values": [0.5, 0.1], "max": 0.5}
    # cell 0 = rows 0, 1, 2 (labels 1, 1, unknown), cell 1 = rows 3, 4 (labels 0, 1)
    shares = label_shares(np.array([0, 3, 5]), np.array([0, 1, 2, 3, 4]), np.array([1, 1, -1, 0, 1]))
    assert shares[0].cells.tolist() == [1] and shares[0].values == pytest.approx([0.5])
    assert shares[1].cells.tolist() == [0, 1] and shares[1].values == pytest.approx([2 / 3, 0.5])
    assert shares[1].record()["values"] == [0.6667, 0.5]


def test_highlight_values_match_the_grid(small_atlas) -> None:
    """Per (level, class) the grid's mean attribution, per (level, label) the members' label share."""
    main, store = small_atlas.atlas_dir / "main", small_atlas.store
    manifest = json.loads((main / "manifest.json").read_text())
    assert manifest["highlight"] == "highlight.js"
    index = json.loads((main / "highlight.json").read_text())
    assert _js_object(main / "highlight.js", 'window.ATLAS_HIGHLIGHT_INDEX["main"]') == index
    assert index["classes"] == store.class_names
    # the fixture's folders: "other" (no ImageNet class) and "tabby" (class 281); 32 rows per photo
    assert index["labels"] == [
        {"index": 0, "name": "other", "class": -1, "rows": 96},
        {"index": 1, "name": "tabby", "class": 281, "rows": 32},
    ]
    row_labels = store.row_labels()
    layout = json.loads((main / "layout.json").read_text())
    assert layout["names"] == {str(k): store.class_names[k] for k in sorted(set(layout["label"])) if k >= 0}
    for n in small_atlas.levels:
        level = derived.read_level(store, n)
        supported = np.flatnonzero((level.attribution > 0).any(axis=0))
        assert index["levels"][str(n)]["classes"] == supported.tolist()
        for c in supported[:: max(1, len(supported) // 25)]:  # a spread of classes, every cell of each
            path = main / f"level_{n}" / "highlight" / f"class_{c}.json"
            record = json.loads(path.read_text())
            assert _js_object(path.with_suffix(".js"), f'window.ATLAS_HIGHLIGHT["main/{n}/class/{c}"]') == record
            cells = np.flatnonzero(level.attribution[:, c] > 0)
            assert record["cells"] == cells.tolist()
            assert record["values"] == pytest.approx(level.attribution[cells, c], rel=1e-3)
            assert record["max"] == pytest.approx(level.attribution[:, c].max(), rel=1e-3)
        unsupported = np.setdiff1d(np.arange(len(store.class_names)), supported)
        assert len(unsupported) and not (main / f"level_{n}" / "highlight" / f"class_{unsupported[0]}.json").exists()
        assert index["levels"][str(n)]["labels"] == [0, 1]
        for label in (0, 1):
            record = json.loads((main / f"level_{n}" / "highlight" / f"label_{label}.json").read_text())
            share = {c: float(np.mean(row_labels[level.members(c)] == label)) for c in range(len(level))}
            assert record["cells"] == [c for c in range(len(level)) if share[c] > 0]
            assert record["values"] == pytest.approx([share[c] for c in record["cells"]], rel=1e-3)


def _copy_store(small_atlas, dest: Path) -> AtlasStore:
    src = small_atlas.store.path
    for sib in src.parent.glob(f"{src.stem}*.zarr"):
        shutil.copytree(sib, dest / sib.name)
    return AtlasStore.open(dest / src.name)


def test_unrendered_levels_are_refused(small_atlas, tmp_path: Path) -> None:
    store = _copy_store(small_atlas, tmp_path)
    cfg = Config.model_validate(small_atlas.config.model_dump())
    cfg.data.atlas = str(tmp_path / "atlas")
    cfg.tiles.levels = [4]
    with pytest.raises(AtlasError, match=r"tiles.levels: 4 is not a grid level; choose from: 3, 6"):
        tiles.run(TilesSection.of(cfg), StageContext(store))
    IconStore.open(store.derived_path("icons"), mode="r+").group["level_6/done"][0] = 0  # an unfinished render
    cfg.tiles.levels = [6]
    with pytest.raises(
        AtlasError, match=r"level 6 is 1 of 2 icon batches rendered .* run `atlas render --levels '\[6\]'`"
    ):
        tiles.run(TilesSection.of(cfg), StageContext(store))
    assert not (tmp_path / "atlas" / "main").exists()
    cfg.tiles.levels, cfg.tiles.examples = None, 0  # default: the complete levels only
    summary = tiles.run(TilesSection.of(cfg), StageContext(store))
    assert summary.levels == [3] and summary.result.examples == 0
    manifest = json.loads((tmp_path / "atlas" / "main" / "manifest.json").read_text())
    assert [lv["n"] for lv in manifest["levels"]] == [3]


def test_a_failed_export_leaves_the_previous_atlas(small_atlas, tmp_path: Path, monkeypatch) -> None:
    cfg = small_atlas.config.tiles.model_copy(update={"examples": 0})
    out = tmp_path / "atlas"
    tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, cfg)
    before = sorted(str(p.relative_to(out)) for p in (out / "main").rglob("*"))
    real = tiles_export.write_dzi

    def dies_on_level_6(image, dzi_path, *args, **kwargs):
        if dzi_path.stem == "level_6":
            raise KeyboardInterrupt  # as if the job were killed half way
        return real(image, dzi_path, *args, **kwargs)

    monkeypatch.setattr(tiles_export, "write_dzi", dies_on_level_6)
    changed = cfg.model_copy(update={"quality": 50})
    with pytest.raises(KeyboardInterrupt):
        tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, changed)
    assert sorted(str(p.relative_to(out)) for p in (out / "main").rglob("*")) == before  # untouched
    monkeypatch.setattr(tiles_export, "write_dzi", real)
    result = tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, changed)
    assert result.levels_reused == [3] and result.levels_written == [6] and result.assembled  # resumed
    assert sorted(str(p.relative_to(out)) for p in (out / "main").rglob("*")) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")] == [
        ".main.done.json"
    ]
    stamp = (out / "main" / "manifest.json").stat().st_mtime_ns
    again = tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, changed)
    assert again.levels_written == [] and again.levels_reused == [3, 6] and again.assembled  # same inputs: no-op
    assert (out / "main" / "manifest.json").stat().st_mtime_ns == stamp


def test_shards_write_disjoint_levels_and_the_last_assembles(small_atlas, tmp_path: Path) -> None:
    cfg = small_atlas.config.tiles.model_copy(update={"examples": 1})
    out = tmp_path / "atlas"
    first = tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, cfg, shard=(1, 2))
    assert first.levels_written == [6] and not first.assembled and not (out / "main").exists()
    second = tiles_export.export_atlas(AtlasSource.from_store(small_atlas.store), out, cfg, shard=(0, 2))
    assert second.levels_written == [3] and second.assembled
    manifest = json.loads((out / "main" / "manifest.json").read_text())
    assert [lv["n"] for lv in manifest["levels"]] == [3, 6]
    for n in (3, 6):
        cells = json.loads((out / "main" / f"level_{n}" / "cells.json").read_text())
        assert all(len(c["examples"]) == 1 and (out / "main" / c["examples"][0]).is_file() for c in cells)


def test_index_keeps_other_atlases(small_atlas, tmp_path: Path) -> None:
    out = tmp_path / "atlas"
    out.mkdir()
    other = {
        "id": "class/tabby",
        "kind": "class",
        "title": "tabby (winner)",
        "path": "class/tabby/",
        "class": {"index": 281, "name": "tabby"},
    }
    stale_main = {"id": "main", "kind": "main", "title": "old", "path": "main/"}
    (out / "atlases.json").write_text(
        json.dumps(
            {
                "format": "activation-atlas-export",
                "version": 1,
                "model": {"name": "mobilenet_v2", "layer": "features.13.conv.0"},
                "atlases": [other, stale_main],
            }
        )
    )
    tiles_export.update_index(out, AtlasSource.from_store(small_atlas.store))
    index = json.loads((out / "atlases.json").read_text())
    assert [a["id"] for a in index["atlases"]] == ["main", "class/tabby"] and index["atlases"][1] == other
    assert index["atlases"][0]["title"] == "mobilenet_v2 features.13.conv.0"


def test_cli_tiles_prints_the_viewer_path(small_atlas, tmp_path: Path, capsys) -> None:
    out = tmp_path / "atlas"
    status = atlas_main(
        [
            "tiles",
            "-q",
            "--params",
            str(REPO / "params.yaml"),
            "--store",
            str(small_atlas.store.path),
            "--atlas",
            str(out),
            "--examples",
            "0",
            "--levels",
            "[3]",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    text = captured.out
    assert f"{(out / 'index.html').resolve()}" in text and "atlas serve" in text
    assert json.loads((out / "main" / "manifest.json").read_text())["levels"][0]["n"] == 3
