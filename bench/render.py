"""Benchmark the render engine: its floor, its switches, its previous version and torch-lucent, in one run.

    python bench/render.py [--store data/store.zarr] [--level 20] [--icons 32] [--steps 128] [--size 80]
                           [--threads 1] [--repeat 2] [--lucent-icons 4] [--baseline REV] [--no-compile]
    python bench/render.py --smoke --store STORE --out /tmp/render.json     # seconds; what CI runs

The model, weights and layer are the store's own (``attrs["model"]``, what ``collect`` recorded),
so the directions and the network always agree. What it measures (docs/render.md, "How close to
the floor"), all in CPU-seconds of this process (with one thread, the time of an otherwise idle
core: on a machine shared with other jobs the steadier figure), interleaved over ``--repeat`` rounds:

- **the floor (a)**: the network cut at the layer, bare forward + input-gradient backward per
  image-step, with every switch on and off (hooks instead of the cut, channels_last, CPU bfloat16
  autocast, torch.compile with its first-call time; inductor's disk cache is the project's);
- **(b)**: a whole render's CPU time per image-step, and (a)/(b);
- **outside (a)**: ``torch.profiler`` self time per op in plain render steps minus in floor passes;
- what ``render.tune: true`` would choose here (threads x batch, every candidate's rate);
- whole renders of the same real cell directions (same icon size and steps): ``lucent``
  (``render_vis`` with ``direction_neuron``, one icon at a time on its own copy of the model, its
  standard transforms, ``fixed_image_size`` = the icon size; ``--lucent-icons`` of the directions);
  the engine with lucent's objective (cos-sim at the centre, batched); the engine with the atlas
  objective (``render.cosine: raw``) as of ``--baseline`` (the engine before the floor work, its
  ``stages/featurevis`` imported from git as its own package), with today's defaults, and with
  each switch.

"cos-sim" is measured the same way for every row: the centre activation of the final uint8 icon
(untransformed, at icon size) against the raw direction. A row's rate is its best run (the JSON
keeps every run: min and median). Prints tables and writes ``--out`` (default
``bench/results/render.json``). Needs ``pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1``
and ``decorator`` for the lucent row (skipped with a message otherwise).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from stages.featurevis.speed import Speed, fast_layer_forward  # noqa: E402
from stages.model.registry import LoadedModel, build_classifier  # noqa: E402
from stages.render import compile_cache, tune  # noqa: E402
from stages.render.stage import centre_cossim  # noqa: E402

# The engine before the floor work (issue 22): the "before" row runs this revision's stages/featurevis.
BASELINE_REV = "eb1d7ad"

log = logging.getLogger("bench.render")


@dataclass(frozen=True)
class Row:
    name: str
    icons: int
    seconds: float  # wall
    cpu_seconds: float  # this process's CPU time over the same span: what other jobs on the machine do not inflate
    cossim: np.ndarray
    runs_seconds: tuple[float, ...] = ()  # wall time of every repeat (``--repeat``); seconds is their minimum
    runs_cpu_seconds: tuple[float, ...] = ()

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
            "runs_cpu_seconds": [round(t, 2) for t in self.runs_cpu_seconds or (self.cpu_seconds,)],
            "icons_per_cpu_s_median": round(
                self.icons / float(np.median(self.runs_cpu_seconds or (self.cpu_seconds,))), 4
            ),
        }


class CentreCosine(Objective):
    """lucent's ``direction_neuron``: cos(h, v) at the centre position, per image."""

    def __init__(self, layer: str, vectors: Tensor) -> None:
        self.layer, self.vectors = layer, vectors

    def __call__(self, acts: dict[str, Tensor]) -> Tensor:
        t = acts[self.layer].float()
        h = t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        return torch.nn.functional.cosine_similarity(h, self.vectors.to(h.device), dim=1)


@dataclass(frozen=True)
class Engine:
    """One configuration of the engine: which code (this tree's or ``--baseline``'s) and which switches."""

    name: str
    speed: Speed = Speed()
    cpu_bf16: bool = False
    baseline: bool = False  # the engine of the ``--baseline`` revision (its own modules, its plain hooked forward)


