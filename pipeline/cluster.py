"""Run a sharded stage (collect, render, tiles) over a dask.distributed cluster, one task per shard.

The same code runs on one laptop core or many workers: a task is exactly ``atlas collect --shard
i/n`` (or render's), so parallelism comes from the store's units (collect blocks, render batches),
not from a second implementation. The store is the contract: tasks write disjoint units and mark
each done last, so a lost worker's task is simply run again (dask reschedules it) and a failed
shard can be rerun by hand with ``--shard i/n``; results are bit-identical to a single process.

``cluster.scheduler`` connects to a running cluster (an address, or the scheduler file that
``dask scheduler --scheduler-file`` and dask-jobqueue setups write); ``cluster.workers`` starts a
``LocalCluster`` of single-threaded worker processes. ``cluster.shards`` defaults to
``shards_per_worker`` (4) per worker so uneven shards balance out.

GPU workers: a stage's ``device: auto`` resolves on the worker (:func:`worker_device`), so each
worker uses its own GPU: the only visible one when the cluster narrowed ``CUDA_VISIBLE_DEVICES``
per worker (dask-cuda, SLURM ``--gpus-per-task``), else ``cuda:{rank % count}``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stages.config import ClusterConfig, Config
from stages.model.device import select_device
from store.errors import AtlasError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

SHARDED_STAGES = ("collect", "render", "tiles")


@dataclass(frozen=True)
class ShardResult:
    """What one shard task did, and where."""

    shard: tuple[int, int]
    worker: str
    device: str
    units_run: int  # collect: inputs; render: icons; tiles: tiles + example thumbnails
    seconds: float


# ------------------------------------------------------------------------------ the client
def cluster_requested(cfg: ClusterConfig) -> bool:
    return cfg.scheduler is not None or cfg.workers > 0


@contextmanager
def open_client(cfg: ClusterConfig) -> Iterator[Client]:
    """A client of the configured cluster; a LocalCluster is closed on exit, a remote one is left running."""
    import dask
    from distributed import Client, LocalCluster

    if cfg.scheduler is not None:
        target = Path(cfg.scheduler)
        try:
            if cfg.scheduler.endswith(".json"):
                if not target.exists():
                    raise AtlasError(
                        f"cluster.scheduler: scheduler file {target} does not exist; start the "
                        "scheduler with --scheduler-file or pass its tcp:// address"
                    )
                client = Client(scheduler_file=str(target), timeout="20s")
            else:
                client = Client(cfg.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise AtlasError(
                f"cluster.scheduler {cfg.scheduler!r} is unreachable ({type(exc).__name__}); "
                "start the scheduler or fix --scheduler"
            ) from None
        with client:
            yield client
        return
    # Non-daemonic workers may start collect's image-decoding processes (collect.num_workers).
    # The nanny applies its pre-spawn environment (OMP/MKL/OPENBLAS_NUM_THREADS=1, ...) to *this*
    # process's os.environ so the workers inherit it, and leaves it there: every process started
    # afterwards (e.g. a later collect) would silently run single-threaded. Restore ours.
    environ = dict(os.environ)
    try:
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = LocalCluster(
                n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, processes=True, dashboard_address=None
            )
    finally:
        os.environ.clear()
        os.environ.update(environ)
    with cluster, Client(cluster) as client:
        yield client


def shard_count(cfg: ClusterConfig, n_workers: int) -> int:
    """``cluster.shards``, else ``shards_per_worker`` per worker (at least one shard)."""
    if cfg.shards is not None:
        return cfg.shards
    return max(1, n_workers) * cfg.shards_per_worker


# ------------------------------------------------------------------------------ on the worker
def worker_rank(name: object) -> int:
    """A worker's index from its dask name: LocalCluster names workers 0..n-1; dask-jobqueue
    names them ``SLURMCluster-3`` (or ``-3-1`` with several processes per job): the last number."""
    if isinstance(name, int):
        return name
    numbers = re.findall(r"\d+", str(name))
    return int(numbers[-1]) if numbers else 0


def cuda_index(rank: int, count: int) -> int:
    """The GPU of worker ``rank`` among ``count`` visible ones (one worker per GPU, round robin)."""
    if count < 1:
        raise ValueError("no CUDA device visible")
    return rank % count


def worker_device(name: str) -> torch.device:
    """``auto`` on a dask worker: this worker's GPU (never a hard-coded ``cuda:0``), else CPU/MPS."""
    if name != "auto" or not torch.cuda.is_available():
        return select_device(name)
    count = torch.cuda.device_count()
    if count == 1:  # the cluster gave this worker one GPU (CUDA_VISIBLE_DEVICES)
        return torch.device("cuda", 0)
    from distributed import get_worker

    return torch.device("cuda", cuda_index(worker_rank(get_worker().name), count))


