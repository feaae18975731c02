from pathlib import Path

import numpy as np
import pytest

from store.atlas_store import AtlasStore, BlockData, StoreSpec
from store.errors import AtlasError
from store.schema import STATUS_FIRST_SKIP, STATUS_STORED
from store.shards import shard_blocks


def _spec(layer: str = "features.13.conv.0", n_images: int = 10) -> StoreSpec:
    return StoreSpec(
        model={"name": "mobilenet_v2", "layer": layer},
        dataset={"fingerprint": "abc"},
        sampling={"seed": 0},
        channels=4,
        n_images=n_images,
        views_per_image=3,
        positions_per_image=2,
        rows_per_chunk=8,
        dtype="float16",
        top_k=3,
        top_predictions=2,
    )


def test_geometry_blocks_align_with_inputs(tmp_path: Path) -> None:
    store = AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(), {"skip_reasons": ["empty_file"]})
    assert store.n_inputs == 30 and store.n_rows == 60
    assert store.n_blocks == 8  # 4 inputs (8 rows) per block, last block has 2 inputs
    assert store.block_input_range(7) == range(28, 30)
    assert store.block_row_range(7) == range(56, 60)
    covered = [r for b in range(store.n_blocks) for r in store.block_row_range(b)]
    assert covered == list(range(60))


def test_write_block_marks_done_and_valid_mask(tmp_path: Path) -> None:
    store = AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(), {"skip_reasons": ["empty_file"]})
    status = np.array([STATUS_STORED, STATUS_FIRST_SKIP, STATUS_STORED, STATUS_STORED], np.uint8)
    acts = np.arange(32, dtype=np.float32).reshape(8, 4)
    store.write_block(1, BlockData(status=status, activations=acts, rows={"yx": np.ones((8, 2), np.int16)}))
    assert store.pending_blocks() == [0, 2, 3, 4, 5, 6, 7]
    mask = store.valid_mask()
    assert mask[8:16].tolist() == [True, True, False, False, True, True, True, True]
    assert not mask[:8].any()
    np.testing.assert_array_equal(store.activations()[8:16].compute(), acts.astype(np.float16))
    assert store.counts() == {"inputs": 30, "stored": 3, "pending": 26, "skipped_empty_file": 1, "skipped": 1}


def test_reopen_with_other_model_or_layer_is_refused(tmp_path: Path) -> None:
    AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(), {})
    AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(), {})  # same spec: fine
    with pytest.raises(AtlasError, match=r"model\.layer.*features\.13\.conv\.0.*features\.10"):
        AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(layer="features.10"), {})


def test_open_refuses_missing_foreign_and_old_schema(tmp_path: Path) -> None:
    import zarr

    with pytest.raises(AtlasError, match="does not exist"):
        AtlasStore.open(tmp_path / "nope.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["x"] = 1
    with pytest.raises(AtlasError, match="not an activation-atlas store"):
        AtlasStore.open(tmp_path / "other.zarr")
    store = AtlasStore.create_or_open(tmp_path / "s.zarr", _spec(), {})
    store.group.attrs["schema_version"] = 0
    with pytest.raises(AtlasError, match="schema version 0"):
        AtlasStore.open(tmp_path / "s.zarr")


def test_shards_are_disjoint_and_cover_everything() -> None:
    for n_blocks in (1, 7, 64, 1000):
        for n in (1, 3, 8):
            ranges = [shard_blocks(n_blocks, i, n) for i in range(n)]
            flat = [b for r in ranges for b in r]
            assert flat == list(range(n_blocks))
    with pytest.raises(AtlasError):
        shard_blocks(10, 3, 3)


def test_synthetic_store_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    acts = rng.random((2500, 6)).astype(np.float16)
    idx = rng.integers(0, 4, (2500, 2)).astype(np.int16)
    store = AtlasStore.create_synthetic_for_tests(
        tmp_path / "s.zarr", acts, idx, rng.random((2500, 2)).astype(np.float16)
    )
    again = AtlasStore.open(tmp_path / "s.zarr")
    assert again.valid_mask().all()
    np.testing.assert_array_equal(again.activations().compute(), acts)
    np.testing.assert_array_equal(again.attribution_topk()[0].compute(), idx)
    assert again.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert store.n_blocks == 3