def engine_row(
    engine: Engine, model: LoadedModel, objective: Callable[[Any], Objective], v: Tensor, steps: int, size: int
) -> Row | None:
    """A whole render of ``v``'s icons with ``engine``, timed from the model as loaded (BatchNorm folding included);
    ``None`` (the row skipped) when the baseline revision cannot be read (no git, a shallow clone)."""
    try:
        fv = baseline_engine() if engine.baseline else None
    except (OSError, subprocess.CalledProcessError) as exc:
        log.warning("baseline row skipped: revision %s of stages/featurevis not readable (%s)", _BASELINE["rev"], exc)
        return None
    t, c = time.perf_counter(), time.process_time()
    if fv is not None:
        module = fv.fold_batchnorm(model.module, model.layer, model.normalize)
        with fv.layer_forward(module, model.layer, normalize=model.normalize) as forward:
            result = fv.render(
                forward, objective(fv), fv.FourierImage(len(v), (size, size)), steps=steps, device=model.device, seed=0
            )
            seconds, cpu = time.perf_counter() - t, time.process_time() - c
    else:
        module = fold_batchnorm(model.module, model.layer, model.normalize)
        with fast_layer_forward(module, model.layer, model.normalize, engine.speed) as (forward, fast):
            result = render(
                forward,
                objective(None),
                FourierImage(len(v), (size, size)),
                steps=steps,
                device=model.device,
                seed=0,
                fast_forward=fast,
                cpu_bf16=engine.cpu_bf16,
            )
            seconds, cpu = time.perf_counter() - t, time.process_time() - c
    with layer_forward(model.module, model.layer, normalize=model.normalize) as plain:
        return Row(engine.name, len(v), seconds, cpu, centre_cossim(plain, model.layer, result.images, v, model.device))


_BASELINE: dict[str, Any] = {}


def baseline_engine() -> Any:
    """The featurevis engine of git revision ``_BASELINE["rev"]``, imported as its own package.

    So the old and the new engine are measured in the same process, on the same load: the
    revision's ``stages/featurevis`` is written to a temporary folder as package ``featurevis_base``
    (its absolute imports of itself renamed), and nothing else of the old tree is used.
    """
    if "module" in _BASELINE:
        return _BASELINE["module"]
    rev = _BASELINE["rev"]
    folder = Path(tempfile.mkdtemp(prefix="render-baseline-")) / "featurevis_base"
    folder.mkdir()
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", f"{rev}:stages/featurevis/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        if name.endswith(".py"):
            text = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{rev}:stages/featurevis/{name}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (folder / name).write_text(text.replace("stages.featurevis", "featurevis_base"))
    sys.path.insert(0, str(folder.parent))
    module: Any = importlib.import_module("featurevis_base")
    module.fold_batchnorm = importlib.import_module("featurevis_base.fold_bn").fold_batchnorm
    _BASELINE["module"] = module
    return module


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


@dataclass(frozen=True)
class Floor:
    """CPU-seconds per image-step of the floor (a) and of whole render steps (b), with one switch setting."""

    name: str
    a: list[float]  # bare forward + input-gradient backward, per image-step, each repeat
    first_call_s: float  # the first pass's wall time (a compile's cost; a cache hit's load)


def floor_a(forward: Any, layer: str, batch: int, size: int, passes: int, cpu_bf16: bool = False) -> Floor:
    """(a): the truncated network's forward + backward (input gradient only) on a ``[batch, 3, size, size]`` input."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def one() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16):
            y = forward(x)[layer]
        y.float().sum().backward(inputs=[x])

    t = time.perf_counter()
    one()
    first = time.perf_counter() - t
    one()
    times = []
    for _ in range(passes):
        c = time.process_time()
        one()
        times.append((time.process_time() - c) / batch)
    return Floor("", times, first)


def step_b(model: LoadedModel, objective: Objective, v: Tensor, size: int, steps: int, speed: Speed) -> float:
    """(b): CPU-seconds per image-step of a whole render of ``steps`` steps (redirected first steps,
    the objective's two evaluations and the uint8 conversion included: what icons/s pays)."""
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with fast_layer_forward(module, model.layer, model.normalize, speed) as (forward, fast):
        c = time.process_time()
        render(forward, objective, FourierImage(len(v), (size, size)), steps=steps, device="cpu", fast_forward=fast)
        return (time.process_time() - c) / (steps * len(v))


def outside_profile(model: LoadedModel, objective: Objective, v: Tensor, size: int, steps: int) -> list[dict]:
    """Per-op CPU ms per step: ``steps`` plain render steps against ``steps`` floor passes; the rows
    with the most time outside the floor (the op's time in (b) minus its time in (a))."""
    from torch.profiler import ProfilerActivity, profile

    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with fast_layer_forward(module, model.layer, model.normalize, Speed()) as (forward, fast):
        x = torch.rand(len(v), 3, size, size, requires_grad=True)
        forward(x)[model.layer].sum().backward(inputs=[x])
        with profile(activities=[ProfilerActivity.CPU]) as prof_a:
            for _ in range(steps):
                forward(x)[model.layer].sum().backward(inputs=[x])
        param = FourierImage(len(v), (size, size))
        with profile(activities=[ProfilerActivity.CPU]) as prof_b:
            render(forward, objective, param, steps=steps, device="cpu", relu_redirect_steps=0, fast_forward=fast)
    a = {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof_a.key_averages()}
    b = {e.key: (e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in prof_b.key_averages()}
    rows = [
        {"op": k, "b_ms_per_step": round(ms, 2), "a_ms_per_step": round(a.get(k, 0.0), 2), "calls_per_step": n}
        for k, (ms, n) in b.items()
    ]
    for r in rows:
        r["outside_ms_per_step"] = round(r["b_ms_per_step"] - r["a_ms_per_step"], 2)
    rows.sort(key=lambda r: -r["outside_ms_per_step"])
    return rows[:14]


def stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 6), "median": round(float(np.median(values)), 6), "n": len(values)}


