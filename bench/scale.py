"""Scale evidence for docs/scaling.md: a sharded, killed-and-resumed collect, and every stage at 1M.

    python bench/scale.py collect [--inputs 50000] [--shards 2] [--kill-after 300] [--layer L]
    python bench/scale.py stages  [--rows 1000000] [--render-shard 0/1] [--tiles]
    python bench/scale.py collect --smoke --source DIR --work DIR --out X.json          # seconds (CI)
    python bench/scale.py stages --smoke --real STORE --tiles --work DIR --out X.json   # seconds (CI)

``collect``: the real demo photos' deterministic random views are distinct inputs (one position
each), collected by ``--shards`` CLI processes in parallel (one thread each) into one store; shard 0
is SIGKILLed after ``--kill-after`` seconds and started again, and must resume where it stopped.
It then checks the store is complete with no duplicated or lost rows. The classifier and layer are
``params.yaml``'s unless ``--model`` / ``--weights`` / ``--layer`` say otherwise.

``stages``: the 19,344 real demo rows extended to ``--rows`` (bench/reduce.py's real-derived data,
marked as the demo model's activations since they are built from them), then ``atlas reduce``,
``atlas grid``, ``atlas render`` (level 20: rendering is per cell, not per row), ``atlas tiles``
(level 20 with dataset examples searched over all 1M rows) and ``bench/tiles.py`` (all four levels,
unrendered ones filled with real icons for timing) as separate processes. Every stage runs with
the model, weights and layer of the real store (``--real``; its ``attrs["model"]``), whatever
``params.yaml`` says.

``--smoke``: the same processes at toy sizes (collect: 16 inputs in blocks of 2, shard 0 killed as
soon as the store has a finished block; stages: 1,000 rows, PCA instead of UMAP, levels 4 and 8,
2 render steps at 32 px).

Every process is measured on its own (``os.wait4``): wall seconds, CPU seconds (user + sys, which
the other jobs sharing this 2-core machine do not inflate) and peak RSS. Prints a table and writes
``--out`` (default ``bench/results/scale_<part>.json``).
"""

from __future__ import annotations

import argparse
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

from benchlib import machine_record, model_record, store_model_config, write_json  # noqa: E402


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
    return Proc(
        name, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20, proc.returncode
    )


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


def _write(args: argparse.Namespace, procs: list[Proc], extra: dict[str, Any]) -> None:
    print(_table(procs, extra))
    out = args.out or REPO / "bench" / "results" / f"scale_{args.part}.json"
    write_json(out, {"processes": [asdict(p) for p in procs], "smoke": args.smoke, **extra, **machine_record()})
    print(f"wrote {out}")


def _model_sets(model: dict[str, Any]) -> list[str]:
    """``--set`` arguments that make a CLI stage load exactly ``model`` (name, weights, layer)."""
    return [a for k in ("name", "weights", "layer") if model.get(k) for a in ("--set", f"model.{k}={model[k]}")]


def _extra_sets(args: argparse.Namespace) -> list[str]:
    return [a for item in args.overrides for a in ("--set", item)]


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
    from benchlib import load_config

    model = {k: v for k, v in (("name", args.model), ("weights", args.weights), ("layer", args.layer)) if v}
    model = {**load_config(args.params).model.model_dump(), **model}
    common = [
        "collect",
        "-q",
        "--params",
        str(args.params),
        "--source",
        str(args.source),
        "--store",
        str(store),
        "--views-per-image",
        str(views),
        "--positions-per-image",
        "1",
        "--batch-size",
        str(args.batch_size),
        "--rows-per-chunk",
        str(args.rows_per_chunk),
        *_model_sets(model),
        *_extra_sets(args),
    ]
    t0 = time.perf_counter()
    running = [
        start(f"collect shard {i}/{args.shards}", [*common, "--shard", f"{i}/{args.shards}"], logs)
        for i in range(args.shards)
    ]
    name, victim, _ = running[0]
    done_before = _wait_for_kill(store, victim, args.kill_after, args.kill_after_blocks)
    killed = victim.poll() is None
    if killed:
        victim.send_signal(signal.SIGKILL)
    procs = [wait(running[0])]
    procs[0].name += " (SIGKILLed)" if killed else " (finished before the kill)"
    running[0] = start(f"collect shard 0/{args.shards} resumed", [*common, "--shard", f"0/{args.shards}"], logs)
    procs += [wait(r) for r in running]
    wall = time.perf_counter() - t0
    s = AtlasStore.open(store, mode="r")
    counts = s.counts()
    inputs = s.n_inputs
    extra = {
        "model": model_record(s.attrs.get("model") or {}),
        "photos": photos,
        "views_per_image": views,
        "inputs": inputs,
        "shards": args.shards,
        "kill_after_s": args.kill_after,
        "kill_after_blocks": args.kill_after_blocks,
        "killed": killed,
        "blocks_done_at_kill": done_before,
        "blocks": s.n_blocks,
        "complete": bool(s.done_blocks().all()),
        "store_counts": counts,
        "wall_s": round(wall, 1),
        "inputs_per_s_wall": round(inputs / wall, 2),
        "cpu_s_per_input": round(sum(p.cpu_s for p in procs) / inputs, 4),
        "inputs_per_cpu_s": round(inputs / sum(p.cpu_s for p in procs), 2),
    }
    _write(args, procs, extra)
    if not extra["complete"] or any(p.returncode != 0 for p in procs[1:]):
        raise SystemExit("collect did not complete; see the table above")


def _done_blocks(store: Path) -> int:
    from store.atlas_store import AtlasStore

    try:
        return int(AtlasStore.open(store, mode="r").done_blocks().sum())
    except Exception:
        return 0


