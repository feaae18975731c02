"""Steps that count: icon fidelity vs optimisation steps, attempts and image parameterisation.

    python bench/converge.py [--store data/store.zarr] [--level 20] [--cells 24] [--checkpoints 32,64,128,256,512]
                             [--attempts 4] [--params fourier,maco] [--threads 1]
    python bench/converge.py --smoke --store STORE --out /tmp/converge.json     # seconds; what CI runs

A fixed sample of real cells of one grid level (``--cells`` drawn with ``--seed`` among the
level's kept cells), rendered as the render stage renders them (its objective, whitening, icon
size, learning rate and transforms from ``params.yaml``'s ``render:``, BatchNorm folded, all the
cells in one batch), once per parameterisation (``render.param``: ``fourier``, ``maco``) and
attempt. Every attempt is one run of ``max(checkpoints)`` steps with its own seed; at each
checkpoint the current image is measured as ``atlas fidelity`` measures a stored icon
(:func:`stages.render.fidelity.respond` on the uint8 icon at its own size: centre cos-sim with the
cell's raw direction, top-5 classes; :func:`stages.render.fidelity.overlaps` against the cell's
top-5 attributed classes), and its final objective as the render loop's best-of-N judges it (on
the untransformed image).

**Checkpoints are runs.** The loop's Adam has a constant learning rate and no schedule, the
ReLU-gradient redirect covers the first 16 steps of any run, and the random transforms are drawn
from the attempt's own generator in step order, so the image at checkpoint ``k`` of a long run is
the image a ``k``-step run with the same seed returns (the test suite checks this bit for bit).
Measuring reads the image without gradients and draws nothing from the generator. **Best of N**
at checkpoint ``k`` keeps, per cell, the attempt among the first ``N`` with the highest objective
at ``k``: what ``render.attempts = N`` with ``render.steps = k`` keeps (with other seeds for the
later attempts, as the render loop draws them from one generator).

Cost is counted in image-steps per icon (``attempts x steps``): the render stage's time is
proportional to it at a fixed batch (measured per parameterisation: ``cpu_ms_per_image_step``).
The class-overlap ceiling is :func:`stages.render.fidelity.members_overlap` (what the cells' own
member photos reach). Prints a table and writes ``--out`` (default
``bench/results/converge.json``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import PARAMS, display_path, load_config, load_store_model, machine_record, model_record, write_json  # noqa: E402

from stages.featurevis import AtlasDirection, layer_forward, render  # noqa: E402
from stages.featurevis.fold_bn import fold_batchnorm  # noqa: E402
from stages.featurevis.param import ImageFn, ImageParam  # noqa: E402
from stages.model.registry import LoadedModel  # noqa: E402
from stages.render.fidelity import TOP, members_overlap, overlaps, respond  # noqa: E402
from stages.render.stage import image_param  # noqa: E402
from store import derived  # noqa: E402
from store.atlas_store import AtlasStore  # noqa: E402

log = logging.getLogger("bench.converge")

SMOKE = "2 cells, checkpoints 1,2, 2 attempts"


@dataclass
class Trace:
    """One attempt of one parameterisation, measured at every checkpoint."""

    objective: dict[int, np.ndarray] = field(default_factory=dict)  # step -> [B]
    cossim: dict[int, np.ndarray] = field(default_factory=dict)
    overlap: dict[int, np.ndarray] = field(default_factory=dict)
    cpu_s: float = 0.0  # process CPU time of the optimisation alone (measuring excluded)
    wall_s: float = 0.0


class Recorder:
    """An :class:`ImageParam` wrapper plus the render loop's ``progress_callback``: it keeps the
    attempt's ``image_fn`` and measures the image at the checkpoint steps."""

    def __init__(self, param: ImageParam, checkpoints: list[int], measure: Any) -> None:
        self.param, self.checkpoints, self.measure = param, set(checkpoints), measure
        self.image_fn: ImageFn | None = None
        self.trace = Trace()
        self.measure_cpu = self.measure_wall = 0.0

    def __call__(self, *, device: torch.device, generator: torch.Generator) -> tuple[list[torch.Tensor], ImageFn]:
        params, self.image_fn = self.param(device=device, generator=generator)
        return params, self.image_fn

    def progress(self, done: int, total: int) -> None:
        if done in self.checkpoints and self.image_fn is not None:
            c0, w0 = time.process_time(), time.perf_counter()
            obj, cos, ovl = self.measure(self.image_fn)
            self.trace.objective[done], self.trace.cossim[done], self.trace.overlap[done] = obj, cos, ovl
            self.measure_cpu += time.process_time() - c0
            self.measure_wall += time.perf_counter() - w0


