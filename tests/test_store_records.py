"""The typed metadata records (store/records.py): read back from a real store, malformed ones refused
in one line naming the group and the key, and the one "are these icons current" rule."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.icons import IconStore
from store.records import GridIdentity, LayoutInfo, Sampling
from tests.atlas_fixtures import LEVELS


def _raw(group: Path) -> dict:
    """A group's attributes read straight from its zarr.json (not through the code under test)."""
    return json.loads((group / "zarr.json").read_text())["attributes"]


def test_records_of_a_real_small_store(small_atlas, mobilenet) -> None:
    cfg = small_atlas.config
    store = AtlasStore.open(small_atlas.store.path, mode="r")
    raw = _raw(store.path)
    model = store.model
    assert (model.name, model.layer, model.weights) == (cfg.model.name, cfg.model.layer, cfg.model.weights)
    assert model.weights_sha256 == mobilenet.weights_sha256
    assert model.layer_shape == tuple(mobilenet.layer_shape)
    assert model.entry() == {"name": cfg.model.name, "layer": cfg.model.layer}
    assert store.sampling == Sampling(
        views_per_image=8,
        positions_per_image=4,
        view_scale=tuple(cfg.collect.view_scale),
        seed=cfg.collect.seed,
        max_pixels=cfg.collect.max_pixels,
        border=cfg.collect.border,
        dtype=cfg.collect.dtype,
        head=cfg.collect.head,
        top_k=cfg.collect.top_k,
        top_predictions=cfg.collect.top_predictions,
    )
    assert store.dataset.n_images == 4 and store.dataset.source == str(small_atlas.photos)
    assert store.label_names == raw["label_names"] == ["other", "tabby"]
    assert store.n_rows == 4 * 8 * 4 == raw["n_rows"]

    layout = derived.read_layout(store)
    assert layout.info.method == "pca" and layout.info.seed == cfg.reduce.seed
    assert layout.info.params["n_neighbors"] == 10
    assert layout.info.layout_id == _raw(store.derived_path("layout"))["layout_id"]
    assert derived.grid_info(store).levels == tuple(LEVELS)
    level = derived.read_level(store, LEVELS[0], with_attribution=False)
    assert level.info.min_count == 1 and level.info.n_rows_kept == int(level.count.sum())

    icons = IconStore.open(store.derived_path("icons"))
    raw_icons = _raw(icons.path)
    assert icons.size == 32 and icons.levels == LEVELS
    assert icons.grid == GridIdentity(**raw_icons["grid"])
    assert dict(icons.record.made_from) == {k: raw_icons[k] for k in ("grid", "params", "model")}


def test_icons_current_true_and_false(small_atlas) -> None:
    store = AtlasStore.open(small_atlas.store.path, mode="r")
    icons = IconStore.open(store.derived_path("icons")).record
    cells = {n: derived.read_level(store, n, with_attribution=False) for n in LEVELS}
    assert derived.icons_current(icons, store, cells)
    other_fp = dataclasses.replace(icons, grid=GridIdentity(icons.grid.layout_id, "0" * 16))
    other_layout = dataclasses.replace(icons, grid=GridIdentity("0" * 16, icons.grid.fingerprint))
    assert not derived.icons_current(other_fp, store, cells)
    assert not derived.icons_current(other_layout, store, cells)
    moved = dict(cells)
    moved[LEVELS[0]] = dataclasses.replace(cells[LEVELS[0]], direction=cells[LEVELS[0]].direction * 2.0)
    assert not derived.icons_current(icons, store, moved)  # other cell directions: another grid
    assert not derived.icons_current(icons, store, {LEVELS[0]: cells[LEVELS[0]]})  # not the levels rendered


def _edit(group: Path, change) -> None:
    meta = json.loads((group / "zarr.json").read_text())
    change(meta["attributes"])
    (group / "zarr.json").write_text(json.dumps(meta))


def _synthetic(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    AtlasStore.create_synthetic_for_tests(path, np.ones((6, 3), np.float32))
    return path


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda a: a["model"].update(layer=7), "model.layer"),
        (lambda a: a["model"].pop("name"), "model.name"),
        (lambda a: a.update(model="mobilenet_v2"), "model"),
        (lambda a: a.pop("n_rows"), "n_rows"),
        (lambda a: a.update(views_per_image="12"), "views_per_image"),
        (lambda a: a["sampling"].update(view_scale=[0.5]), "sampling.view_scale"),
        (lambda a: a["sampling"].update(view0={"transform": "eval", "resize": 256}), "sampling.view0.crop"),
    ],
)
def test_a_malformed_store_record_is_one_line_naming_the_store_and_key(tmp_path: Path, change, key: str) -> None:
    path = _synthetic(tmp_path)
    _edit(path, change)
    with pytest.raises(AtlasError) as err:
        AtlasStore.open(path, mode="r")
    message = str(err.value)
    assert "\n" not in message
    assert f"store {path}: attribute {key} " in message


def test_a_malformed_derived_record_is_refused_when_read(tmp_path: Path, small_atlas) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("store", "store.layout", "store.grid", "store.icons"):
        shutil.copytree(small_atlas.store.path.with_name(f"{name}.zarr"), copy / f"{name}.zarr")
    store = AtlasStore.open(copy / "store.zarr", mode="r")
    _edit(store.derived_path("layout"), lambda a: a.update(method=["pca"]))
    with pytest.raises(AtlasError, match=r"attribute method is \['pca'\], expected a string") as err:
        derived.read_layout(store)
    assert str(store.derived_path("layout")) in str(err.value)
    _edit(store.derived_path("icons"), lambda a: a.update(size="32"))
    with pytest.raises(AtlasError, match=r"icons .*store.icons.zarr: attribute size is '32', expected an integer"):
        IconStore.open(store.derived_path("icons"))


def test_an_in_memory_layout_record_is_typed_too() -> None:
    assert LayoutInfo.parse({"method": "given embedding"}, "layout").method == "given embedding"
    assert LayoutInfo.parse({}, "layout") == LayoutInfo(method=None, seed=None, params={}, layout_id="")
    with pytest.raises(AtlasError, match="layout: attribute seed is 1.5, expected an integer"):
        LayoutInfo.parse({"seed": 1.5}, "layout")