def _wait_for_kill(store: Path, victim: subprocess.Popen, seconds: float, blocks: int | None) -> int:
    """Wait ``seconds`` (or, with ``blocks``, until the store has that many finished blocks); blocks done then."""
    t0 = time.perf_counter()
    while victim.poll() is None and time.perf_counter() - t0 < seconds:
        if blocks is not None and _done_blocks(store) >= blocks:
            break
        time.sleep(0.1 if blocks is not None else 1.0)
    return _done_blocks(store)


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
        code = (
            "import sys, json; sys.path[:0] = ['bench', '.']; from pathlib import Path; from reduce import make_store; "
            f"print(json.dumps(make_store(Path({str(store)!r}), {args.rows}, {str(args.real)!r})))"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        procs.append(Proc("make 1M real-derived store", time.perf_counter() - t0, float("nan"), float("nan"), 0))
        real = AtlasStore.open(args.real, mode="r")
        s = AtlasStore.open(store)
        s.group.attrs.update({"model": real.attrs["model"], "class_names": real.attrs.get("class_names", [])})
        _point_at_real_photos(s, real)
    model = store_model_config(store)  # the real store's model: every stage loads exactly it
    common = ["--store", str(store), "-q", *_model_sets(model.model_dump()), *_extra_sets(args)]
    from benchlib import load_config

    config = load_config(REPO / "params.yaml", args.overrides)
    level = args.render_level
    procs.append(
        run(f"reduce ({config.reduce.method}, fit {config.reduce.fit_samples:,} + place)", ["reduce", *common], logs)
    )
    procs.append(run(f"grid (levels {', '.join(map(str, config.grid.levels))})", ["grid", *common], logs))
    procs.append(
        run(
            f"render level {level} shard {args.render_shard}",
            ["render", *common, "--set", f"render.levels=[{level}]", "--shard", args.render_shard],
            logs,
        )
    )
    if args.tiles:
        tiles_out = args.tiles_out or (
            Path(args.out).with_name(Path(args.out).stem + "_tiles.json")
            if args.out
            else REPO / "bench" / "results" / "scale_tiles.json"
        )
        procs.append(
            run(
                f"tiles (level {level}, examples)",
                ["tiles", *common, "--atlas", str(args.work / "atlas_m1"), "--set", f"tiles.levels=[{level}]"],
                logs,
            )
        )
        procs.append(
            run(
                "tiles bench, all levels (bench/tiles.py)",
                [
                    "bench/tiles.py",
                    "--store",
                    str(store),
                    "--fill-missing",
                    "--out",
                    str(tiles_out),
                    *(["--smoke"] if args.smoke else []),
                ],
                logs,
            )
        )
    s = AtlasStore.open(store, mode="r")
    from store import derived

    cells = {n: len(derived.read_level(s, n, with_attribution=False).count) for n in derived.grid_levels(s)}
    _write(
        args,
        procs,
        {
            "model": model_record(model),
            "real": str(args.real),
            "rows": s.n_rows,
            "cells_per_level": cells,
            "render_level": level,
        },
    )


SMOKE = {
    "collect": {
        "inputs": 16,
        "rows_per_chunk": 2,
        "batch_size": 4,
        "kill_after": 120.0,
        "kill_after_blocks": 1,
        "overrides": ["collect.num_workers=0", "collect.device=cpu"],
    },
    "stages": {
        "rows": 1000,
        "render_level": 4,
        "rebuild": True,
        "overrides": [
            "reduce.method=pca",
            "reduce.n_neighbors=10",
            "grid.levels=[4,8]",
            "render.steps=2",
            "render.size=32",
            "render.device=cpu",
            "tiles.examples=1",
        ],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["collect", "stages"])
    parser.add_argument("--work", type=Path, default=REPO / "data" / "scale")
    parser.add_argument("--source", type=Path, default=REPO / "data" / "demo_photos")
    parser.add_argument("--inputs", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="collect batch size")
    parser.add_argument("--kill-after", type=float, default=600.0)
    parser.add_argument(
        "--kill-after-blocks",
        type=int,
        default=None,
        help="kill shard 0 as soon as the store has this many finished blocks (or --kill-after s)",
    )
    parser.add_argument("--rows-per-chunk", type=int, default=1024, help="collect block size (smaller: finer resume)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="collect: parameters file")
    parser.add_argument("--model", default=None, help="collect: classifier (default: params.yaml's)")
    parser.add_argument("--weights", default=None, help="collect: weights (default: params.yaml's)")
    parser.add_argument("--layer", default=None, help="collect: layer (default: params.yaml's)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--real", type=Path, default=REPO / "data" / "store.zarr")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--render-level", type=int, default=20, help="the level rendered and exported by the CLI")
    parser.add_argument("--render-shard", default="0/1", help="render all of the level (0/1) or one shard of it")
    parser.add_argument("--tiles", action="store_true")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="parameter override for every CLI process (repeatable)",
    )
    parser.add_argument("--smoke", action="store_true", help="toy sizes of the same processes (see above)")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/scale_<part>.json)")
    parser.add_argument(
        "--tiles-out",
        type=Path,
        default=None,
        help="bench/tiles.py's JSON (default: <out>_tiles.json, or bench/results/scale_tiles.json)",
    )
    args = parser.parse_args()
    if args.smoke:
        smoke = SMOKE[args.part]
        vars(args).update({**smoke, "overrides": smoke["overrides"] + args.overrides})
    args.work.mkdir(parents=True, exist_ok=True)
    bench_collect(args) if args.part == "collect" else bench_stages(args)


if __name__ == "__main__":
    main()