def sample_cells(level: derived.CellLevel, count: int, seed: int) -> np.ndarray:
    """``count`` cell indices of the level, drawn without replacement with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(level), size=min(count, len(level)), replace=False))


def run_study(store_path: Path, model: LoadedModel, args: argparse.Namespace, checkpoints: list[int]) -> dict[str, Any]:
    config = load_config(Path(args.params_file))
    r = config.render
    store = AtlasStore.open(store_path, mode="r")
    level = derived.read_level(store, args.level, with_attribution=False)
    pick = sample_cells(level, args.cells, args.seed)
    directions = torch.as_tensor(level.direction[pick], dtype=torch.float32)
    cell_top = level.top_idx[pick, :TOP]
    has_classes: np.ndarray = np.asarray((cell_top >= 0).any(axis=1))
    ceiling = float("nan")
    if store.has_row_array("top_pred_idx"):
        members = members_overlap(level, store.row_values("top_pred_idx")[:, 0])[pick]
        ceiling = float(members[has_classes].mean()) if has_classes.any() else float("nan")
    whitening = torch.as_tensor(derived.read_whitening(store).matrix, dtype=torch.float32) if r.whiten else None
    objective = AtlasDirection(model.layer, directions, whitening=whitening, cos_power=r.cos_power, cosine=r.cosine)
    device = torch.device("cpu")
    folded = fold_batchnorm(model.module, model.layer, model.normalize)
    traces: dict[str, list[Trace]] = {}
    with (
        layer_forward(folded, model.layer, normalize=model.normalize) as forward,
        layer_forward(model.module, model.layer, normalize=model.normalize, with_logits=True) as forward_logits,
    ):

        def measure(image_fn: ImageFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with torch.no_grad():
                x = image_fn().detach()
                obj = objective(forward(x)).float().numpy()  # the loop's final objective: untransformed
                icon = (x.clamp(0, 1) * 255).round() / 255.0  # the stored uint8 icon
                resp = respond(forward_logits, model.layer, icon, directions)
            return obj, resp.cossim, overlaps(resp.top_pred, cell_top)

        for name in args.params:
            traces[name] = []
            for attempt in range(args.attempts):
                rec = Recorder(image_param(r.model_copy(update={"param": name}), len(pick)), checkpoints, measure)
                c0, w0 = time.process_time(), time.perf_counter()
                render(
                    forward,
                    objective,
                    rec,
                    steps=max(checkpoints),
                    lr=r.lr,
                    device=device,
                    seed=args.seed * 1000 + attempt,
                    progress_callback=rec.progress,
                )
                rec.trace.cpu_s = time.process_time() - c0 - rec.measure_cpu
                rec.trace.wall_s = time.perf_counter() - w0 - rec.measure_wall
                traces[name].append(rec.trace)
                log.info(
                    "%s attempt %d: %.0f CPU s; cos-sim by step %s",
                    name,
                    attempt,
                    rec.trace.cpu_s,
                    {k: round(float(v.mean()), 3) for k, v in rec.trace.cossim.items()},
                )
    rows = summarise(traces, checkpoints, has_classes, len(pick))
    return {
        "level": args.level,
        "cells": [int(k) for k in pick],
        "cells_with_classes": int(has_classes.sum()),
        "members_overlap_ceiling": ceiling,
        "size": r.size,
        "lr": r.lr,
        "objective": {"cos_power": r.cos_power, "cosine": r.cosine, "whiten": r.whiten},
        "rows": rows,
        "cost": {
            name: {
                "cpu_ms_per_image_step": 1000 * sum(t.cpu_s for t in ts) / (len(ts) * len(pick) * max(checkpoints)),
                "wall_ms_per_image_step": 1000 * sum(t.wall_s for t in ts) / (len(ts) * len(pick) * max(checkpoints)),
            }
            for name, ts in traces.items()
        },
    }


def best_of(traces: list[Trace], n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the cos-sim and overlap of the attempt among the first ``n`` with the best objective."""
    obj = np.stack([t.objective[step] for t in traces[:n]])
    keep = obj.argmax(axis=0)  # ties: the earlier attempt, as the render loop (strictly better replaces)
    cells = np.arange(obj.shape[1])
    cos = np.stack([t.cossim[step] for t in traces[:n]])[keep, cells]
    ovl = np.stack([t.overlap[step] for t in traces[:n]])[keep, cells]
    return cos, ovl


