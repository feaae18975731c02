"""WebDataset tar shards as data.source: labels from .cls / .json, the same store as the folder
tree, a cut member recorded as skipped, shards over tars, SIGKILL mid-tar and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from stages.collect import stage as collect
from stages.context import StageContext
from stages.images.decoding import decode_rgb
from stages.images.sources import open_image_source
from stages.sections import CollectSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from tests.imagenet_fixtures import add_member, samples, write_tree
from tests.test_collect import wait_for_done_blocks
from tests.test_imagenet_layouts import ROW_ARRAYS, arrays, config

REPO = Path(__file__).resolve().parents[1]
PER_TAR = 3


def _items() -> list[tuple[str, str, int, bytes]]:
    items = samples(3)
    wnid, name, cls, data = items[4]
    items[4] = (wnid, name, cls, data[: len(data) // 3])  # a corrupt (cut) JPEG, in the tree and in the tar
    return items


def _write_tars(folder: Path, items: list[tuple[str, str, int, bytes]]) -> list[Path]:
    folder.mkdir(parents=True)
    tars = []
    for t in range(0, len(items), PER_TAR):
        path = folder / f"train-{t // PER_TAR:06d}.tar"
        with tarfile.open(path, "w") as archive:
            for j, (wnid, name, cls, data) in enumerate(items[t : t + PER_TAR]):
                key = name.split(".")[0]
                if j % 2:  # labels both ways: a .json with the WNID before the image, a .cls after it
                    add_member(archive, f"{key}.json", json.dumps({"wnid": wnid}).encode())
                    add_member(archive, f"{key}.jpg", data)
                else:
                    add_member(archive, f"{key}.jpg", data)
                    add_member(archive, f"{key}.cls", f"{cls}\n".encode())
        tars.append(path)
    return tars


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tar")
    items = _items()
    write_tree(root / "tree", items)
    _write_tars(root / "shards", items)
    tree_store = root / "tree.zarr"
    collect.run(CollectSection.of(config(root / "tree", tree_store)), StageContext(device=torch.device("cpu")))
    return {"root": root, "tree": root / "tree", "shards": root / "shards", "tree_store": tree_store}


def test_tars_give_labels_and_the_same_store_as_the_folder(data: dict[str, Path], tmp_path: Path) -> None:
    pattern = str(data["shards"] / "train-{000000..000002}.tar")
    source = open_image_source(pattern)
    assert source.kind == "tar" and len(source) == 9 and not source.notes
    assert open_image_source(data["shards"]).fingerprint() == source.fingerprint()  # folder of tars == pattern
    store = tmp_path / "tar.zarr"
    summary = collect.run(CollectSection.of(config(pattern, store)), StageContext(device=torch.device("cpu")))
    assert summary.stored == 8 * 2 and summary.skipped == {"decode_error": 2}  # the cut JPEG, both views
    ours, ref = arrays(store), arrays(data["tree_store"])
    assert list(ours["label_class"]) == [cls for _, _, cls, _ in _items()]
    for name in ROW_ARRAYS + ["status", "label_class"]:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    # later stages (tiles examples, explain) read a member path like a file
    path = str(AtlasStore.open(store, mode="r").image_paths()[1])
    assert path.endswith("train-000000.tar!/n01440764_1001.jpg")
    tree_image = decode_rgb(data["tree"] / "n01440764" / "n01440764_1001.JPEG", 10**8).image
    assert np.array_equal(np.asarray(decode_rgb(path, 10**8).image), np.asarray(tree_image))


def test_shard_array_over_tars_covers_every_image_once(data: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "sharded.zarr"
    cfg = config(data["shards"], store)
    runs = [
        collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(i, 3))) for i in (2, 0, 1)
    ]
    assert sum(r.inputs_run for r in runs) == 18  # every input once, none twice
    assert runs[-1].missing_blocks == 0
    ours, ref = arrays(store), arrays(data["tree_store"])
    for name in ROW_ARRAYS + ["status", "label_class"]:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


def test_a_tar_cut_short_records_its_last_member_as_skipped(data: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    tars = _write_tars(folder, samples(2)[:PER_TAR])
    whole = tars[0].read_bytes()
    source = open_image_source(tars[0])
    last = int(source.offsets[-1]) + 200
    tars[0].write_bytes(whole[:last])  # the tar ends 200 bytes into its last image
    source = open_image_source(tars[0])
    assert len(source) == 3 and len(source.notes) == 1 and "ends inside member" in source.notes[0]
    decoded = source.decode(2, 10**8)
    assert decoded.reason == "decode_error" and "truncated tar member" in decoded.detail
    assert source.decode(0, 10**8).ok
    summary = collect.run(
        CollectSection.of(config(tars[0], tmp_path / "cut.zarr")), StageContext(device=torch.device("cpu"))
    )
    assert summary.stored == 4 and summary.skipped == {"decode_error": 2}


def test_bad_tar_sources_stop_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(b"\x1f\x8b" + b"\0" * 1000)
    with pytest.raises(AtlasError, match=r"a.tar: not an uncompressed tar"):
        open_image_source(tmp_path / "a.tar")
    with pytest.raises(AtlasError, match=r"train-000001.tar: tar shard not found \(2 of 2"):
        open_image_source(str(tmp_path / "train-{000001..000002}.tar"))


def test_sigkill_mid_tar_then_resume_is_identical(data: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "killed.zarr"
    args = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "collect",
        "-q",
        "--source",
        str(data["shards"]),
        "--store",
        str(path),
        "--views-per-image",
        "4",
        "--positions-per-image",
        "1",
        "--rows-per-chunk",
        "4",
        "--batch-size",
        "4",
        "--num-workers",
        "1",
        "--top-k",
        "5",
        "--layer",
        "features.13.conv.0",
        "--image-size",
        "224",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_for_done_blocks(proc, path, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = zarr.open_group(str(path), mode="r")["blocks"]["done"][:]
    assert 0 < done.sum() < done.size, "killed mid-run: some blocks done, some not"
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-800:]
    whole = tmp_path / "whole.zarr"
    collect.run(
        CollectSection.of(config(data["shards"], whole, "collect.views_per_image=4", "model.image_size=224")),
        StageContext(device=torch.device("cpu")),
    )
    final, ref = arrays(path), arrays(whole)
    assert (final["status"] > 0).all()
    for name in ROW_ARRAYS + ["status", "label_class"]:
        np.testing.assert_array_equal(final[name], ref[name], err_msg=name)


def test_block_shards_read_only_their_own_members_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--shard i/n over tars of unequal size (3, 2, 4 images; blocks of 2 images; n = 2): the middle tar
    straddles the boundary, and each task preads exactly its own members' bytes, once, and nothing of
    the other task's (docs/collect.md: why block shards need not be aligned to tars). Every task lists
    every tar's headers: the store's image order needs all of them, whichever way shards are cut."""
    from stages.collect.inputs import ViewDataset, ViewSettings, work_items
    from stages.images import archives, sources
    from store.shards import shard_blocks

    items = samples(3)
    folder = tmp_path / "unequal"
    folder.mkdir()
    for t, (begin, end) in enumerate([(0, 3), (3, 5), (5, 9)]):
        with tarfile.open(folder / f"train-{t:06d}.tar", "w") as archive:
            for _, name, cls, data in items[begin:end]:
                add_member(archive, f"{name.split('.')[0]}.jpg", data)
                add_member(archive, f"{name.split('.')[0]}.cls", f"{cls}\n".encode())
    listed: list[str] = []
    real_list_tar = archives.list_tar
    monkeypatch.setattr(sources, "list_tar", lambda p: listed.append(Path(p).name) or real_list_tar(p))
    reads: list[tuple[str, int, int]] = []
    real_read = archives.read_range
    monkeypatch.setattr(sources, "read_range", lambda p, o, s: reads.append((Path(p).name, o, s)) or real_read(p, o, s))

    per_task: list[list[tuple[str, int, int]]] = []
    for shard in range(2):
        listed.clear()
        source = open_image_source(folder)
        assert listed == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]  # every task lists all
        n_blocks, per_block = 5, 2  # 9 inputs (1 view), 2 per block
        blocks = {
            b: range(b * per_block, min((b + 1) * per_block, len(source))) for b in shard_blocks(n_blocks, shard, 2)
        }
        dataset = ViewDataset(work_items(blocks, 1), source, ViewSettings(1, (1.0, 1.0), 32, 0, 10**8))
        reads.clear()
        assert all(dataset[i][2] is None for i in range(len(dataset)))
        per_task.append(list(reads))
        mine = [i for r in blocks.values() for i in r]
        tar_of = [p.split("!/")[0] for p in source.rel_paths]
        assert reads == [(tar_of[i], int(source.offsets[i]), int(source.sizes[i])) for i in mine]
    assert {t for t, _, _ in per_task[0]} == {"train-000000.tar", "train-000001.tar"}
    assert {t for t, _, _ in per_task[1]} == {"train-000001.tar", "train-000002.tar"}  # the middle tar: both tasks
    assert not set(per_task[0]) & set(per_task[1])  # ... but no byte range twice
    assert len(per_task[0]) + len(per_task[1]) == 9
