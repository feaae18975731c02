"""What ``atlas status`` and ``atlas collect|render|tiles --workers/--scheduler`` do, minus the
progress bar (the CLI owns bars and passes their callbacks in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.cluster import open_client, run_sharded, shard_count
from stages.config import Config
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.progress import collect_progress, render_progress

_UNITS = {"collect": "inputs", "render": "icons", "tiles": "files"}


def run_on_cluster(
    stage: str, config: Config, shard_flag: str, on_start: Callable[[int], None], progress: Callable[[int], None]
) -> str:
    """Run every shard of ``stage`` on the configured dask cluster; the one-line summary."""
    if shard_flag != "0/1":
        raise AtlasError(
            f"--shard {shard_flag} runs one shard of an array job; with --workers/--scheduler the "
            "cluster runs every shard (choose how many with --shards)"
        )
    with open_client(config.cluster) as client:
        n = shard_count(config.cluster, len(client.nthreads()))
        on_start(n)
        results = run_sharded(stage, config, client, n, progress=progress)
    store = AtlasStore.open(config.data.store, mode="r")
    if stage == "tiles":
        state = f"atlas in {Path(config.data.atlas)}"
    else:
        report = collect_progress(store, n) if stage == "collect" else render_progress(store, n)
        state = report.message() if report is not None else "nothing to do"
    devices = ", ".join(sorted({r.device for r in results}))
    return (
        f"{stage}: {n} shards on {len({r.worker for r in results})} workers ({devices}): "
        f"{sum(r.units_run for r in results)} {_UNITS[stage]} run; {state}"
    )


def status_lines(config: Config, n_shards: int | None) -> tuple[list[str], bool]:
    """``atlas status``: per stage one line, then one per incomplete shard; and whether all is complete."""
    store = AtlasStore.open(config.data.store, mode="r")
    reports = [collect_progress(store, n_shards), render_progress(store, n_shards)]
    lines = [] if reports[1] is not None else [f"render: not started (no {store.derived_path('icons')})"]
    for report in (r for r in reports if r is not None):
        lines.append(report.message())
        lines += [
            f"  shard {s.shard}/{s.n_shards}: {s.done}/{s.total} {report.unit} done, missing {s.missing}: "
            f"{report.rerun_command(s)}"
            for s in report.incomplete_shards
        ]
    return lines, all(r.complete for r in reports if r is not None)