def summarise(
    traces: dict[str, list[Trace]], checkpoints: list[int], has_classes: np.ndarray, cells: int
) -> list[dict[str, Any]]:
    rows = []
    for name, ts in traces.items():
        for n in range(1, len(ts) + 1):
            for step in checkpoints:
                cos, ovl = best_of(ts, n, step)
                rows.append(
                    {
                        "param": name,
                        "attempts": n,
                        "steps": step,
                        "image_steps": n * step,
                        "mean_cossim": float(cos.mean()),
                        "median_cossim": float(np.median(cos)),
                        "p10_cossim": float(np.quantile(cos, 0.1)),
                        "frac_overlap": float(ovl[has_classes].mean()) if has_classes.any() else float("nan"),
                        "cells": cells,
                    }
                )
    return rows


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\nlevel {result['level']}: {len(result['cells'])} cells ({result['cells_with_classes']} with classes), "
        f"{result['size']} px; members' own top-{TOP} overlap (ceiling) "
        f"{100 * result['members_overlap_ceiling']:.0f}%"
    )
    print(
        f"{'param':8} {'attempts':>8} {'steps':>6} {'img-steps':>9} {'mean cos':>9} {'median':>7} {'p10':>6} {'overlap':>8}"
    )
    for row in sorted(result["rows"], key=lambda r: (r["param"], r["image_steps"], r["attempts"])):
        print(
            f"{row['param']:8} {row['attempts']:8d} {row['steps']:6d} {row['image_steps']:9d} "
            f"{row['mean_cossim']:9.3f} {row['median_cossim']:7.3f} {row['p10_cossim']:6.3f} "
            f"{100 * row['frac_overlap']:7.0f}%"
        )
    for name, cost in result["cost"].items():
        print(f"{name}: {cost['cpu_ms_per_image_step']:.2f} CPU ms per image-step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "data" / "store.zarr", help="store with a grid")
    parser.add_argument("--params-file", default=str(PARAMS), help="parameters file (its render: section)")
    parser.add_argument("--level", type=int, default=20, help="grid level whose cells are sampled")
    parser.add_argument("--cells", type=int, default=24)
    parser.add_argument("--checkpoints", default="32,64,128,256,512", help="steps at which the icons are measured")
    parser.add_argument("--attempts", type=int, default=4, help="attempts per parameterisation (best of 1..N)")
    parser.add_argument("--params", default="fourier,maco", help="render.param values to compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help=f"tiny run that exercises every row: {SMOKE}")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "converge.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cells, args.checkpoints, args.attempts = 2, "1,2", 2
    args.params = [p.strip() for p in args.params.split(",") if p.strip()]
    checkpoints = sorted({int(k) for k in args.checkpoints.split(",")})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    model = load_store_model(args.store, torch.device("cpu"))
    store = AtlasStore.open(args.store, mode="r")
    levels = derived.grid_levels(store)
    if args.level not in levels:
        args.level = levels[-1] if args.smoke else sys.exit(f"converge: level {args.level} not in {levels}")
    t0 = time.perf_counter()
    result = run_study(args.store, model, args, checkpoints)
    result = {
        "bench": "converge",
        "store": display_path(args.store),
        "model": model_record(model),
        "machine": machine_record(),
        "threads": args.threads,
        "checkpoints": checkpoints,
        "attempts": args.attempts,
        "seconds": time.perf_counter() - t0,
        **result,
    }
    print_table(result)
    print(f"wrote {write_json(args.out, result)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
