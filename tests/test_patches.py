"""stages/patches and `atlas patches`: paste geometry, the protocol on a constructed classifier whose answer
is known, the Wilson interval, the rank/test split, one-line errors, and one real run (real MobileNetV2,
a comparison atlas built on a copy of the session's small atlas)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from stages.config import Config
from stages.context import StageContext
from stages.patches.geometry import CORNERS, Placement, corner_origin, paste, patch_side, resize_patch
from stages.patches.protocol import Patch, Rate, run_protocol, split_photos, uniform_noise, works
from stages.sections import ClassesSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture

S = 40  # constructed images' side


# --------------------------------------------------------------------------------- geometry
def test_patch_side_and_corners_are_exact() -> None:
    assert [patch_side(r, 224) for r in (0.1, 0.2, 0.4, 0.5, 0.8)] == [22, 45, 90, 112, 179]
    assert patch_side(0.001, 10) == 1 and patch_side(1.0, 10) == 10
    images = np.zeros((2, 10, 10, 3), np.float32)
    patch = np.ones((3, 3, 3), np.float32)
    expected = {"top_left": (0, 0), "top_right": (0, 7), "bottom_left": (7, 0), "bottom_right": (7, 7)}
    for corner in CORNERS:
        out = paste(images, patch, corner)
        top, left = expected[corner]
        assert corner_origin(corner, 3, 10) == (top, left)
        mask = np.zeros((10, 10), bool)
        mask[top : top + 3, left : left + 3] = True
        assert (out[:, mask] == 1).all() and (out[:, ~mask] == 0).all(), corner
    assert (images == 0).all()  # the input is not changed
    with pytest.raises(ValueError, match="unknown corner"):
        paste(images, patch, "middle")
    with pytest.raises(ValueError, match="r must be in"):
        patch_side(0.0, 10)
    constant = np.full((7, 5, 3), 0.5, np.float32)
    assert resize_patch(constant, 4).shape == (4, 4, 3) and np.allclose(resize_patch(constant, 4), 128 / 255)


def test_wilson_interval_and_works() -> None:
    assert Rate(0, 10).interval == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert Rate(5, 10).interval == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert Rate(3, 3).interval == pytest.approx((0.43850, 1.0), abs=1e-5)
    assert Rate(0, 0).rate is None and Rate(0, 0).interval == (0.0, 1.0)
    assert works(Rate(3, 3), 0.0) and not works(Rate(3, 3), 0.5) and not works(Rate(1, 10), 0.05)


def test_split_keeps_ranking_and_test_photos_apart() -> None:
    rank, test = split_photos(10, 3, seed=0)
    assert len(rank) == 3 and len(test) == 7 and not set(rank) & set(test) and sorted([*rank, *test]) == list(range(10))
    assert (split_photos(10, 3, seed=0)[0] == rank).all()
    with pytest.raises(ValueError, match="at least 2 photos"):
        split_photos(1, 1, 0)


# --------------------------------------------------------------------------------- the protocol, known answer
A, B, C = 0, 1, 2
RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)


def _share(images: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    return (np.abs(images - np.array(colour, np.float32)).max(axis=-1) < 0.02).mean(axis=(1, 2))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def red_classifier(images: np.ndarray) -> np.ndarray:
    """logit A = 1, logit B = 10 x the share of pure-red pixels, C = 0: a red patch with side >= 0.4 flips to B."""
    logits = np.zeros((len(images), 3))
    logits[:, A], logits[:, B] = 1.0, 10.0 * _share(images, RED)
    return _softmax(logits)


def _photos(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.3, 0.7, (n, S, S, 3)).astype(np.float32)


def _plain(colour: tuple[float, float, float], name: str) -> Patch:
    return Patch(name, "dataset", np.broadcast_to(np.array(colour, np.float32), (8, 8, 3)).copy())


def test_protocol_known_patch_flips_and_noise_does_not() -> None:
    photos = _photos(6)
    photos[5, :20, :] = RED  # half red already: classified B beforehand, so it must not count
    candidates = [_plain(GREEN, "green"), _plain(RED, "red"), _plain((0.0, 0.0, 1.0), "blue")]
    controls = [Patch("noise", "noise", uniform_noise(32, 1), resample="nearest")]
    r = run_protocol(
        red_classifier,
        photos,
        A,
        B,
        candidates,
        controls,
        rank_count=2,
        keep=1,
        sizes=[0.1, 0.2, 0.3, 0.5, 0.8],
        static=Placement("top_left", 0.2),
        controls_per_kind=1,
        batch_size=7,
        seed=0,
    )
    assert r.kept.tolist() == [0, 1, 2, 3, 4] and len(r.rank) == 2 and len(r.test) == 3
    assert not set(r.rank) & set(r.test)
    assert r.selected == [1] and np.nanargmax(r.scores) == 1  # red ranks first; green and blue gain nothing
    red = r.outcomes[0].summary()
    assert red["dynamic"]["k"] == 3 and red["dynamic"]["n"] == 3  # r = 0.5 (share 0.25 -> logit 2.5 > 1) flips all
    assert red["static"]["k"] == 0  # r = 0.2: share 0.04 -> logit 0.4 < 1
    assert red["p_b_after_dynamic"] > 0.99 > red["p_b_before"]
    assert all(p.endswith("r=0.8") for p in red["best_placements"])  # the highest P(B) among flipping placements
    noise = r.controls[0].summary()
    assert noise["dynamic"]["k"] == 0 and r.noise_rate() == 0.0
    assert works(Rate(red["dynamic"]["k"], red["dynamic"]["n"]), r.noise_rate())


def test_selection_never_looks_at_the_test_photos() -> None:
    """Green flips only the test photos (a classifier that knows the split), red a little on every photo:
    ranking on the ranking photos picks red; a selection that peeked at the test photos would pick green."""
    photos = _photos(8, seed=1)
    for i in range(8):
        photos[i, S // 2, S // 2] = i / 10  # the photo's id in its centre pixel (no patch below r = 0.5 covers it)
    rank, test = split_photos(8, 3, seed=4)

    def classify(images: np.ndarray) -> np.ndarray:
        ids = np.rint(images[:, S // 2, S // 2, 0] * 10).astype(int)
        on_test = np.isin(ids, test)
        logits = np.zeros((len(images), 3))
        logits[:, A] = 1.0
        logits[:, B] = 3.0 * _share(images, RED) + np.where(on_test, 30.0 * _share(images, GREEN), 0.0)
        return _softmax(logits)

    r = run_protocol(
        classify,
        photos,
        A,
        B,
        [_plain(GREEN, "green"), _plain(RED, "red")],
        [],
        rank_count=3,
        keep=1,
        sizes=[0.2, 0.4],
        static=Placement("bottom_right", 0.4),
        controls_per_kind=0,
        batch_size=16,
        seed=4,
    )
    assert r.rank.tolist() == rank.tolist() and r.test.tolist() == test.tolist()
    assert [r.candidates[k].name for k in r.selected] == ["red"]
    # a candidate cut from a test photo is left out of the ranking
    cut = Patch("from a test photo", "dataset", np.ones((4, 4, 3), np.float32), source=str(test[0]))
    r2 = run_protocol(
        classify,
        photos,
        A,
        B,
        [cut, _plain(RED, "red")],
        [],
        rank_count=3,
        keep=2,
        sizes=[0.2],
        static=Placement("bottom_right", 0.2),
        controls_per_kind=0,
        batch_size=16,
        seed=4,
    )
    assert np.isnan(r2.scores[0]) and r2.selected == [1]


# --------------------------------------------------------------------------------- the real model, the CLI
@pytest.fixture(scope="module")
def patch_atlas(small_atlas: SmallAtlas, mobilenet, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the small atlas's store with a comparison atlas of the coffee photo's top-1 class A
    (espresso) and another class B, exported into a fresh atlas folder; three photos of the coffee."""
    from stages.classes import compare
    from stages.patches.stage import model_classifier
    from tests.test_class_atlas import _tiny, _top_classes

    root = tmp_path_factory.mktemp("patches")
    src = small_atlas.store
    for name in ("", ".whitening"):
        shutil.copytree(src.path.with_name(f"{src.path.stem}{name}.zarr"), root / f"store{name}.zarr")
    store = AtlasStore.open(root / "store.zarr")
    import skimage.data

    coffee = skimage.data.coffee()  # MobileNetV2: espresso at 0.99, a class with rows in the small store
    photos = root / "coffee"
    photos.mkdir()
    Image.fromarray(coffee).save(photos / "coffee.jpg", quality=92)
    Image.fromarray(coffee[:, ::-1]).save(photos / "coffee_mirror.jpg", quality=92)
    Image.fromarray(coffee[30:-30, 40:-40]).save(photos / "coffee_crop.jpg", quality=92)
    pixels = np.asarray(Image.fromarray(coffee).resize((224, 224)), np.float32)[None] / 255.0
    a = int(model_classifier(mobilenet, torch.device("cpu"))(pixels).argmax())
    b = next(c for c in _top_classes(store, 5) if c != a)
    cfg = _tiny(store, root / "atlas")
    cfg.compare.pairs = [[str(a), str(b)]]
    torch.set_num_threads(1)
    compare.run(
        ClassesSection.of(cfg, atlases="compare"), StageContext(store, device=torch.device("cpu"), model=mobilenet)
    )
    cfg.patches.photos = str(photos)
    cfg.patches.cells, cfg.patches.examples, cfg.patches.keep, cfg.patches.controls = 2, 1, 2, 1
    cfg.patches.rank_photos, cfg.patches.sizes, cfg.patches.static_size = 1, [0.3, 0.6], 0.3
    cfg.patches.crop_px, cfg.patches.out, cfg.patches.device = 48, str(root / "patches.json"), "cpu"
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return store, params, a, b, root


