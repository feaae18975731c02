"""Checksummed chunks, ``atlas verify [--repair]``, ``atlas migrate`` and foreign stores.

All on private copies of the session's ``small_atlas`` (real MobileNetV2 activations of real
photos, its layout, grid, icons and exported viewer), damaged with real byte flips, deletions and
truncations on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline.cli import main as atlas_main
from stages.collect import stage as collect
from stages.config import Config
from stages.context import StageContext
from stages.grid import stage as grid
from stages.reduce import stage as reduce
from stages.render import stage as render
from stages.sections import CollectSection, RenderSection, TilesSection
from stages.tiles import stage as tiles
from store import derived, zarrio
from store.atlas_store import AtlasStore
from store.errors import AtlasError, ChecksumError
from store.files import read_manifest
from store.migrate import rewrite_group
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture
from tests.golden_small_atlas import atlas_digests

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("", ".layout", ".grid", ".whitening", ".icons")


def _copy(small_atlas: SmallAtlas, root: Path, export: bool = True) -> Config:
    src = small_atlas.store.path
    for name in GROUPS:
        shutil.copytree(src.with_name(f"{src.stem}{name}.zarr"), root / f"store{name}.zarr")
    if export:
        shutil.copytree(small_atlas.atlas_dir, root / "atlas")
    cfg = Config.model_validate(small_atlas.config.model_dump())
    cfg.data.store, cfg.data.atlas = str(root / "store.zarr"), str(root / "atlas")
    return cfg


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def _verify(cfg: Config, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = atlas_main(
        [
            "verify",
            "-q",
            "--params",
            str(REPO / "params.yaml"),
            "--store",
            cfg.data.store,
            "--atlas",
            cfg.data.atlas,
            *extra,
        ]
    )
    return code, capsys.readouterr().out


def test_every_array_carries_a_checksum_and_every_chunk_is_on_disk(small_atlas: SmallAtlas) -> None:
    src = small_atlas.store.path
    for name in GROUPS:
        group = zarr.open_group(str(src.with_name(f"{src.stem}{name}.zarr")), mode="r")
        arrays = [a for _, a in group.arrays()] + [a for _, g in group.groups() for _, a in g.arrays()]
        assert arrays and all(zarrio.has_checksum(a) for a in arrays), name
        for array in arrays:  # written whole or all units done: no chunk left to the fill value
            assert all(zarrio.check_chunk(array, c) is None for c in np.ndindex(*zarrio.chunk_grid(array))), array.path


def test_a_failed_checksum_is_one_line_naming_array_chunk_and_command(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _copy(small_atlas, tmp_path, export=False)
    store = AtlasStore.open(cfg.data.store)
    _flip(store.path / "samples" / "activations" / "c" / "1" / "0")
    with pytest.raises(
        ChecksumError,
        match=r"array samples/activations: chunk 1\.0 \(.*samples/activations/c/1/0\) "
        r"fails its checksum .*`atlas verify --repair, then atlas collect`",
    ):
        store.activations().sum().compute()
    with pytest.raises(ChecksumError, match=r"chunk 1\.0"):
        store.row_values("activations", np.array([100]))
    np.testing.assert_array_equal(
        store.row_values("activations", np.array([3])),  # other chunks still read
        AtlasStore.open(small_atlas.store.path).row_values("activations", np.array([3])),
    )
    _flip(store.derived_path("grid") / "level_6" / "direction" / "c" / "0" / "0", 7)
    with pytest.raises(ChecksumError, match=r"array level_6/direction: chunk 0\.0 .*rewrite it with `atlas grid`"):
        derived.read_level(store, 6)
    code = atlas_main(["grid", "-q", "--params", str(REPO / "params.yaml"), "--store", cfg.data.store])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "samples/activations: chunk 1.0" in err[0], err


def test_verify_names_each_damage_and_the_repaired_store_equals_a_clean_run(
    small_atlas: SmallAtlas, mobilenet, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread
) -> None:
    cfg = _copy(small_atlas, tmp_path)
    code, out = _verify(cfg, capsys)
    assert code == 0 and "no problems" in out, out
    flipped = tmp_path / "store.zarr" / "samples" / "attr_val" / "c" / "0" / "0"
    _flip(flipped)
    deleted = tmp_path / "store.icons.zarr" / "level_6" / "icons" / "c" / "1" / "0" / "0" / "0"
    deleted.unlink()
    truncated = sorted((tmp_path / "atlas" / "main" / "level_6_files").rglob("*.jpg"))[-1]
    with open(truncated, "r+b") as f:
        f.truncate(10)
    code, out = _verify(cfg, capsys)
    assert code == 1
    lines = out.strip().splitlines()
    assert any(
        line.startswith(f"corrupt    {flipped}: chunk 0.0 fails its checksum")
        and line.endswith("-> atlas verify --repair, then atlas collect")
        for line in lines
    ), out
    assert any(line.startswith(f"missing    {deleted}: chunk 1.0.0.0 missing") for line in lines), out
    assert any(line.startswith(f"corrupt    {truncated}: is 10 bytes") for line in lines), out
    assert "fix with: atlas verify --repair, then atlas collect, then atlas render, then atlas tiles" in out

    code, out = _verify(cfg, capsys, "--repair")
    assert code == 1 and "blocks 0 marked not done" in out and "level 6 batches 1 marked not done" in out, out
    assert "now run: atlas collect, then atlas render, then atlas tiles" in out
    assert AtlasStore.open(cfg.data.store).pending_blocks() == [0]
    collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu")))
    store = AtlasStore.open(cfg.data.store)
    summary = render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    from store.icons import IconStore

    damaged = IconStore.open(store.derived_path("icons")).batch_range(6, 1)
    assert summary.batches_run == 1 and summary.icons_run == len(damaged)  # exactly the damaged batch
    tiles.run(TilesSection.of(cfg), StageContext(store))
    assert atlas_digests(store.path) == atlas_digests(small_atlas.store.path)
    ref, new = small_atlas.atlas_dir / "main", tmp_path / "atlas" / "main"
    assert read_manifest(ref)["files"] == read_manifest(new)["files"]
    assert truncated.read_bytes() == (ref / truncated.relative_to(new)).read_bytes()
    code, out = _verify(cfg, capsys)
    assert code == 0 and "no problems" in out, out


def test_verify_reports_stale_groups_and_repair_makes_readers_refuse_them(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _copy(small_atlas, tmp_path, export=False)
    cfg.reduce.margin = cfg.reduce.margin / 2  # another layout of the same rows
    store = AtlasStore.open(cfg.data.store)
    reduce.run(cfg.reduce, StageContext(store))
    code, out = _verify(cfg, capsys, "--repair")
    assert code == 1
    for name in ("grid", "whitening", "icons"):
        assert f"stale      {tmp_path / f'store.{name}.zarr'}: " in out, out
    assert "store.layout.zarr: " not in out.replace("made from layout", "")  # the new layout itself is fine
    with pytest.raises(AtlasError, match="unfinished whitening matrix .* run `atlas grid` again"):
        derived.read_whitening(store)  # repair marked it for redo: render cannot use it silently
    grid.run(cfg.grid, StageContext(store))
    code, out = _verify(cfg, capsys)
    assert code == 1 and "store.icons.zarr: rendered from layout" in out and "store.grid.zarr" not in out, out


def test_a_store_from_before_checksums_is_refused_then_migrated(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _copy(small_atlas, tmp_path, export=False)
    store_path = Path(cfg.data.store)
    with zarrio.without_checksums():  # write the store as version 1 did: no checksums, version 1
        rewrite_group(store_path, {"schema_version": 1})
        for name in GROUPS[1:]:
            rewrite_group(store_path.with_name(f"store{name}.zarr"), {"version": 1} if name == ".icons" else {})
    group = zarr.open_group(str(store_path.with_name("store.layout.zarr")), mode="r+")
    del group.attrs["rows_token"]
    assert not zarrio.has_checksum(zarr.open_group(str(store_path), mode="r")["samples/activations"])
    with pytest.raises(AtlasError, match=r"schema version 1, this version reads 2 .*run `atlas migrate --store"):
        AtlasStore.open(store_path)
    code = atlas_main(["migrate", "-q", "--params", str(REPO / "params.yaml"), "--store", str(store_path)])
    out = capsys.readouterr().out
    assert code == 0 and "schema version 1 -> 2" in out and "store.icons.zarr: rewritten" in out, out
    assert atlas_digests(store_path) == atlas_digests(small_atlas.store.path)  # contents unchanged
    code, out = _verify(cfg, capsys)
    assert code == 0 and "no problems" in out, out
    code = atlas_main(["migrate", "-q", "--params", str(REPO / "params.yaml"), "--store", str(store_path)])
    assert code == 0 and "already at the current version" in capsys.readouterr().out


def test_foreign_and_newer_stores_are_refused_naming_what_was_found(small_atlas: SmallAtlas, tmp_path: Path) -> None:
    v2 = tmp_path / "v2.zarr"
    zarr.open_group(str(v2), mode="w", zarr_format=2).attrs["x"] = 1
    with pytest.raises(
        AtlasError,
        match=r"zarr v2 store .*expected a zarr v3 group of format "
        r"'activation-atlas-store', schema version 2",
    ):
        AtlasStore.open(v2)
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs.update({"format": "napari-layers", "schema_version": 7})
    with pytest.raises(
        AtlasError,
        match=r"not an activation-atlas store \(format 'napari-layers', schema version 7; "
        r"expected .*schema version 2\)",
    ):
        AtlasStore.open(other)
    newer = tmp_path / "newer.zarr"
    shutil.copytree(small_atlas.store.path, newer)
    zarr.open_group(str(newer), mode="r+").attrs["schema_version"] = 3
    with pytest.raises(AtlasError, match=r"schema version 3, this version reads 2; use the activation-atlas version"):
        AtlasStore.open(newer)
    photos = tmp_path / "my_photos"  # collecting into a folder of someone's files never deletes them
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"not ours")
    store = AtlasStore.open(small_atlas.store.path, mode="r")
    spec = collect_spec_of(store)
    with pytest.raises(AtlasError, match=r"is not a zarr store \(no zarr.json"):
        AtlasStore.create_or_open(photos, spec, {})
    assert (photos / "holiday.jpg").read_bytes() == b"not ours"
    assert json.loads((small_atlas.store.path / "zarr.json").read_text())["attributes"]["schema_version"] == 2


def collect_spec_of(store: AtlasStore):
    """A StoreSpec equal to the one ``store`` was created with (from its attributes)."""
    from store.atlas_store import StoreSpec

    a = store.attrs
    samples = store.group["samples"]
    return StoreSpec(
        model=a["model"],
        dataset=a["dataset"],
        sampling=a["sampling"],
        channels=a["channels"],
        n_images=a["n_images"],
        views_per_image=a["views_per_image"],
        positions_per_image=a["positions_per_image"],
        rows_per_chunk=samples["activations"].chunks[0],
        dtype=str(samples["activations"].dtype),
        top_k=samples["attr_idx"].shape[1],
        top_predictions=samples["top_pred_idx"].shape[1],
    )
