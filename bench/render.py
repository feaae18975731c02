"""Benchmark the render engine against torch-lucent on the same directions, model and CPU.

    python bench/render.py [--store data/store.zarr] [--level 20] [--icons 32] [--steps 128] [--size 80]
                           [--threads 1] [--repeat 2]
    python bench/render.py --smoke --store STORE --out /tmp/render.json     # seconds; what CI runs

The model, weights and layer are the store's own (``attrs["model"]``, what ``collect`` recorded),
so the directions and the network always agree. Rows of the table (same classifier and layer, the
same real cell directions, same icon size and steps, one process, ``--threads`` intra-op threads):

- ``lucent``: ``lucent.optvis.render.render_vis`` with ``objectives.direction_neuron`` (cos-sim of
  the centre activation with the direction), one icon at a time, its standard transforms,
  ``fixed_image_size`` = the icon size (no upsampling to 224).
- ``engine, cos-sim objective``: this project's batched engine (all icons in one batch, BatchNorm
  folded, as the render stage runs it) maximising lucent's objective (cos-sim at the centre):
  the like-for-like speed comparison at an identical objective.
- ``engine, atlas objective (raw cosine)``: the render stage's default, whitened ``dot`` times the
  true cosine with the raw direction to the 4th (``render.cosine: raw``).
- ``engine, atlas objective (lucid cosine)``: the objective of lucid's activation-atlas notebook,
  ``dot * (dot / |h|)^4`` with the whitened dot in both places (``render.cosine: lucid``;
  docs/method.md §5).

"cos-sim" is measured the same way for every row: the centre activation of the final uint8 icon
(untransformed, at icon size) against the raw direction. Speed is reported as icons per wall
second and per CPU-second of this process (with one thread, the icons/s of an otherwise idle core:
on a machine shared with other jobs it is the steadier figure); ``--repeat N`` keeps the fastest of
N runs of every row. Prints a table and writes ``--out``
(default ``bench/results/render.json``). Needs ``pip install --no-deps torch-lucent==0.1.8
kornia==0.4.1`` for the lucent row (skipped with a message otherwise).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import display_path, load_store_model, machine_record, model_record, write_json  # noqa: E402
from gallery import real_directions  # noqa: E402

from stages.featurevis import AtlasDirection, FourierImage, Objective, layer_forward, render  # noqa: E402
from stages.featurevis.fold_bn import fold_batchnorm  # noqa: E402
from stages.model.registry import LoadedModel, build_classifier  # noqa: E402
from stages.render.stage import centre_cossim  # noqa: E402

log = logging.getLogger("bench.render")


@dataclass(frozen=True)
class Row:
    name: str
    icons: int
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time over the same span: what other jobs on the machine do not inflate
    cossim: np.ndarray
    runs_seconds: tuple[float, ...] = ()  # wall time of every repeat (``--repeat``); seconds is their minimum

    def as_dict(self) -> dict[str, float | str | int]:
        return {
            "name": self.name,
            "icons": self.icons,
            "seconds": round(self.seconds, 2),
            "icons_per_s": round(self.icons / self.seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "icons_per_cpu_s": round(self.icons / self.cpu_seconds, 4),
            "mean_cossim": round(float(self.cossim.mean()), 4),
            "median_cossim": round(float(np.median(self.cossim)), 4),
            "runs_seconds": [round(t, 2) for t in self.runs_seconds or (self.seconds,)],
        }


def best_of(repeat: int, measure: Callable[[], Row | None]) -> Row | None:
    """``measure()`` ``repeat`` times: the fastest wall and CPU times (a shared machine only ever slows a
    run down), the cos-sims of the first run (every run is seeded identically)."""
    runs = [measure() for _ in range(repeat)]
    if runs[0] is None:
        return None
    return dataclasses.replace(
        runs[0],
        seconds=min(r.seconds for r in runs),
        cpu_seconds=min(r.cpu_seconds for r in runs),
        runs_seconds=tuple(r.seconds for r in runs),
    )


class CentreCosine(Objective):
    """lucent's ``direction_neuron``: cos(h, v) at the centre position, per image."""

    def __init__(self, layer: str, vectors: Tensor) -> None:
        self.layer, self.vectors = layer, vectors

    def __call__(self, acts: dict[str, Tensor]) -> Tensor:
        t = acts[self.layer].float()
        h = t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        return torch.nn.functional.cosine_similarity(h, self.vectors.to(h.device), dim=1)


def engine_row(name: str, model: LoadedModel, objective: Objective, v: Tensor, steps: int, size: int) -> Row:
    t, c = time.perf_counter(), time.process_time()
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        result = render(
            forward, objective, FourierImage(len(v), (size, size)), steps=steps, device=model.device, seed=0
        )
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        return Row(name, len(v), seconds, cpu, centre_cossim(forward, model.layer, result.images, v, model.device))