def test_real_model_run(patch_atlas, one_thread, capsys) -> None:
    from pipeline.cli import main

    store, params, a, b, root = patch_atlas
    names = store.class_names
    assert main(["patches", "-q", "--params", str(params), str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert f"patches {names[a]} -> {names[b]}" in out and "control: noise" in out
    report = json.loads((root / "patches.json").read_text())
    [d] = report["directions"]
    ph = d["photos"]
    assert ph["given"] == 3 and ph["classified_a"] == 3 and len(ph["rank"]) == 1 and len(ph["test"]) == 2
    assert not set(ph["rank"]) & set(ph["test"])
    assert len(d["patches"]) == 2 and all(p["dynamic"]["n"] == 2 for p in d["patches"])
    assert all(0 <= p["dynamic"]["k"] <= 2 and p["static"]["k"] <= p["dynamic"]["k"] for p in d["patches"])
    assert d["controls"]["noise"]["dynamic"]["n"] == 2 and d["overall"]["dynamic"]["n"] == 4
    assert {p["kind"] for p in d["patches"]} <= {"dataset", "icon"}
    toward = [c["toward_b"] for c in d["candidates"]]
    assert all(t > 0 for t in toward)
    assert Path(d["figure"]).exists() and Image.open(d["figure"]).size[0] > 300
    index = json.loads((root / "atlas" / "atlases.json").read_text())
    [entry] = [e for e in index["atlases"] if e["kind"] == "experiment"]
    assert entry["atlas"] == d["comparison_atlas"] and (root / "atlas" / entry["page"]).exists()
    assert entry["atlas"] in {e["id"] for e in index["atlases"]}
    page = (root / "atlas" / entry["page"]).read_text()
    assert "noise" in page and "95% CI" in page


def test_the_api_gives_the_command_s_report(patch_atlas, one_thread, tmp_path: Path) -> None:
    from pipeline import patch_attack
    from pipeline.cli import main

    store, params, a, b, root = patch_atlas
    assert main(["patches", "-q", "--params", str(params), str(a), str(b)]) == 0
    [want] = json.loads((root / "patches.json").read_text())["directions"]
    p = yaml.safe_load(params.read_text())["patches"]
    settings = {
        k: p[k]
        for k in ("photos", "cells", "examples", "keep", "controls", "rank_photos", "sizes", "static_size", "crop_px")
    }
    [got] = patch_attack(store.path, str(a), str(b), out=tmp_path / "api.json", **settings)
    for key in ("photos", "overall", "controls"):
        assert got[key] == want[key], key
    assert [(q["kind"], q["dynamic"], q["static"]) for q in got["patches"]] == [
        (q["kind"], q["dynamic"], q["static"]) for q in want["patches"]
    ]
    with pytest.raises(AtlasError, match="patch_attack"):
        patch_attack(store.path, str(a), str(b), keep=0)


def _error(argv: list[str], capsys) -> str:
    from pipeline.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atlas patches: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors(patch_atlas, tmp_path: Path, capsys) -> None:
    store, params, a, b, _ = patch_atlas
    base = ["patches", "-q", "--params", str(params)]
    assert "no class named 'lemmon'" in _error([*base, "lemmon", str(b)], capsys)
    other = next(c for c in range(1000) if c not in (a, b))
    assert "no comparison atlas of" in _error([*base, str(a), str(other)], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no image" in _error([*base, str(a), str(b), "--photos", str(empty)], capsys)
    assert "not found" in _error([*base, str(a), str(b), "--photos", str(tmp_path / "nowhere")], capsys)
    assert "name two classes" in _error([*base, str(a)], capsys)
    cfg = Config.model_validate(yaml.safe_load(params.read_text()))
    cfg.data.store = str(tmp_path / "none.zarr")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert "no store there" in _error(["patches", "-q", "--params", str(tmp_path / "p.yaml"), str(a), str(b)], capsys)
