"""Benchmark the render engine against torch-lucent on the same directions, model and CPU.

    python bench/render.py [--icons 32] [--steps 128] [--size 80] [--threads 1]

Rows of the table (same MobileNetV2 IMAGENET1K_V1, layer ``features.13.conv.0``, same real cell
directions, same icon size and steps, one process, one intra-op thread each):

- ``lucent``: ``lucent.optvis.render.render_vis`` with ``objectives.direction_neuron`` (cos-sim of
  the centre activation with the direction), one icon at a time, its standard transforms,
  ``fixed_image_size`` = the icon size (no upsampling to 224).
- ``engine, cos-sim objective``: this project's batched engine (all icons in one batch, BatchNorm
  folded, as the render stage runs it) maximising lucent's objective (cos-sim at the centre):
  the like-for-like speed comparison at an identical objective.
- ``engine, atlas objective (raw cosine)``: the render stage's default, whitened ``dot`` times the
  true cosine with the raw direction to the 4th (``render.cosine: raw``).
- ``engine, atlas objective (lucid cosine)``: the lucid notebook's ``dot * (dot/|h|)^4``
  (``render.cosine: lucid``), REFERENCE.md §5 verbatim.

"cos-sim" is measured the same way for every row: the centre activation of the final uint8 icon
(untransformed, at icon size) against the raw direction. Prints a table and writes
``bench/results/render.json``. Needs ``pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1``
for the lucent row (skipped with a message otherwise).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gallery import real_directions  # noqa: E402
from stages.config import ModelConfig  # noqa: E402
from stages.model.registry import LoadedModel, build_classifier, load_model  # noqa: E402
from stages.model.weights import install_default_weights  # noqa: E402
from stages.featurevis import AtlasDirection, FourierImage, Objective, layer_forward, render  # noqa: E402
from stages.featurevis.fold_bn import fold_batchnorm  # noqa: E402
from stages.render.stage import centre_cossim  # noqa: E402

log = logging.getLogger("bench.render")


@dataclass(frozen=True)
class Row:
    name: str
    icons: int
    seconds: float
    cossim: np.ndarray

    def as_dict(self) -> dict[str, float | str | int]:
        return {"name": self.name, "icons": self.icons, "seconds": round(self.seconds, 2),
                "icons_per_s": round(self.icons / self.seconds, 4), "mean_cossim": round(float(self.cossim.mean()), 4),
                "median_cossim": round(float(np.median(self.cossim)), 4)}


class CentreCosine(Objective):
    """lucent's ``direction_neuron``: cos(h, v) at the centre position, per image."""

    def __init__(self, layer: str, vectors: Tensor) -> None:
        self.layer, self.vectors = layer, vectors

    def __call__(self, acts: dict[str, Tensor]) -> Tensor:
        t = acts[self.layer].float()
        h = t[:, :, t.shape[2] // 2, t.shape[3] // 2]
        return torch.nn.functional.cosine_similarity(h, self.vectors.to(h.device), dim=1)


def engine_row(name: str, model: LoadedModel, objective: Objective, v: Tensor, steps: int, size: int) -> Row:
    t = time.perf_counter()
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        result = render(forward, objective, FourierImage(len(v), (size, size)), steps=steps, device=model.device, seed=0)
        seconds = time.perf_counter() - t
        return Row(name, len(v), seconds, centre_cossim(forward, model.layer, result.images, v, model.device))


def lucent_row(model: LoadedModel, v: Tensor, steps: int, size: int) -> Row | None:
    try:
        from lucent.optvis import objectives, param
        from lucent.optvis import render as lucent_render
    except ImportError as exc:
        log.warning("lucent row skipped: torch-lucent is not installed (%s); "
                    "pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1", exc)
        return None
    # lucent's hooks are never removed: give it its own copy of the (plain, contiguous) model.
    net = copy.deepcopy(build_classifier(model.name, "IMAGENET1K_V1")[0]).eval()
    layer = model.layer.replace(".", "_")
    images = []
    t = time.perf_counter()
    for k in range(len(v)):
        torch.manual_seed(k)
        out = lucent_render.render_vis(
            net, objectives.direction_neuron(layer, v[k]), param_f=lambda: param.image(size),
            thresholds=(steps,), show_image=False, progress=False, fixed_image_size=size)
        images.append(out[-1][0])
    seconds = time.perf_counter() - t
    pixels = (np.clip(np.stack(images), 0, 1) * 255).round().astype(np.uint8)
    with layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        return Row("lucent (direction_neuron, 1 at a time)", len(v), seconds,
                   centre_cossim(forward, model.layer, pixels, v, model.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "data" / "store.zarr")
    parser.add_argument("--icons", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("stages").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    install_default_weights()
    model = load_model(ModelConfig(), torch.device("cpu"))
    directions, s, where = real_directions(args.store, args.icons, seed=2)
    v = torch.as_tensor(directions, dtype=torch.float32)
    rows = [r for r in (
        lucent_row(model, v, args.steps, args.size),
        engine_row("engine, cos-sim objective (batched)", model, CentreCosine(model.layer, v), v, args.steps, args.size),
        *(engine_row(f"engine, atlas objective ({cosine} cosine)", model,
                     AtlasDirection(model.layer, v, whitening=torch.as_tensor(s).float(), cos_power=4.0, cosine=cosine),
                     v, args.steps, args.size) for cosine in ("raw", "lucid")),
    ) if r is not None]
    base = rows[0] if rows[0].name.startswith("lucent") else None
    print(f"\n{args.icons} icons, {args.size} px, {args.steps} steps, {args.threads} thread(s), directions: {where}")
    print(f"{'':46s} {'icons/s':>8s} {'x lucent':>9s} {'mean cos':>9s} {'median':>7s}")
    for r in rows:
        ratio = f"{(r.icons / r.seconds) / (base.icons / base.seconds):8.1f}x" if base else "      n/a"
        print(f"{r.name:46s} {r.icons / r.seconds:8.3f} {ratio} {r.cossim.mean():9.3f} {np.median(r.cossim):7.3f}")
    out = REPO / "bench" / "results" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "icons": args.icons, "size": args.size, "steps": args.steps, "threads": args.threads, "directions": where,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "rows": [r.as_dict() for r in rows],
        "speedup_vs_lucent": {r.name: round((r.icons / r.seconds) / (base.icons / base.seconds), 2) for r in rows}
        if base else None}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