def lucent_row(model: LoadedModel, v: Tensor, steps: int, size: int) -> Row | None:
    try:
        from lucent.optvis import objectives, param
        from lucent.optvis import render as lucent_render
    except ImportError as exc:
        log.warning(
            "lucent row skipped: torch-lucent is not installed (%s); "
            "pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1",
            exc,
        )
        return None
    # lucent's hooks are never removed: give it its own copy of the (plain, contiguous) model.
    net = copy.deepcopy(build_classifier(model.name, model.weights)[0]).eval()
    layer = model.layer.replace(".", "_")
    images = []
    t, c = time.perf_counter(), time.process_time()
    for k in range(len(v)):
        torch.manual_seed(k)
        out = lucent_render.render_vis(
            net,
            objectives.direction_neuron(layer, v[k]),
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
            fixed_image_size=size,
        )
        images.append(out[-1][0])
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    pixels = (np.clip(np.stack(images), 0, 1) * 255).round().astype(np.uint8)
    with layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        return Row(
            "lucent (direction_neuron, 1 at a time)",
            len(v),
            seconds,
            cpu,
            centre_cossim(forward, model.layer, pixels, v, model.device),
        )


SMOKE = {"icons": 2, "steps": 2, "size": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--store",
        type=Path,
        default=REPO / "data" / "store.zarr",
        help="store with a grid (or at least activations); its model and layer are used",
    )
    parser.add_argument(
        "--level",
        type=int,
        default=None,
        help="grid level whose most populated cells are rendered (default: the coarsest)",
    )
    parser.add_argument("--icons", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-lucent", action="store_true", help="leave the lucent row out")
    parser.add_argument("--repeat", type=int, default=1, help="measure every row this many times; keep the fastest")
    parser.add_argument("--smoke", action="store_true", help=f"tiny run that exercises every row: {SMOKE}")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "render.json")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("stages").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    model = load_store_model(args.store, torch.device("cpu"))
    directions, s, where = real_directions(args.store, args.icons, seed=2, level_n=args.level)
    v = torch.as_tensor(directions, dtype=torch.float32)
    w = torch.as_tensor(s).float()
    measures = [
        *([] if args.no_lucent else [lambda: lucent_row(model, v, args.steps, args.size)]),
        lambda: engine_row(
            "engine, cos-sim objective (batched)", model, CentreCosine(model.layer, v), v, args.steps, args.size
        ),
        *(
            lambda cosine=cosine: engine_row(
                f"engine, atlas objective ({cosine} cosine)",
                model,
                AtlasDirection(model.layer, v, whitening=w, cos_power=4.0, cosine=cosine),
                v,
                args.steps,
                args.size,
            )
            for cosine in ("raw", "lucid")
        ),
    ]
    rows = [r for r in (best_of(args.repeat, m) for m in measures) if r is not None]
    base = rows[0] if rows[0].name.startswith("lucent") else None
    print(
        f"\n{model.name} {model.layer}: {len(v)} icons, {args.size} px, {args.steps} steps, {args.threads} thread(s), "
        f"directions: {where}"
    )
    print(f"{'':46s} {'icons/s':>8s} {'x lucent':>9s} {'/CPU s':>8s} {'x lucent':>9s} {'mean cos':>9s} {'median':>7s}")
    for r in rows:
        ratio = f"{(r.icons / r.seconds) / (base.icons / base.seconds):8.1f}x" if base else "      n/a"
        cpu_ratio = f"{base.cpu_seconds / r.cpu_seconds:8.1f}x" if base else "      n/a"
        print(
            f"{r.name:46s} {r.icons / r.seconds:8.3f} {ratio} {r.icons / r.cpu_seconds:8.3f} {cpu_ratio} "
            f"{r.cossim.mean():9.3f} {np.median(r.cossim):7.3f}"
        )
    out = write_json(
        args.out,
        {
            "store": display_path(args.store),
            "model": model_record(model),
            "smoke": args.smoke,
            "icons": len(v),
            "size": args.size,
            "steps": args.steps,
            "threads": args.threads,
            "repeat": args.repeat,
            "directions": where,
            **machine_record(),
            "rows": [r.as_dict() for r in rows],
            "lucent": "measured" if base else "skipped (--no-lucent or torch-lucent not installed)",
            "speedup_vs_lucent": {r.name: round((r.icons / r.seconds) / (base.icons / base.seconds), 2) for r in rows}
            if base
            else None,
            "cpu_speedup_vs_lucent": {r.name: round(base.cpu_seconds / r.cpu_seconds, 2) for r in rows}
            if base
            else None,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