SMOKE = {"icons": 2, "steps": 2, "size": 32, "lucent_icons": 2, "floor_passes": 1, "profile_steps": 1}


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
    parser.add_argument(
        "--lucent-icons", type=int, default=4, help="icons lucent renders (one at a time: its icons/s needs few)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure every row this many times, interleaved")
    parser.add_argument("--floor-passes", type=int, default=6, help="timed passes of the floor (a) per switch")
    parser.add_argument("--profile-steps", type=int, default=4, help="render steps profiled for the outside-(a) table")
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision whose engine is the 'before' row")
    parser.add_argument("--no-compile", action="store_true", help="leave the torch.compile switch out")
    parser.add_argument("--smoke", action="store_true", help=f"tiny run that exercises every row: {SMOKE}")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "render.json")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE, no_compile=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("stages").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    _BASELINE["rev"] = args.baseline
    model = load_store_model(args.store, torch.device("cpu"))
    directions, s, where = real_directions(args.store, args.icons, seed=2, level_n=args.level)
    v = torch.as_tensor(directions, dtype=torch.float32)
    w = torch.as_tensor(s).float()

    def atlas(fv: Any) -> Objective:
        kind = fv.AtlasDirection if fv is not None else AtlasDirection
        return kind(model.layer, v, whitening=w, cos_power=4.0, cosine="raw")

    floor = floors(args, model, v, atlas(None))
    engines = [
        Engine("engine, atlas objective, before (baseline)", baseline=True),
        Engine("engine, atlas objective (default)"),
        Engine("engine, atlas objective + channels_last", Speed(channels_last=True)),
        Engine("engine, atlas objective + cpu_bf16", cpu_bf16=True),
    ]
    measures: list[Callable[[], Row | None]] = [
        *([] if args.no_lucent else [lambda: lucent_row(model, v[: args.lucent_icons], args.steps, args.size)]),
        lambda: engine_row(
            Engine("engine, cos-sim objective (batched)"),
            model,
            lambda fv: CentreCosine(model.layer, v),
            v,
            args.steps,
            args.size,
        ),
        *(lambda e=e: engine_row(e, model, atlas, v, args.steps, args.size) for e in engines),
    ]
    rows = interleaved(args.repeat, measures)
    report(args, model, v, where, rows, floor)


def floors(args: argparse.Namespace, model: LoadedModel, v: Tensor, objective: Objective) -> dict[str, Any]:
    """(a) with every switch on and off, (b) of the default engine, and the outside-(a) profile."""
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    settings = [
        ("hooks (no cut)", Speed(truncate=False), False),
        ("default (fx cut)", Speed(), False),
        ("channels_last", Speed(channels_last=True), False),
        ("cpu_bf16", Speed(), True),
        *([] if args.no_compile else [("compile", Speed(compile=True), False)]),
    ]
    if not args.no_compile:
        cache = compile_cache.configure()
        log.info("inductor cache: %s", cache)
    a: dict[str, Floor] = {}
    for _ in range(max(1, args.repeat)):  # interleaved: a load change hits every setting alike
        for name, speed, bf16 in settings:
            with fast_layer_forward(module, model.layer, model.normalize, speed) as (_, fast):
                f = floor_a(fast, model.layer, len(v), args.size, args.floor_passes, bf16)
            a[name] = Floor(
                name, a[name].a + f.a if name in a else f.a, a[name].first_call_s if name in a else f.first_call_s
            )
    b = [step_b(model, objective, v, args.size, args.steps, Speed()) for _ in range(max(1, args.repeat))]
    a_default = float(np.median(a["default (fx cut)"].a))
    with fast_layer_forward(module, model.layer, model.normalize, Speed()) as (forward, _):
        cpu = torch.device("cpu")
        scored = [
            (tune.measure(forward, model.layer, args.size, cpu, t, bb), t, bb) for t, bb in tune.candidates(cpu, len(v))
        ]
    rate, threads, batch = max(scored)
    return {
        "a_per_image_step_cpu_s": {k: stats(f.a) for k, f in a.items()},
        "first_call_wall_s": {k: round(f.first_call_s, 2) for k, f in a.items()},
        "b_per_image_step_cpu_s": stats(b),
        "a_over_b": round(a_default / float(np.median(b)), 3),
        "outside_a_profile": outside_profile(model, objective, v, args.size, args.profile_steps),
        "tune_auto_choice": {"threads": threads, "batch": batch, "images_per_s": round(rate, 3)},
        "tune_candidates": [{"threads": t, "batch": bb, "images_per_s": round(r, 3)} for r, t, bb in scored],
    }


