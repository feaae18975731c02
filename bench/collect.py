"""Benchmark the collect stage against a naive baseline and the bare trunk, in one run.

    python bench/collect.py [--source DIR] [--images N] [--views V] [--batch-size B] [--layer L]
    python bench/collect.py --smoke --source DIR --out /tmp/collect.json     # seconds; what CI runs

The classifier and layer are ``params.yaml``'s ``model:`` section unless ``--model`` /
``--weights`` / ``--layer`` say otherwise (``--params`` picks another file); the JSON records them.

Same images, same views and positions for every row of the table:
- ``naive``: what earlier tools do — decode one view, run the WHOLE model at batch size 1 with a
  forward hook on the layer, read (y, x). No attribution.
- ``bare trunk``: the trunk forward alone on pre-decoded tensors at batch size B (the ceiling:
  no decoding, no store, no head).
- ``collect (head off)``: this stage, activations only, decoding workers, writing the store.
- ``collect``: this stage as configured by default: + logits and the JVP attribution to all
  1000 classes.
- extra rows: 3 positions per input (the demo's setting: one pass through the head for all
  three), and both attribution rows again with the attribution as collect computed it before
  (one ``torch.func.jvp`` per position: ``before``), so the gain is measured in the same run.

The machine may be shared: every collect/trunk row runs ``--repeats`` times, round-robin (a
change of load hits every row alike), and the table shows each row's best inputs/s and its ratio
to the best bare-trunk rate; the JSON also keeps every run and the CPU seconds per input (this
process and its decoding workers), which a shared machine disturbs much less than wall time.
- steady: the same runs timed from the end of their first model batch (what a long run sees; the
  trunk row likewise times its batches after a warm-up batch).
- checksums: the head-off collect again without the per-chunk crc32c codec, and the collected rows
  written to a store with / without it (``bench_checksums``): the ratios of the same run.
Prints a table and writes ``--out`` (default ``bench/results/collect.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import add_model_flags, load_config, machine_record, model_overrides, model_record, write_json  # noqa: E402

from stages.collect import stage as collect  # noqa: E402
from stages.collect.blocks import interior_positions  # noqa: E402
from stages.collect.inputs import to_model_input  # noqa: E402
from stages.context import StageContext  # noqa: E402
from stages.images.crops import render_view, view_box  # noqa: E402
from stages.images.decoding import decode_rgb  # noqa: E402
from stages.images.sources import open_image_source  # noqa: E402
from stages.model.registry import load_model  # noqa: E402
from stages.sections import CollectSection  # noqa: E402


def _config(
    source: str, store: str, n_images: int, views: int, args: argparse.Namespace, head: bool, positions: int = 1
):
    sets = [
        f"data.source={source}",
        f"data.store={store}",
        f"collect.views_per_image={views}",
        f"collect.batch_size={args.batch_size}",
        f"collect.head={str(head).lower()}",
        f"collect.positions_per_image={positions}",
        "collect.device=cpu",
        *model_overrides(args),
    ]
    if args.workers is not None:
        sets.append(f"collect.num_workers={args.workers}")
    return load_config(args.params, sets)


def _subset_source(source: str, n_images: int, tmp: Path) -> str:
    """A file list of the first n images, so every variant reads exactly the same files."""
    records = open_image_source(source).records[:n_images]
    listing = tmp / "images.txt"
    listing.write_text("\n".join(r.path for r in records) + "\n")
    return str(listing)


def bench_naive(config, model, paths: list[str], positions: np.ndarray) -> float:
    views = config.collect.views_per_image
    layer = dict(model.module.named_modules())[config.model.layer]
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    t0 = time.perf_counter()
    try:
        n = 0
        for image, path in enumerate(paths):
            for view in range(views):
                img = decode_rgb(path, config.collect.max_pixels).image
                box = view_box(
                    img.width, img.height, image, view, views, tuple(config.collect.view_scale), config.collect.seed
                )
                x = to_model_input(np.asarray(render_view(img, box, config.model.image_size))[None], model.device)
                captured.clear()
                with torch.no_grad():
                    model.module(model.normalize(x))
                y, x_ = positions[n]
                _ = captured[0][0, :, y, x_].numpy().copy()
                n += 1
    finally:
        handle.remove()
    return n / (time.perf_counter() - t0)


def bench_trunk(config, model, n_inputs: int) -> tuple[float, float]:
    """(inputs/s, CPU seconds per input) of the trunk alone on one pre-made batch, after a warm-up."""
    batch = config.collect.batch_size
    x = model.normalize(torch.rand(batch, 3, config.model.image_size, config.model.image_size)).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        model.trunk(x)  # warm-up
        t0, c0 = time.perf_counter(), _cpu_seconds()
        done = 0
        while done < n_inputs:
            model.trunk(x)
            done += batch
    return done / (time.perf_counter() - t0), (_cpu_seconds() - c0) / done


def bench_collect(config) -> tuple[float, int]:
    """Steady-state inputs/s: model load and store creation are excluded, as for the others."""
    summary = collect.run(CollectSection.of(config), StageContext(device=torch.device("cpu")))
    return summary.inputs_per_second, summary.stored


class PerPositionJVP:
    """The attribution as collect computed it before: one ``torch.func.jvp`` through the head per
    position (the primal pass redone each time). Same numbers as ``HeadJVP`` (tests/test_attribution.py)."""

    def __init__(self, head) -> None:
        self.head = head

    def jvp(self, act, cuts, tangents):
        with torch.no_grad():
            out = [torch.func.jvp(lambda a: self.head(a, *cuts), (act,), (t,)) for t in tangents]
        return out[-1][0], torch.stack([attr for _, attr in out])


@contextlib.contextmanager
def attribution_before():
    """Run collect with :class:`PerPositionJVP` in place of the one-pass ``HeadJVP``."""
    saved = collect.HeadJVP
    collect.HeadJVP = PerPositionJVP
    try:
        yield
    finally:
        collect.HeadJVP = saved


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decoding workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_collect_cpu(config) -> tuple[float, int, float, float]:
    """(inputs/s, stored, CPU seconds per input, steady inputs/s), all without the setup (model load,
    store creation).

    The steady rate counts from the end of the first model batch to the end of the last: like the
    trunk row, which times its batches after a warm-up batch, it leaves out the one-off start of a
    run (the decoding workers starting, the first photos decoded before any batch can run, the
    first forward's kernel set-up), which a long collect pays once.
    """
    start: list[float] = []
    ticks: list[tuple[float, int]] = []

    def progress(n: int) -> None:
        ticks.append((time.perf_counter(), n))

    summary = collect.run(
        CollectSection.of(config),
        StageContext(device=torch.device("cpu"), progress=progress, on_start=lambda _n: start.append(_cpu_seconds())),
    )
    cpu = (_cpu_seconds() - start[0]) / max(summary.inputs_run, 1)
    steady = summary.inputs_per_second
    if len(ticks) > 2:
        after_first = sum(n for _, n in ticks[1:])
        steady = after_first / max(ticks[-1][0] - ticks[0][0], 1e-9)
    return summary.inputs_per_second, summary.stored, cpu, steady


def bench_checksums(
    source: str, args: argparse.Namespace, store_path: str, tmp: Path, repeats: int, images: int, write_mb: float
) -> dict[str, float]:
    """What the per-chunk crc32c checksums (store/zarrio.py) cost, measured in this run.

    Both variants run alternately ``repeats`` times each (in turn first) and the medians are
    compared, so a change of the machine's load during the run hits both alike:
    - ``collect_ratio``: head-off collect of the first ``images`` photos (a fresh store each run),
      inputs/s with checksums / without;
    - ``write_ratio``: the rows just collected (activations, attributions; repeated up to
      ``write_mb`` MiB so bytes, not per-store overheads, dominate) written into a fresh store,
      MB/s with / without: the store's own share, which the model forward dwarfs end to end;
    - ``crc_share``: CPU time of the CRC-32C over the compressed chunks / CPU time of compressing
      them (zstd level 0), on the collected activations: the codec's intrinsic cost.
    """
    import google_crc32c
    from numcodecs import Zstd

    from store import zarrio
    from store.atlas_store import AtlasStore

    sub = tmp / "checksums"
    sub.mkdir()
    listing = _subset_source(source, images, sub)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for k in range(repeats):
        for checksums in (True, False) if k % 2 == 0 else (False, True):  # neither always goes first
            config = _config(listing, str(sub / f"c{k}{checksums}.zarr"), images, args.views, args, head=False)
            with zarrio.without_checksums() if not checksums else contextlib.nullcontext():
                rates[checksums].append(bench_collect(config)[0])
    src = AtlasStore.open(store_path, mode="r")
    acts, idx, val = (src.row_values(name) for name in ("activations", "attr_idx", "attr_val"))
    chunk = src.group["samples"]["activations"].chunks[0]
    blocks = [part.tobytes() for part in np.array_split(acts, max(1, len(acts) // chunk))]
    zstd = Zstd(level=0)
    encoded = [zstd.encode(b) for b in blocks]
    cpu = {"encode": [], "crc": []}
    for _ in range(5):
        t0 = time.process_time()
        for b in blocks:
            zstd.encode(b)
        t1 = time.process_time()
        for e in encoded * 20:
            google_crc32c.value(e)
        cpu["encode"].append(t1 - t0)
        cpu["crc"].append((time.process_time() - t1) / 20)
    reps = max(1, int(write_mb * 2**20 // (acts.nbytes + idx.nbytes + val.nbytes)))
    acts, idx, val = (np.concatenate([a] * reps) for a in (acts, idx, val))
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for k in range(repeats):
        for checksums in (True, False) if k % 2 == 0 else (False, True):
            t0 = time.perf_counter()
            with zarrio.without_checksums() if not checksums else contextlib.nullcontext():
                AtlasStore.create_synthetic_for_tests(
                    sub / f"w{k}{checksums}.zarr", acts, idx, val, rows_per_chunk=chunk
                )
            seconds[checksums].append(time.perf_counter() - t0)
    mb = (acts.nbytes + idx.nbytes + val.nbytes) / 2**20
    out = {
        "collect_inputs_per_second_checksums": float(np.median(rates[True])),
        "collect_inputs_per_second_no_checksums": float(np.median(rates[False])),
        "write_mb_per_second_checksums": mb / float(np.median(seconds[True])),
        "write_mb_per_second_no_checksums": mb / float(np.median(seconds[False])),
        "write_mb": mb,
        "crc_share": min(cpu["crc"]) / max(min(cpu["encode"]), 1e-9),
        "repeats": repeats,
        "images": images,
    }
    out["collect_ratio"] = out["collect_inputs_per_second_checksums"] / out["collect_inputs_per_second_no_checksums"]
    out["write_ratio"] = out["write_mb_per_second_checksums"] / out["write_mb_per_second_no_checksums"]
    return out


SMOKE = {"images": 2, "views": 2, "batch_size": 2, "workers": 0, "naive_inputs": 2, "threads": 1, "repeats": 1}
TRUNK = "bare trunk forward (batch {})"
HEAD_OFF = "collect, head off (activations only)"
HEAD_ON = "collect (+ logits + JVP attribution)"
EXTRA = {
    "p3": "collect, 3 positions per input (the demo's setting)",
    "before": "collect (+ logits + attribution, before: torch.func.jvp per position)",
    "p3_before": "collect, 3 positions per input, before (torch.func.jvp per position)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO / "data/demo_photos"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decoding workers (default: params.yaml's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every trunk/collect row, round-robin")
    parser.add_argument("--naive-inputs", type=int, default=128, help="the naive loop is slow: time a prefix")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--smoke", action="store_true", help=f"tiny run of every row: {SMOKE}")
    parser.add_argument("--out", default=str(REPO / "bench/results/collect.json"))
    add_model_flags(parser)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        source = _subset_source(args.source, args.images, tmp)
        paths = [line for line in Path(source).read_text().splitlines() if line]
        n_inputs = len(paths) * args.views
        cfg_head = _config(source, str(tmp / "a.zarr"), len(paths), args.views, args, head=True)
        model = load_model(cfg_head.model, torch.device("cpu"))
        _, h, w = model.layer_shape
        positions = interior_positions(range(n_inputs), 1, h, w, cfg_head.collect.border, 0)[:, 0]
        naive_images = max(1, args.naive_inputs // args.views)
        trunk_name = TRUNK.format(args.batch_size)
        store_n = iter(range(10**6))

        def collect_row(head: bool, positions: int = 1, before: bool = False, keep: str | None = None):
            def run():
                path = keep if keep and not (tmp / keep).exists() else f"s{next(store_n)}.zarr"
                config = _config(source, str(tmp / path), len(paths), args.views, args, head, positions)
                with attribution_before() if before else contextlib.nullcontext():
                    rate, stored, cpu_s, steady_rate = bench_collect_cpu(config)
                return rate, cpu_s, stored, steady_rate

            return run

        def trunk_row():
            rate, cpu_s = bench_trunk(cfg_head, model, n_inputs)
            return rate, cpu_s, 0, rate

        variants = {
            trunk_name: trunk_row,
            HEAD_OFF: collect_row(False),
            HEAD_ON: collect_row(True, keep="a.zarr"),
            EXTRA["p3"]: collect_row(True, 3),
            EXTRA["before"]: collect_row(True, before=True),
            EXTRA["p3_before"]: collect_row(True, 3, before=True),
        }
        runs: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        steady: dict[str, list[float]] = {name: [] for name in variants}
        stored = 0
        c0 = _cpu_seconds()
        naive_rate = bench_naive(cfg_head, model, paths[:naive_images], positions)
        naive_cpu = (_cpu_seconds() - c0) / (naive_images * args.views)
        names = list(variants)
        for k in range(args.repeats):
            for name in names[k % len(names) :] + names[: k % len(names)]:  # round-robin: each row leads once
                rate, cpu_per_input, n, steady_rate = variants[name]()
                runs[name].append(rate)
                steady[name].append(steady_rate)
                cpu[name].append(cpu_per_input)
                stored = n if name == HEAD_ON else stored
        checksums = bench_checksums(
            args.source,
            args,
            str(tmp / "a.zarr"),
            tmp,
            1 if args.smoke else 4,
            len(paths) if args.smoke else min(len(paths), 8),
            1 if args.smoke else 64,
        )
    best = {name: max(rates) for name, rates in runs.items()}
    best_steady = {name: max(rates) for name, rates in steady.items()}
    naive, trunk = naive_rate, best[trunk_name]
    rows = {
        "naive (whole model, batch 1, hook)": naive,
        trunk_name: trunk,
        HEAD_OFF: best[HEAD_OFF],
        HEAD_ON: best[HEAD_ON],
    }
    extra = {name: best[name] for name in EXTRA.values()}
    cpu_per_input = {"naive (whole model, batch 1, hook)": naive_cpu, **{name: min(v) for name, v in cpu.items()}}
    print(
        f"\ncollect benchmark: {n_inputs} inputs ({len(paths)} real photos x {args.views} views), "
        f"{model.name} {model.layer}, CPU x{os.cpu_count()} ({args.threads} threads), torch {torch.__version__}, "
        f"best of {args.repeats} round-robin runs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'variant':70s} {'inputs/s':>9s} {'vs naive':>9s} {'vs trunk':>9s} {'steady':>7s} {'vs trunk':>9s} "
        f"{'CPU ms/input':>13s} {'CPU vs trunk':>13s}"
    )
    for name, rate in {**rows, **extra}.items():
        st = best_steady.get(name, rate)
        print(
            f"{name:70s} {rate:9.1f} {rate / naive:8.2f}x {rate / trunk:8.0%} {st:7.1f} {st / trunk:8.0%} "
            f"{1000 * cpu_per_input[name]:13.1f} {cpu_per_input[trunk_name] / cpu_per_input[name]:12.0%}"
        )
    print(
        f"checksums (crc32c per chunk; medians of {checksums['repeats']} alternating runs): collect head off "
        f"{checksums['collect_inputs_per_second_checksums']:.1f} vs "
        f"{checksums['collect_inputs_per_second_no_checksums']:.1f} inputs/s without = {checksums['collect_ratio']:.3f}x; "
        f"store writes {checksums['write_mb_per_second_checksums']:.1f} vs "
        f"{checksums['write_mb_per_second_no_checksums']:.1f} MB/s without = {checksums['write_ratio']:.3f}x; "
        f"CRC CPU time = {checksums['crc_share']:.2%} of zstd compression"
    )
    result = {
        "model": model_record(model),
        "checksums": checksums,
        "smoke": args.smoke,
        "inputs": n_inputs,
        "images": len(paths),
        "views": args.views,
        "batch_size": args.batch_size,
        "workers": cfg_head.collect.num_workers,
        "worker_nice": cfg_head.collect.worker_nice,
        "threads": args.threads,
        "stored": stored,
        "cpu_count": os.cpu_count(),
        **machine_record(),
        "repeats": args.repeats,
        "inputs_per_second": rows,
        "ratios": {name: {"vs_naive": rate / naive, "vs_trunk": rate / trunk} for name, rate in rows.items()},
        "extra_inputs_per_second": extra,
        "extra_ratios": {name: {"vs_trunk": rate / trunk} for name, rate in extra.items()},
        "runs_inputs_per_second": runs,
        "steady_inputs_per_second": best_steady,
        "steady_ratios_vs_trunk": {name: rate / trunk for name, rate in best_steady.items()},
        "runs_steady_inputs_per_second": steady,
        "cpu_seconds_per_input": cpu_per_input,
        "cpu_ratios_vs_trunk": {name: cpu_per_input[trunk_name] / v for name, v in cpu_per_input.items()},
    }
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
