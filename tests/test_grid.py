"""stages/grid/stage.py + store/derived.py: levels from a hand-made layout, checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.config import Config
from stages.context import StageContext
from stages.grid import stage as grid
from store import derived, schema
from store.atlas_store import AtlasStore
from store.errors import AtlasError

N_ROWS, CHANNELS, K, CLASSES = 700, 24, 3, 10


def _store_with_layout(tmp_path: Path, skipped: tuple[int, ...] = ()) -> tuple[AtlasStore, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    acts = (np.maximum(rng.normal(size=(N_ROWS, CHANNELS)), 0) * 100).astype(np.float16)  # sums overflow f16
    idx = np.stack([rng.choice(CLASSES, K, replace=False) for _ in range(N_ROWS)]).astype(np.int16)
    idx[::7, -1] = -1  # some rows with fewer than K attributed classes
    val = rng.normal(size=(N_ROWS, K)).astype(np.float16)
    names = [f"class {c}" for c in range(CLASSES)]
    store = AtlasStore.create_synthetic_for_tests(tmp_path / "s.zarr", acts, idx, val, None, names, rows_per_chunk=128)
    status = store.group[schema.INPUTS]["status"]
    for r in skipped:
        status[r] = schema.STATUS_FIRST_SKIP
    rows = np.flatnonzero(store.valid_mask())
    layout = rng.random((len(rows), 2)).astype(np.float32) ** 2  # uneven density: some cells dropped
    layout[:3] = [[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]]  # corners and an internal edge
    derived.write_layout(
        store,
        derived.Layout(
            rows=rows, layout=layout, embedding=layout, fitted=np.ones(len(rows), bool), attrs={"method": "hand-made"}
        ),
    )
    return store, {"acts": acts, "idx": idx, "val": val, "rows": rows, "layout": layout}


def _config(levels: list[int], min_count: int = 5) -> Config:
    cfg = Config()
    cfg.grid.levels = levels
    cfg.grid.min_count = min_count
    return cfg


def test_levels_match_direct_numpy(tmp_path: Path) -> None:
    store, d = _store_with_layout(tmp_path, skipped=(5, 6, 300))
    result = grid.run(_config([2, 5, 8]).grid, StageContext(store))
    assert result.levels == [2, 5, 8] and result.rows == N_ROWS - 3
    rows, layout = d["rows"], d["layout"].astype(np.float64)
    for n in (2, 5, 8):
        level = derived.read_level(store, n)
        i = np.minimum((layout[:, 0] * n).astype(int), n - 1)  # exact here: no point near an edge but the
        j = np.minimum((layout[:, 1] * n).astype(int), n - 1)  # hand-placed ones, which are exact
        for m in range(len(level)):
            in_cell = (i == level.i[m]) & (j == level.j[m])
            members = rows[in_cell]
            np.testing.assert_array_equal(level.members(m), members)
            assert level.count[m] == len(members) > 5
            np.testing.assert_allclose(level.direction[m], d["acts"][members].astype(np.float64).mean(0), rtol=1e-6)
            dense = np.zeros((len(members), CLASSES))
            for r_pos, r in enumerate(members):
                ok = d["idx"][r] >= 0
                dense[r_pos, d["idx"][r][ok]] = d["val"][r][ok].astype(np.float64)
            np.testing.assert_allclose(level.attribution[m], dense.mean(0), rtol=1e-5, atol=1e-6)
            order = np.argsort(-dense.mean(0), kind="stable")[:5]
            positive = dense.mean(0)[order] > 0  # only positive attributions label a cell
            np.testing.assert_array_equal(level.top_idx[m], np.where(positive, order, -1))
            assert level.top_names()[m][: positive.sum()] == [f"class {c}" for c in order[positive]]
        # every laid-out row is in exactly one cell: kept cells + dropped rows add up
        assert level.attrs["n_rows_kept"] + level.attrs["n_rows_dropped"] == len(rows)
        counts = np.bincount(j * n + i, minlength=n * n)
        assert len(level) == int((counts > 5).sum())


def test_whitening_is_written_from_the_same_pass(tmp_path: Path) -> None:
    store, d = _store_with_layout(tmp_path, skipped=(10,))
    cfg = _config([4])
    grid.run(cfg.grid, StageContext(store))
    a = d["acts"][d["rows"]].astype(np.float64)
    m = a.T @ a / len(a)
    expected = np.linalg.inv(m + cfg.grid.ridge * np.trace(m) / CHANNELS * np.eye(CHANNELS))
    w = derived.read_whitening(store)
    assert w.attrs["n"] == len(a)
    np.testing.assert_allclose(w.second_moment, m, rtol=1e-10)
    np.testing.assert_allclose(w.matrix, expected, rtol=1e-7, atol=1e-12)


def test_min_count_zero_keeps_every_non_empty_cell(tmp_path: Path) -> None:
    store, d = _store_with_layout(tmp_path)
    grid.run(_config([40], min_count=0).grid, StageContext(store))
    level = derived.read_level(store, 40, with_attribution=False)
    assert level.attribution is None
    assert level.count.sum() == N_ROWS and (level.count > 0).all()
    assert level.member_offsets[-1] == N_ROWS


def test_stale_layout_and_missing_level_are_refused(tmp_path: Path) -> None:
    store, d = _store_with_layout(tmp_path)
    grid.run(_config([3]).grid, StageContext(store))
    with pytest.raises(AtlasError, match="no grid level 7; choose one of: 3"):
        derived.read_level(store, 7)
    moved = derived.Layout(
        rows=d["rows"], layout=1.0 - d["layout"], embedding=d["layout"], fitted=np.ones(len(d["rows"]), bool)
    )
    derived.write_layout(store, moved)
    with pytest.raises(AtlasError, match="older layout; run `atlas grid` again"):
        derived.read_level(store, 3)
    store.group[schema.INPUTS]["status"][0] = schema.STATUS_FIRST_SKIP  # the store changed after reduce
    with pytest.raises(AtlasError, match="run `atlas reduce` again"):
        grid.run(_config([3]).grid, StageContext(store))


def test_grid_without_layout_says_what_to_run(tmp_path: Path) -> None:
    acts = np.ones((20, 4), np.float32)
    store = AtlasStore.create_synthetic_for_tests(tmp_path / "bare.zarr", acts)
    with pytest.raises(AtlasError, match=r"has no layout; run `atlas reduce` first"):
        grid.run(_config([2]).grid, StageContext(store))
    with pytest.raises(AtlasError, match=r"has no whitening matrix; run `atlas grid` first"):
        derived.read_whitening(store)


def test_progress_and_layout_plot(tmp_path: Path) -> None:
    from stages.grid.layout_plot import plot_layout

    store, _ = _store_with_layout(tmp_path)
    totals: list[int] = []
    steps: list[int] = []
    grid.run(_config([5]).grid, StageContext(store, progress=steps.append, on_start=totals.append))
    n_blocks = -(-N_ROWS // 128)
    assert totals == [n_blocks] and steps == [1] * n_blocks  # one block at a time, announced once
    for color_by in ("label", "top_class"):
        out = plot_layout(store, 5, tmp_path / f"layout_{color_by}.png", color_by)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AtlasError, match="choose one of: label, top_class"):
        plot_layout(store, None, tmp_path / "x.png", "colour")  # type: ignore[arg-type]
