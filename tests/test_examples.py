"""stages/tiles/dataset_examples.py: nearest rows by cosine (checked against brute-force numpy) and thumbnails."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.images.crops import view_box
from stages.images.decoding import decode_rgb
from stages.tiles import dataset_examples as examples
from store import derived, schema
from store.atlas_store import AtlasStore

N_ROWS, CHANNELS = 150, 12


def _hand_made(tmp_path: Path, skipped: int = 17) -> tuple[AtlasStore, derived.CellLevel, np.ndarray]:
    """A store of non-negative activations in chunks of 16 rows, one skipped row, 4 cells."""
    rng = np.random.default_rng(3)
    acts = np.maximum(rng.normal(size=(N_ROWS, CHANNELS)), 0).astype(np.float32)
    acts[5] = 0.0  # a dead row: cosine 0 with everything, never a crash
    store = AtlasStore.create_synthetic_for_tests(tmp_path / "s.zarr", acts, rows_per_chunk=16)
    store.group[schema.INPUTS]["status"][skipped] = schema.STATUS_FIRST_SKIP
    valid = np.flatnonzero(store.valid_mask())
    cell = rng.integers(0, 4, size=len(valid))
    members = [valid[cell == c] for c in range(4)]
    members[3] = members[3][:2]  # a cell with fewer members than k
    rows = np.concatenate(members)
    direction = np.stack([acts[m].mean(0) for m in members]).astype(np.float32)
    level = derived.CellLevel(
        n=2,
        i=np.array([0, 1, 0, 1], np.int32),
        j=np.array([0, 0, 1, 1], np.int32),
        count=np.array([len(m) for m in members], np.int64),
        direction=direction,
        attribution=None,
        top_idx=np.zeros((4, 0), np.int32),
        top_val=np.zeros((4, 0), np.float32),
        member_offsets=np.r_[0, np.cumsum([len(m) for m in members])].astype(np.int64),
        member_rows=rows.astype(np.int64),
    )
    return store, level, acts


def _brute_force(acts: np.ndarray, candidates: np.ndarray, direction: np.ndarray, k: int, per_photo: int) -> list[int]:
    x = acts[candidates].astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    cos = (x @ direction) / (np.where(norms > 0, norms, 1) * np.linalg.norm(direction))
    ranked = candidates[np.argsort(-cos, kind="stable")].tolist()
    if per_photo:
        photos: set[int] = set()
        ranked = [r for r in ranked if r // per_photo not in photos and not photos.add(r // per_photo)]
    return ranked[:k]


@pytest.mark.parametrize("search", ["members", "all"])
@pytest.mark.parametrize("distinct", [False, True])
def test_nearest_rows_equal_brute_force(tmp_path: Path, search: str, distinct: bool) -> None:
    store, level, acts = _hand_made(tmp_path)
    store.group.attrs["views_per_image"] = 5  # rows 5p..5p+4 count as views of one photo p
    store = AtlasStore.open(store.path)  # metadata is parsed when a store opens
    found = examples.nearest_rows(store, {2: level}, k=3, search=search, distinct_photos=distinct)[2]
    valid = np.flatnonzero(store.valid_mask())
    for c in range(4):
        candidates = level.members(c) if search == "members" else valid
        expected = _brute_force(
            acts, np.asarray(candidates), level.direction[c].astype(np.float64), 3, 5 if distinct else 0
        )
        got = [r for r in found.rows[c].tolist() if r >= 0]
        assert got == expected, (search, c)
        assert np.all(np.diff(found.values[c][: len(got)]) <= 0)  # best first
    if search == "members":
        assert found.rows[3, 2] == -1 and found.values[3, 2] == -np.inf  # a cell of 2 members has 2 examples
    assert 17 not in found.rows  # the skipped row is never an example


def test_topk_merge_keeps_the_best_across_blocks() -> None:
    top = examples.TopK.empty(cells=2, k=2)
    top.merge(np.array([0, 0, 1]), np.array([0.5, 0.9, 0.1]), np.array([10, 11, 12]))
    top.merge(np.array([0, 1, 1]), np.array([0.7, 0.1, 0.3]), np.array([20, 5, 21]))
    assert top.rows.tolist() == [[11, 20], [21, 5]]  # tie 0.1 between rows 12 and 5: the smaller id
    np.testing.assert_allclose(top.values, [[0.9, 0.7], [0.3, 0.1]])


def test_topk_keeps_one_row_per_photo() -> None:
    top = examples.TopK.empty(cells=1, k=3, rows_per_photo=10)  # rows 10..19 are one photo's
    top.merge(np.zeros(4, int), np.array([0.9, 0.8, 0.7, 0.6]), np.array([10, 11, 25, 3]))
    assert top.rows.tolist() == [[10, 25, 3]]
    top.merge(np.zeros(2, int), np.array([0.95, 0.65]), np.array([12, 40]))  # a better row of photo 1
    assert top.rows.tolist() == [[12, 25, 40]]
    np.testing.assert_allclose(top.values, [[0.95, 0.7, 0.65]])


def test_crop_box_by_hand() -> None:
    # a 200 x 200 view at (100, 50); position (7, 7) of 14 x 14 is centred at 7.5 / 14 of the view
    box = examples.example_crop_box((100, 50, 300, 250), (7, 7), (14, 14), 0.25)
    np.testing.assert_allclose(box, (182.142857, 132.142857, 232.142857, 182.142857), rtol=1e-6)
    # a corner position is shifted inside the view
    assert examples.example_crop_box((100, 50, 300, 250), (0, 0), (14, 14), 0.5) == (100, 50, 200, 150)
    # a 400 x 100 view: the square of the view is a 2:1 box of the photo (what the model saw)
    assert examples.example_crop_box((0, 0, 400, 100), (13, 0), (14, 14), 0.5) == (0, 50, 200, 100)


def test_missing_photos_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, level, _ = _hand_made(tmp_path)  # synthetic store: its image paths do not exist
    picks = examples.nearest_rows(store, {2: level}, k=2)[2]
    with caplog.at_level(logging.WARNING):
        paths = examples.write_thumbnails(store, picks, tmp_path / "ex", "examples/level_2", 32, 0.3, 90)
    assert paths == [[], [], [], []]
    assert "cannot be opened" in caplog.text and "synthetic/" in caplog.text


def test_thumbnails_of_the_small_atlas(small_atlas) -> None:
    import json

    cfg, store = small_atlas.config, small_atlas.store
    atlas = small_atlas.atlas_dir / "main"
    attrs = store.attrs
    sampling, (_, h, w) = attrs["sampling"], attrs["model"]["layer_shape"]
    paths, yx_all = store.image_paths(), np.asarray(store.group["samples"]["yx"][:])
    checked = 0
    for n in small_atlas.levels:
        level = derived.read_level(store, n, with_attribution=False)
        for cell in json.loads((atlas / f"level_{n}" / "cells.json").read_text()):
            assert 1 <= len(cell["examples"]) <= cfg.tiles.examples
            members = set(level.members(cell["cell"]).tolist())
            for k, rel in enumerate(cell["examples"]):
                assert rel == f"examples/level_{n}/{cell['cell']}_{k}.jpg"
                thumb = Image.open(atlas / rel)
                assert thumb.size == (cfg.tiles.example_px, cfg.tiles.example_px) and np.asarray(thumb).std() > 2
            # the best example, recomputed independently: highest cosine member, its view, its square
            x = np.stack([np.asarray(store.group["samples"]["activations"][r], np.float64) for r in sorted(members)])
            d = level.direction[cell["cell"]].astype(np.float64)
            best = sorted(members)[int(np.argmax(x @ d / np.maximum(np.linalg.norm(x, axis=1), 1e-12)))]
            if checked < 3:
                per_image = attrs["positions_per_image"] * attrs["views_per_image"]
                image, view = best // per_image, (best // attrs["positions_per_image"]) % attrs["views_per_image"]
                photo = decode_rgb(paths[image], 10**9).image
                left, top, right, bottom = view_box(
                    photo.width,
                    photo.height,
                    image,
                    view,
                    attrs["views_per_image"],
                    tuple(sampling["view_scale"]),
                    sampling["seed"],
                )
                y, x_ = yx_all[best]
                half = cfg.tiles.example_field / 2
                u, v = np.clip([(x_ + 0.5) / w, (y + 0.5) / h], half, 1 - half)
                box = (
                    left + (u - half) * (right - left),
                    top + (v - half) * (bottom - top),
                    left + (u + half) * (right - left),
                    top + (v + half) * (bottom - top),
                )
                expected = np.asarray(
                    photo.resize((cfg.tiles.example_px,) * 2, Image.Resampling.LANCZOS, box=box), float
                )
                got = np.asarray(Image.open(atlas / cell["examples"][0]), float)
                assert np.abs(got - expected).mean() < 6  # JPEG noise only
                checked += 1
    assert checked == 3
