"""Scale evidence for docs/scaling.md: a sharded, killed-and-resumed collect, and every stage at 1M.

    python bench/scale.py collect [--inputs 50000] [--shards 2] [--kill-after 300]
    python bench/scale.py stages  [--rows 1000000] [--render-shard 0/1] [--tiles]

``collect``: the real demo photos' deterministic random views are distinct inputs (one position
each), collected by ``--shards`` CLI processes in parallel (one thread each) into one store; shard 0
is SIGKILLed after ``--kill-after`` seconds and started again, and must resume where it stopped.
It then checks the store is complete with no duplicated or lost rows.

``stages``: the 19,344 real demo rows extended to ``--rows`` (bench/reduce.py's real-derived data,
marked as the demo model's activations since they are built from them), then ``atlas reduce``,
``atlas grid``, ``atlas render`` (level 20: rendering is per cell, not per row), ``atlas tiles``
(level 20 with dataset examples searched over all 1M rows) and ``bench/tiles.py`` (all four levels,
unrendered ones filled with real icons for timing) as separate processes.

Every process is measured on its own (``os.wait4``): wall seconds, CPU seconds (user + sys, which
the other jobs sharing this 2-core machine do not inflate) and peak RSS. Prints a table and writes
``bench/results/scale_<part>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


@dataclass
class Proc:
    """One measured process."""

    name: str
    wall_s: float
    cpu_s: float
    peak_rss_gb: float
    returncode: int


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(name: str, args: list[str], log_dir: Path) -> tuple[str, subprocess.Popen, float]:
    """Start ``atlas ARGS`` (or a script, when ARGS[0] ends in .py) with its output in a log file."""
    log = open(log_dir / f"{name.replace('/', '_').replace(' ', '_')}.log", "w")
    command = [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", "pipeline.cli", *args]
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    return name, proc, time.perf_counter()


def wait(started: tuple[str, subprocess.Popen, float]) -> Proc:
    name, proc, t0 = started
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Proc(name, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20,
                proc.returncode)


def run(name: str, args: list[str], log_dir: Path) -> Proc:
    result = wait(start(name, args, log_dir))
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}); see {log_dir}")
    return result


def _table(procs: list[Proc], extra: dict[str, Any]) -> str:
    lines = [f"{'process':34s} {'wall s':>8s} {'cpu s':>8s} {'peak GB':>8s} {'exit':>5s}"]
    lines += [f"{p.name:34s} {p.wall_s:8.1f} {p.cpu_s:8.1f} {p.peak_rss_gb:8.2f} {p.returncode:5d}" for p in procs]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


def _write(part: str, procs: list[Proc], extra: dict[str, Any]) -> None:
    print(_table(procs, extra))
    out = REPO / "bench" / "results" / f"scale_{part}.json"
    out.write_text(json.dumps({"processes": [asdict(p) for p in procs], **extra}, indent=2))
    print(f"wrote {out}")


# --------------------------------------------------------------------------------- collect
def bench_collect(args: argparse.Namespace) -> None:
    from stages.images.sources import open_image_source
    from store.atlas_store import AtlasStore

    photos = len(open_image_source(args.source).records)
    views = math.ceil(args.inputs / photos)
    store, logs = args.work / "collect.zarr", args.work / "logs_collect"
    logs.mkdir(parents=True, exist_ok=True)
    if store.exists():
        import shutil

        shutil.rmtree(store)
    common = ["collect", "-q", "--source", str(args.source), "--store", str(store), "--views-per-image", str(views),
              "--positions-per-image", "1", "--batch-size", "32", "--rows-per-chunk", str(args.rows_per_chunk)]
    t0 = time.perf_counter()
    running = [start(f"collect shard {i}/{args.shards}", [*common, "--shard", f"{i}/{args.shards}"], logs)
               for i in range(args.shards)]
    time.sleep(args.kill_after)
    name, victim, _ = running[0]
    done_before = int(AtlasStore.open(store, mode="r").done_blocks().sum())
    victim.send_signal(signal.SIGKILL)
    procs = [wait(running[0])]
    procs[0].name += " (SIGKILLed)"
    running[0] = start(f"collect shard 0/{args.shards} resumed", [*common, "--shard", f"0/{args.shards}"], logs)
    procs += [wait(r) for r in running]
    wall = time.perf_counter() - t0
    s = AtlasStore.open(store, mode="r")
    counts = s.counts()
    inputs = s.n_inputs
    extra = {
        "photos": photos, "views_per_image": views, "inputs": inputs, "shards": args.shards,
        "kill_after_s": args.kill_after, "blocks_done_at_kill": done_before, "blocks": s.n_blocks,
        "complete": bool(s.done_blocks().all()), "store_counts": counts,
        "wall_s": round(wall, 1), "inputs_per_s_wall": round(inputs / wall, 2),
        "cpu_s_per_input": round(sum(p.cpu_s for p in procs) / inputs, 4),
        "inputs_per_cpu_s": round(inputs / sum(p.cpu_s for p in procs), 2),
    }
    _write("collect", procs, extra)


# --------------------------------------------------------------------------------- stages
def _point_at_real_photos(store: Any, real: Any) -> None:
    """Row r of the 1M store derives from real valid row a = r mod n_real: give it a's photo, so the
    tiles stage's dataset examples decode real photos (timing as in a real run; crops are of view 0)."""
    import numpy as np

    valid = np.flatnonzero(real.valid_mask())
    per_image = int(real.attrs["views_per_image"]) * int(real.attrs["positions_per_image"])
    paths = real.image_paths()[valid[np.arange(store.n_inputs) % len(valid)] // per_image]
    store.group["images"]["path"][:] = paths


def bench_stages(args: argparse.Namespace) -> None:
    from store.atlas_store import AtlasStore

    store, logs = args.work / "m1.zarr", args.work / "logs_stages"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    if not (store / "zarr.json").exists() or args.rebuild:
        t0 = time.perf_counter()
        code = ("import sys, json; sys.path[:0] = ['bench', '.']; from pathlib import Path; from reduce import make_store; "
                f"print(json.dumps(make_store(Path({str(store)!r}), {args.rows}, {str(args.real)!r})))")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        procs.append(Proc("make 1M real-derived store", time.perf_counter() - t0, float("nan"), float("nan"), 0))
        real = AtlasStore.open(args.real, mode="r")
        s = AtlasStore.open(store)
        s.group.attrs.update({"model": real.attrs["model"], "class_names": real.attrs.get("class_names", [])})
        _point_at_real_photos(s, real)
    common = ["--store", str(store), "-q"]
    procs.append(run("reduce (UMAP, fit 200k + place)", ["reduce", *common], logs))
    procs.append(run("grid (levels 20, 40, 80, 160)", ["grid", *common], logs))
    procs.append(run(f"render level 20 shard {args.render_shard}",
                     ["render", *common, "--set", "render.levels=[20]", "--shard", args.render_shard], logs))
    if args.tiles:
        procs.append(run("tiles (level 20, examples)", ["tiles", *common, "--atlas", str(args.work / "atlas_m1"),
                                                        "--set", "tiles.levels=[20]"], logs))
        procs.append(run("tiles bench, 4 levels (bench/tiles.py)",
                         ["bench/tiles.py", "--store", str(store), "--fill-missing",
                          "--out", str(REPO / "bench" / "results" / "scale_tiles.json")], logs))
    s = AtlasStore.open(store, mode="r")
    from store import derived

    cells = {n: len(derived.read_level(s, n, with_attribution=False).count) for n in derived.grid_levels(s)}
    _write("stages", procs, {"rows": s.n_rows, "cells_per_level": cells})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["collect", "stages"])
    parser.add_argument("--work", type=Path, default=REPO / "data" / "scale")
    parser.add_argument("--source", type=Path, default=REPO / "data" / "demo_photos")
    parser.add_argument("--inputs", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=600.0)
    parser.add_argument("--rows-per-chunk", type=int, default=1024, help="collect block size (smaller: finer resume)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--real", type=Path, default=REPO / "data" / "store.zarr")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--render-shard", default="0/1", help="render all of level 20 (0/1) or one shard of it")
    parser.add_argument("--tiles", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bench_collect(args) if args.part == "collect" else bench_stages(args)


if __name__ == "__main__":
    main()
