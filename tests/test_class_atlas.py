"""store/subset.py, stages/classes/atlas.py, stages/classes/compare.py.

The subset view is checked on a synthetic store (no model). The class and comparison atlases run
end to end on a copy of the session's ``small_atlas`` store (real MobileNetV2 activations and
attributions of four photos) with tiny settings: t-SNE layouts (no numba compile), 4-step 32 px
icons, on one thread.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.params import load_config
from stages.classes import atlas as class_atlas
from stages.classes import compare as class_compare
from stages.classes.select import class_values
from stages.config import Config
from stages.context import StageContext
from stages.grid import stage as grid
from stages.model.registry import LoadedModel
from stages.reduce import stage as reduce
from stages.sections import ClassesSection
from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.subset import SubsetStore
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------- the subset view
def _synthetic(tmp_path: Path) -> AtlasStore:
    rng = np.random.default_rng(0)
    acts = np.abs(rng.normal(size=(60, 8))).astype(np.float32)
    return AtlasStore.create_synthetic_for_tests(tmp_path / "s.zarr", acts, rows_per_chunk=16)


def test_subset_routes_derived_paths_and_restricts_rows(tmp_path: Path) -> None:
    store = _synthetic(tmp_path)
    rows = np.array([40, 3, 7, 3, 59])
    sub = SubsetStore.create(store, "pick", rows, {"why": "test"})
    assert sub.derived_path("layout") == tmp_path / "s.pick.layout.zarr"
    assert sub.rows.tolist() == [3, 7, 40, 59]  # unique, ascending
    assert np.flatnonzero(sub.valid_mask()).tolist() == [3, 7, 40, 59]
    assert sub.n_rows == 60 and sub.channels == 8
    based = SubsetStore.create(store, "pick", rows, {}, base=tmp_path / "folder")
    assert based.derived_path("grid") == tmp_path / "folder" / "pick.grid.zarr"
    reopened = SubsetStore.open(store, "pick")
    assert reopened.rows.tolist() == [3, 7, 40, 59] and reopened.selection["why"] == "test"
    with pytest.raises(AtlasError, match="row ids must lie in 0..59"):
        SubsetStore.create(store, "bad", np.array([60]), {})


def test_stages_run_unchanged_on_a_subset(tmp_path: Path) -> None:
    store = _synthetic(tmp_path)
    cfg = Config()
    cfg.reduce.method, cfg.reduce.n_neighbors = "pca", 5
    cfg.grid.levels, cfg.grid.min_count = [2], 0
    sub = SubsetStore.create(store, "pick", np.arange(10, 40), {})
    reduce.run(cfg.reduce, StageContext(sub))
    grid.run(cfg.grid, StageContext(sub))
    layout = derived.read_layout(sub)
    assert layout.rows.tolist() == list(range(10, 40))
    level = derived.read_level(sub, 2)
    members = np.concatenate([level.members(c) for c in range(len(level))])
    assert sorted(members.tolist()) == list(range(10, 40))
    assert not store.derived_path("layout").exists()  # the parent's groups are untouched
    # a new selection deletes the subset's stale groups; the same one keeps them
    SubsetStore.create(store, "pick", np.arange(10, 40), {})
    assert sub.derived_path("grid").exists()
    SubsetStore.create(store, "pick", np.arange(10, 30), {})
    assert not sub.derived_path("grid").exists() and not sub.derived_path("layout").exists()


# --------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("stage", ["classes", "compare"])
def test_class_and_comparison_atlases_refuse_a_subset_as_their_store(stage: str, tmp_path: Path) -> None:
    """They select rows of the collect store and make subsets of it: given a subset (a class atlas's
    store), one line naming it, before any row is selected or model loaded."""
    sub = SubsetStore.create(_synthetic(tmp_path), "pick", np.arange(10, 40), {})
    cfg = Config()
    cfg.classes.names, cfg.compare.pairs = ["0"], [("0", "1")]
    module = class_atlas if stage == "classes" else class_compare
    with pytest.raises(AtlasError, match=rf"stage {stage} reads the collect store .*s\.pick\.rows\.zarr") as err:
        module.run(ClassesSection.of(cfg, atlases=stage), StageContext(sub, device=torch.device("cpu")))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "s.classes").exists() and not (tmp_path / "s.compare").exists()


@pytest.fixture(scope="module")
def class_store(small_atlas: SmallAtlas, tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    """A private copy of the small atlas's store and whitening (the session's folder stays read-only)."""
    root = tmp_path_factory.mktemp("class_store")
    src = small_atlas.store
    for name in ("", ".whitening"):
        shutil.copytree(src.path.with_name(f"{src.path.stem}{name}.zarr"), root / f"store{name}.zarr")
    return AtlasStore.open(root / "store.zarr")


def _top_classes(store: AtlasStore, n: int) -> list[int]:
    """The ``n`` classes with the most rows holding them with a positive stored attribution."""
    idx, val = (np.asarray(a.compute()) for a in store.attribution_topk())
    counts = np.bincount(idx[(val > 0) & (idx >= 0)].ravel(), minlength=len(store.class_names))
    return np.argsort(-counts, kind="stable")[:n].tolist()


def _tiny(store: AtlasStore, atlas: Path) -> Config:
    cfg = Config()
    cfg.data.store, cfg.data.atlas = str(store.path), str(atlas)
    cfg.model.layer = "features.13.conv.0"  # the small atlas's (a command loads the model from the config)
    cfg.reduce.tsne_perplexity, cfg.reduce.n_neighbors = 3.0, 5
    cfg.classes.method, cfg.classes.min_rows, cfg.classes.min_count, cfg.classes.n_neighbors = "tsne", 10, 0, 5
    cfg.compare.min_rows, cfg.compare.min_count, cfg.compare.tsne_perplexity = 10, 0, 5.0
    cfg.render.size, cfg.render.steps, cfg.render.batch_size = 32, 4, 64
    cfg.tiles.tile_size, cfg.tiles.examples, cfg.tiles.example_px = 64, 1, 32
    return cfg


def test_class_atlas_end_to_end(class_store: AtlasStore, mobilenet: LoadedModel, tmp_path: Path, one_thread) -> None:
    cls = _top_classes(class_store, 1)[0]
    cfg = _tiny(class_store, tmp_path / "atlas")
    cfg.classes.names = [str(cls)]
    [result] = class_atlas.run(
        ClassesSection.of(cfg), StageContext(class_store, device=torch.device("cpu"), model=mobilenet)
    )
    sub = SubsetStore.open(class_store, result.slug, base=class_atlas.classes_folder(class_store))
    # every selected row holds the class among its stored top-k with a positive value (topk rule)
    idx, val = (np.asarray(a.compute()) for a in class_store.attribution_topk())
    value, stored = class_values(idx[sub.rows], val[sub.rows], cls)
    assert len(sub.rows) == result.rows >= 10 and stored.all() and (value > 0).all()
    level = derived.read_level(sub, 8)
    assert 0 < len(level) == result.cells <= 64 and (level.i < 8).all() and (level.j < 8).all()
    assert np.isin(level.member_rows, sub.rows).all()
    # whitening: the whole store's matrix, not the subset's own
    np.testing.assert_array_equal(derived.read_whitening(sub).matrix, derived.read_whitening(class_store).matrix)
    out = tmp_path / "atlas" / "class" / result.slug
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "class" and [lv["n"] for lv in manifest["levels"]] == [8]
    assert len(json.loads((out / "level_8" / "cells.json").read_text())) == result.cells
    index = json.loads((tmp_path / "atlas" / "atlases.json").read_text())
    assert {
        "id": f"class/{result.slug}",
        "class": {"index": cls, "name": class_store.class_names[cls]},
    }.items() <= next(e for e in index["atlases"] if e["id"] == f"class/{result.slug}").items()


def test_too_few_rows_and_unknown_class(class_store: AtlasStore, mobilenet: LoadedModel, tmp_path: Path) -> None:
    cfg = _tiny(class_store, tmp_path / "atlas")
    cls = _top_classes(class_store, 1)[0]
    cfg.classes.names, cfg.classes.mode, cfg.classes.top_k = [str(cls)], "topk", 3
    with pytest.raises(
        AtlasError,
        match=rf"class {cls} .*'topk' selects 3 rows, fewer than classes.min_rows = 10; "
        r".*raise classes.top_k",
    ):
        class_atlas.run(ClassesSection.of(cfg), StageContext(class_store, device=torch.device("cpu"), model=mobilenet))
    cfg.classes.names = ["tabbby cat"]
    with pytest.raises(AtlasError, match="classes.names: no class named 'tabbby cat'.*close matches: tabby, "):
        class_atlas.run(ClassesSection.of(cfg), StageContext(class_store, device=torch.device("cpu"), model=mobilenet))


def test_comparison_end_to_end(class_store: AtlasStore, mobilenet: LoadedModel, tmp_path: Path, one_thread) -> None:
    a, b = _top_classes(class_store, 2)
    cfg = _tiny(class_store, tmp_path / "atlas")
    cfg.compare.pairs = [(str(a), str(b))]
    [result] = class_compare.run(
        ClassesSection.of(cfg, atlases="compare"),
        StageContext(class_store, device=torch.device("cpu"), model=mobilenet),
    )
    sub = SubsetStore.open(class_store, result.slug, base=class_compare.compare_folder(class_store))
    layout = derived.read_layout(sub)
    idx, val = (np.asarray(x.compute()) for x in class_store.attribution_topk())
    va, _ = class_values(idx[layout.rows], val[layout.rows], a)
    vb, _ = class_values(idx[layout.rows], val[layout.rows], b)
    x = layout.layout[:, 0]
    assert (x[va > vb] < 0.5).all() and (x[va < vb] > 0.5).all() and (x[va == vb] == 0.5).all()
    assert ((x == 0.0) | (x == 1.0)).sum() >= 1  # the 99th percentile clips at least the extreme row
    assert 0 < result.cells <= 100
    manifest = json.loads((tmp_path / "atlas" / "compare" / result.slug / "manifest.json").read_text())
    names = class_store.class_names
    assert manifest["kind"] == "compare" and manifest["axes"]["x"] == f"{names[a]}  <->  {names[b]}"


def test_params_and_dvc_name_the_class_folders() -> None:
    cfg = load_config(REPO / "params.yaml")
    store = AtlasStore(Path(cfg.data.store), group=None)  # naming only
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = {s: {next(iter(o)) if isinstance(o, dict) else o for o in stages[s]["outs"]} for s in ("classes", "compare")}
    assert str(class_atlas.classes_folder(store)) in outs["classes"] and "${data.atlas}/class" in outs["classes"]
    assert str(class_compare.compare_folder(store)) in outs["compare"] and "${data.atlas}/compare" in outs["compare"]
    all_outs = [
        (name, next(iter(o)) if isinstance(o, dict) else o) for name, s in stages.items() for o in s.get("outs", [])
    ]
    paths = [
        (name, o.replace("${data.atlas}", cfg.data.atlas).replace("${data.store}", cfg.data.store).rstrip("/"))
        for name, o in all_outs
    ]
    for n1, p1 in paths:  # DVC refuses an output inside another stage's output
        for n2, p2 in paths:
            assert n1 == n2 or not p2.startswith(p1 + "/"), f"{n2} output {p2} lies inside {n1} output {p1}"
    assert cfg.classes.names and cfg.compare.pairs  # the demo builds one of each


def test_classes_and_compare_commands(class_store: AtlasStore, tmp_path: Path, one_thread, capsys) -> None:
    """`atlas classes` and `atlas compare` (what `atlas run` and dvc call) build and export both atlases."""
    from pipeline.cli import main

    a, b = _top_classes(class_store, 2)
    cfg = _tiny(class_store, tmp_path / "atlas")
    cfg.classes.names, cfg.compare.pairs = [str(a)], [(str(a), str(b))]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["classes", "-q", "--params", str(params)]) == 0
    assert main(["compare", "-q", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    names = class_store.class_names
    assert f"class {a} {names[a]!r}:" in out and f"compare {names[a]!r} vs {names[b]!r}:" in out
    assert len(list((tmp_path / "atlas" / "class").glob("*/manifest.json"))) == 1
    assert len(list((tmp_path / "atlas" / "compare").glob("*/manifest.json"))) == 1