def _worker_setup(config: Config) -> str:
    """Torch threads = the worker's threads (dask sets OMP_NUM_THREADS=1); collect's decoding
    processes only where the worker may have children. Returns the worker's name."""
    from distributed import get_worker

    worker = get_worker()
    torch.set_num_threads(max(1, int(worker.state.nthreads)))
    if multiprocessing.current_process().daemon and config.collect.num_workers > 0:
        log.warning(
            "dask worker %s is daemonic: collect decodes in-process (collect.num_workers 0); "
            "set distributed.worker.daemon: false to decode in parallel",
            worker.name,
        )
        config.collect.num_workers = 0
    return str(worker.name)


def _collect_shard(config_json: dict[str, Any], shard: tuple[int, int]) -> ShardResult:
    from stages.collect import stage as collect
    from stages.context import StageContext
    from stages.sections import CollectSection

    config = Config.model_validate(config_json)
    worker = _worker_setup(config)
    device = worker_device(config.collect.device)
    summary = collect.run(CollectSection.of(config), StageContext(device=device, shard=shard))
    return ShardResult(shard, worker, str(device), summary.inputs_run, summary.seconds)


def _render_shard(config_json: dict[str, Any], shard: tuple[int, int]) -> ShardResult:
    from stages.context import StageContext
    from stages.render import stage as render
    from stages.sections import RenderSection
    from store.atlas_store import AtlasStore

    config = Config.model_validate(config_json)
    worker = _worker_setup(config)
    device = worker_device(config.render.device)
    store = AtlasStore.open(config.data.store)
    summary = render.run(RenderSection.of(config), StageContext(store, device=device, shard=shard))
    return ShardResult(shard, worker, str(device), summary.icons_run, summary.seconds)


def _tiles_shard(config_json: dict[str, Any], shard: tuple[int, int]) -> ShardResult:
    """A slice of the levels; the shard that finds every level staged assembles the atlas."""
    from stages.context import StageContext
    from stages.sections import TilesSection
    from stages.tiles import stage as tiles
    from store.atlas_store import AtlasStore

    config = Config.model_validate(config_json)
    worker = _worker_setup(config)
    summary = tiles.run(TilesSection.of(config), StageContext(AtlasStore.open(config.data.store), shard=shard))
    return ShardResult(shard, worker, "cpu", summary.result.tiles + summary.result.examples, summary.seconds)


_TASKS: dict[str, Callable[[dict[str, Any], tuple[int, int]], ShardResult]] = {
    "collect": _collect_shard,
    "render": _render_shard,
    "tiles": _tiles_shard,
}


# ------------------------------------------------------------------------------ the run
def run_sharded(
    stage: str,
    config: Config,
    client: Client,
    n_shards: int,
    progress: Callable[[int], None] | None = None,
) -> list[ShardResult]:
    """Run ``stage`` as ``n_shards`` tasks (shard ``i/n`` each) and wait for all of them.

    ``progress(1)`` is called as each shard finishes. Every shard runs even if one fails (their
    units are good); then the first failure is raised as one line naming the shard to rerun.
    """
    from distributed import as_completed

    if stage not in _TASKS:
        raise AtlasError(f"stage {stage!r} cannot run on a cluster; sharded stages: {', '.join(_TASKS)}")
    payload = config.model_dump(mode="json")
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            _TASKS[stage], payload, (i, n_shards), key=f"atlas-{stage}-{i}-of-{n_shards}-{token}", pure=False
        ): i
        for i in range(n_shards)
    }
    t0 = time.perf_counter()
    results: list[ShardResult] = []
    failed: list[tuple[int, BaseException]] = []
    for future in as_completed(futures):
        try:
            results.append(future.result())
        except Exception as exc:
            failed.append((futures[future], exc))
        if progress is not None:
            progress(1)
    log.info(
        "%s: %d shards on %d workers in %.1f s",
        stage,
        n_shards,
        len({r.worker for r in results}),
        time.perf_counter() - t0,
    )
    if failed:
        raise AtlasError(_failure_line(stage, n_shards, failed))
    return sorted(results, key=lambda r: r.shard)


def _failure_line(stage: str, n_shards: int, failed: list[tuple[int, BaseException]]) -> str:
    failed = sorted(failed, key=lambda f: f[0])
    shard, exc = failed[0]
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, AtlasError):
        detail = f"{type(exc).__name__}: {detail}"
    line = f"{stage} shard {shard}/{n_shards} failed: {detail}; rerun `atlas {stage} --shard {shard}/{n_shards}`"
    if len(failed) > 1:
        line += f" ({len(failed)} of {n_shards} shards failed: {', '.join(str(i) for i, _ in failed)})"
    return line