def interleaved(repeat: int, measures: list[Callable[[], Row | None]]) -> list[Row]:
    """Every measure ``repeat`` times, round-robin (so a change of the machine's load hits every row alike);
    a row's ``seconds`` is its fastest run, ``runs_seconds`` every run (min/median in the JSON)."""
    runs: list[list[Row | None]] = [[] for _ in measures]
    for _ in range(repeat):
        for k, measure in enumerate(measures):
            runs[k].append(measure())
    rows = []
    for rs in runs:
        if rs[0] is None:
            continue
        got = [r for r in rs if r is not None]
        rows.append(
            dataclasses.replace(
                got[0],
                seconds=min(r.seconds for r in got),
                cpu_seconds=min(r.cpu_seconds for r in got),
                runs_seconds=tuple(r.seconds for r in got),
                runs_cpu_seconds=tuple(r.cpu_seconds for r in got),
            )
        )
    return rows


def report(
    args: argparse.Namespace, model: LoadedModel, v: Tensor, where: str, rows: list[Row], floor: dict[str, Any]
) -> None:
    base = rows[0] if rows and rows[0].name.startswith("lucent") else None
    before = next((r for r in rows if r.name.endswith("(baseline)")), None)
    print(
        f"\n{model.name} {model.layer}: {len(v)} icons, {args.size} px, {args.steps} steps, {args.threads} thread(s), "
        f"directions: {where}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"\nfloor, CPU ms per image-step (min / median of {floor['b_per_image_step_cpu_s']['n']} runs):")
    for name, st in floor["a_per_image_step_cpu_s"].items():
        print(
            f"  (a) {name:24s} {st['min'] * 1e3:7.2f} {st['median'] * 1e3:7.2f}   first call {floor['first_call_wall_s'][name]:.1f} s"
        )
    b = floor["b_per_image_step_cpu_s"]
    print(
        f"  (b) whole render step      {b['min'] * 1e3:7.2f} {b['median'] * 1e3:7.2f}   (a)/(b) = {floor['a_over_b']:.3f}"
    )
    print("\noutside (a), CPU ms per step of the batch (plain steps; op self time in (b) minus in (a)):")
    for r in floor["outside_a_profile"][:10]:
        print(
            f"  {r['op'][:48]:48s} {r['outside_ms_per_step']:8.2f}  (b {r['b_ms_per_step']:.2f}, a {r['a_ms_per_step']:.2f})"
        )
    print(f"\nrender.tune: true would pick: {floor['tune_auto_choice']}")
    print(
        f"\n{'':46s} {'icons/s':>8s} {'x lucent':>9s} {'/CPU s':>8s} {'x lucent':>9s} {'x before':>9s} "
        f"{'mean cos':>9s} {'median':>7s}"
    )
    for r in rows:
        ratio = f"{(r.icons / r.seconds) / (base.icons / base.seconds):8.1f}x" if base else "      n/a"
        cpu_ratio = f"{(r.icons / r.cpu_seconds) / (base.icons / base.cpu_seconds):8.1f}x" if base else "      n/a"
        vs = f"{(r.icons / r.cpu_seconds) / (before.icons / before.cpu_seconds):8.2f}x" if before else "      n/a"
        print(
            f"{r.name:46s} {r.icons / r.seconds:8.3f} {ratio} {r.icons / r.cpu_seconds:8.3f} {cpu_ratio} {vs} "
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
            "baseline": args.baseline,
            **machine_record(),
            "cpu_flags_bf16": cpu_has_bf16(),
            "floor": floor,
            "rows": [r.as_dict() for r in rows],
            "lucent": f"measured on {base.icons} icons"
            if base
            else "skipped (--no-lucent or torch-lucent not installed)",
            "speedup_vs_lucent": {r.name: round((r.icons / r.seconds) / (base.icons / base.seconds), 2) for r in rows}
            if base
            else None,
            "cpu_speedup_vs_lucent": {
                r.name: round((r.icons / r.cpu_seconds) / (base.icons / base.cpu_seconds), 2) for r in rows
            }
            if base
            else None,
            "cpu_speedup_vs_before": {
                r.name: round((r.icons / r.cpu_seconds) / (before.icons / before.cpu_seconds), 3) for r in rows
            }
            if before
            else None,
        },
    )
    print(f"wrote {out}")


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (avx512_bf16 or AMX), from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    main()
