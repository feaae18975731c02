"""Sharded stages over dask.distributed (pipeline/cluster.py) and the completeness check
(store/progress.py): a 2-worker LocalCluster gives bit-identical stores and icons to one
process; a missing shard is named with the command that finishes it, and reduce refuses until then.
Real MobileNetV2 and real photos; one LocalCluster for the module."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline.cli import build_parser
from pipeline.cli import main as cli_main
from pipeline.cluster import cuda_index, open_client, run_sharded, worker_rank
from pipeline.commands.common import parse_shard as _parse_shard
from pipeline.params import load_config
from stages.collect import stage as collect
from stages.config import ClusterConfig, Config
from stages.context import StageContext
from stages.model.registry import LoadedModel
from stages.reduce import stage as reduce
from stages.render import stage as render
from stages.sections import CollectSection, RenderSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.icons import IconStore
from store.progress import collect_progress, render_progress, shard_progress
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture
from tests.test_render import LEVELS, tiny_atlas, tiny_config

REPO = Path(__file__).resolve().parents[1]
ROW_ARRAYS = ["activations", "yx", "top_pred_idx", "top_pred_logit", "attr_idx", "attr_val", "attr_label"]
COLLECT = {
    "views_per_image": 3,
    "positions_per_image": 2,
    "rows_per_chunk": 4,
    "batch_size": 5,
    "num_workers": 0,
    "top_k": 7,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with open_client(ClusterConfig(workers=2)) as c:
        yield c


def _collect_sets(source: Path, store: Path, **overrides: object) -> list[str]:
    values = {**COLLECT, **overrides}
    return [f"data.source={source}", f"data.store={store}"] + [f"collect.{k}={v}" for k, v in values.items()]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    out = {name: group["samples"][name][:] for name in ROW_ARRAYS}
    out["status"], out["done"] = group["inputs"]["status"][:], group["blocks"]["done"][:]
    return out


# ------------------------------------------------------------------------------ pure pieces
def test_shard_progress_counts_done_units_per_contiguous_range() -> None:
    shards = shard_progress(np.array([1, 1, 0, 1, 0, 0], bool), 3)  # ranges [0,2) [2,4) [4,6)
    assert [(s.shard, s.done, s.total, s.missing) for s in shards] == [(0, 2, 2, 0), (1, 1, 2, 1), (2, 0, 2, 2)]
    assert [s.total for s in shard_progress(np.zeros(5, bool), 8)] == [0, 1, 0, 1, 1, 0, 1, 1]


def test_worker_rank_and_gpu_choice() -> None:
    assert worker_rank(3) == 3  # LocalCluster names workers 0..n-1
    assert worker_rank("SLURMCluster-7") == 7  # dask-jobqueue: one process per job
    assert worker_rank("SLURMCluster-7-1") == 1  # second process of job 7
    assert worker_rank("gpu-worker") == 0
    assert [cuda_index(r, 4) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    with pytest.raises(ValueError):
        cuda_index(0, 0)


# ------------------------------------------------------------------------------ on the cluster
def test_collect_on_two_workers_equals_one_process(
    photo_folder: Path, tmp_path: Path, client, one_thread, capsys: pytest.CaptureFixture[str]
) -> None:
    single = tmp_path / "single.zarr"
    collect.run(
        CollectSection.of(load_config(None, _collect_sets(photo_folder, single))),
        StageContext(device=torch.device("cpu")),
    )
    sharded = tmp_path / "sharded.zarr"
    argv = [
        "collect",
        "-q",
        "--params",
        str(tmp_path / "none.yaml"),
        "--scheduler",
        client.scheduler.address,
        "--shards",
        "4",
    ]
    (tmp_path / "none.yaml").write_text("{}\n")
    for item in _collect_sets(photo_folder, sharded):
        argv += ["--set", item]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "collect: 4 shards on 2 workers (cpu): 12 inputs run" in out and "6/6 blocks done, complete" in out
    ours, ref = _arrays(sharded), _arrays(single)
    for name in ROW_ARRAYS + ["status", "done"]:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    assert ours["done"].all()


def test_render_on_two_workers_equals_one_process(tmp_path: Path, mobilenet: LoadedModel, client, one_thread) -> None:
    cfg = tiny_config()
    whole = tiny_atlas(tmp_path / "a" / "s.zarr", mobilenet)
    render.run(RenderSection.of(cfg), StageContext(whole, device=torch.device("cpu"), model=mobilenet))
    sharded = tiny_atlas(tmp_path / "b" / "s.zarr", mobilenet)
    cfg.data.store = str(sharded.path)
    results = run_sharded("render", cfg, client, n_shards=3)
    assert [r.shard for r in results] == [(0, 3), (1, 3), (2, 3)] and sum(r.units_run for r in results) == 7
    assert {r.device for r in results} == {"cpu"}
    for n in LEVELS:
        a = IconStore.open(whole.derived_path("icons")).read_level(n)
        b = IconStore.open(sharded.derived_path("icons")).read_level(n)
        assert b.done.all()
        np.testing.assert_array_equal(a.icons, b.icons)
        np.testing.assert_array_equal(a.objective, b.objective)
        np.testing.assert_array_equal(a.cossim, b.cossim)
    progress = render_progress(sharded, 3)
    assert progress is not None and progress.complete and progress.total == 4  # 2 + 2 batches of 2


def test_a_failing_shard_is_one_line_naming_it(tmp_path: Path, client) -> None:
    cfg = Config()
    cfg.data.store = str(tmp_path / "nowhere.zarr")
    with pytest.raises(AtlasError) as err:
        run_sharded("render", cfg, client, n_shards=2)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("render shard 0/2 failed: store ") and "does not exist" in message
    assert "rerun `atlas render --shard 0/2`" in message and "(2 of 2 shards failed: 0, 1)" in message


# ------------------------------------------------------------------------------ completeness
def test_missing_collect_shard_is_named_and_reduce_refuses(
    photo_folder: Path, tmp_path: Path, one_thread, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.zarr"
    cfg = load_config(None, _collect_sets(photo_folder, path, views_per_image=1, rows_per_chunk=2))
    for i in (0, 1, 3):  # 4 inputs, one per block; shard 2 of 4 never ran
        collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(i, 4)))
    store = AtlasStore.open(path)
    progress = collect_progress(store)  # the shard count recorded by the last run: 4
    assert [s.missing for s in progress.shards] == [0, 0, 1, 0] and not progress.complete
    assert "3/4 blocks done; shard 2/4 missing 1 blocks: rerun `atlas collect --shard 2/4`" in progress.message()

    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{store: {path}}}\n")
    assert cli_main(["status", "--params", str(params)]) == 1
    out = capsys.readouterr().out
    assert "shard 2/4: 0/1 blocks done, missing 1: atlas collect --shard 2/4" in out
    assert "render: not started" in out

    with pytest.raises(AtlasError) as err:
        reduce.run(cfg.reduce, StageContext(store))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("reduce needs a complete collect: ") and "--shard 2/4" in str(err.value)

    collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(2, 4)))
    assert collect_progress(AtlasStore.open(path)).complete
    assert cli_main(["status", "--params", str(params), "--shards", "2"]) == 0
    assert "4/4 blocks done, complete" in capsys.readouterr().out


def test_tiles_refuses_an_unfinished_render(
    tmp_path: Path, mobilenet: LoadedModel, one_thread, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    render.run(
        RenderSection.of(tiny_config()), StageContext(store, device=torch.device("cpu"), shard=(1, 2), model=mobilenet)
    )  # shard 0/2 never ran
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{store: {store.path}, atlas: {tmp_path / 'atlas'}}}\n")
    assert cli_main(["tiles", "-q", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("atlas tiles: error: tiles needs a complete render: ")
    assert "2/4 batches done; missing 2 batches: rerun `atlas render`" in err
    assert not (tmp_path / "atlas").exists()
    assert [s.missing for s in render_progress(store, 2).shards] == [2, 0]


def test_tiles_on_two_workers_equals_the_single_process_export(small_atlas, tmp_path: Path, client) -> None:
    cfg = small_atlas.config.model_copy(deep=True)
    cfg.data.atlas = str(tmp_path / "atlas")
    results = run_sharded("tiles", cfg, client, n_shards=2)  # one level each; the last one assembles
    assert [r.shard for r in results] == [(0, 2), (1, 2)] and all(r.units_run > 0 for r in results)
    ours, ref = tmp_path / "atlas" / "main", small_atlas.atlas_dir / "main"
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert any(f.suffix == ".jpg" for f in files) and (Path("level_6") / "cells.json") in files
    assert sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (ours / rel).read_bytes() == (ref / rel).read_bytes(), rel


def test_slurm_examples_use_real_cli_flags_and_match_their_array_size() -> None:
    scripts = sorted((REPO / "docs" / "cluster").glob("*.sbatch"))
    assert {p.name for p in scripts} >= {"collect_array.sbatch", "render_array.sbatch"}
    parser = build_parser()
    for script in scripts:
        text = script.read_text()
        array = re.search(r"#SBATCH --array=0-(\d+)", text)
        default_n = re.search(r"N=\$\{SLURM_ARRAY_TASK_COUNT:-(\d+)\}", text)
        if array or default_n:
            assert array and default_n and int(array.group(1)) + 1 == int(default_n.group(1)), script.name
        env = {
            "SLURM_ARRAY_TASK_ID": "3",
            "N": default_n.group(1) if default_n else "1",
            "((SLURM_CPUS_PER_TASK - 1))": "7",
        }
        commands = [line.split("||")[0] for line in text.splitlines() if line.startswith("atlas ")]
        assert commands, f"{script.name} runs no atlas command"
        for line in commands:
            for name, value in env.items():
                line = line.replace(f"${{{name}}}", value).replace(f"${name}", value)
            args = parser.parse_args(shlex.split(line)[1:])  # unknown flags exit here
            if getattr(args, "shard", "0/1") != "0/1":
                assert _parse_shard(args.shard) == (3, int(env["N"]))
    chain = (REPO / "docs" / "cluster" / "submit_chain.sh").read_text()
    assert chain.count('--dependency="afterok:') == 3


def test_local_cluster_leaves_this_process_environment_alone() -> None:
    before = dict(os.environ)
    with open_client(ClusterConfig(workers=1)):
        assert dict(os.environ) == before  # dask's nanny sets OMP_NUM_THREADS=1 & co. for its workers only
    assert dict(os.environ) == before
