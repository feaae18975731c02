"""Benchmark the collect stage against a naive baseline and the bare trunk, in one run.

    python bench/collect.py [--source DIR] [--inputs N] [--batch-size B]

Same images, same views and positions for every row of the table:
- ``naive``: what earlier tools do — decode one view, run the WHOLE model at batch size 1 with a
  forward hook on the layer, read (y, x). No attribution.
- ``bare trunk``: the trunk forward alone on pre-decoded tensors at batch size B (the ceiling:
  no decoding, no store, no head).
- ``collect (head off)``: this stage, activations only, decoding workers, writing the store.
- ``collect``: this stage as configured by default: + logits and the JVP attribution to all
  1000 classes.
Prints a table and writes ``bench/results/collect.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.config import load_config  # noqa: E402
from stages.images.decoding import decode_rgb  # noqa: E402
from stages.images.sources import open_image_source  # noqa: E402
from stages.model.registry import load_model  # noqa: E402
from stages.images.crops import render_view, view_box  # noqa: E402
from stages.collect import stage as collect  # noqa: E402
from stages.collect.blocks import interior_positions  # noqa: E402
from stages.collect.inputs import to_model_input  # noqa: E402


def _config(source: str, store: str, n_images: int, views: int, args: argparse.Namespace, head: bool):
    sets = [f"data.source={source}", f"data.store={store}", f"collect.views_per_image={views}",
            f"collect.batch_size={args.batch_size}", f"collect.num_workers={args.workers}",
            f"collect.head={str(head).lower()}", "collect.positions_per_image=1"]
    return load_config(REPO / "params.yaml", sets)


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
                box = view_box(img.width, img.height, image, view, views, tuple(config.collect.view_scale),
                               config.collect.seed)
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


def bench_trunk(config, model, n_inputs: int) -> float:
    batch = config.collect.batch_size
    x = model.normalize(torch.rand(batch, 3, config.model.image_size, config.model.image_size)).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        model.trunk(x)  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n_inputs:
            model.trunk(x)
            done += batch
    return done / (time.perf_counter() - t0)


def bench_collect(config) -> tuple[float, int]:
    """Steady-state inputs/s: model load and store creation are excluded, as for the others."""
    summary = collect.run(config, device=torch.device("cpu"))
    return summary.inputs_per_second, summary.stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO / "data/demo_photos"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--naive-inputs", type=int, default=128, help="the naive loop is slow: time a prefix")
    parser.add_argument("--out", default=str(REPO / "bench/results/collect.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        source = _subset_source(args.source, args.images, tmp)
        n_inputs = args.images * args.views
        cfg_head = _config(source, str(tmp / "a.zarr"), args.images, args.views, args, head=True)
        cfg_trunk = _config(source, str(tmp / "b.zarr"), args.images, args.views, args, head=False)
        model = load_model(cfg_head.model, torch.device("cpu"))
        _, h, w = model.layer_shape
        positions = interior_positions(range(n_inputs), 1, h, w, cfg_head.collect.border, 0)[:, 0]
        paths = [line for line in Path(source).read_text().splitlines() if line]
        naive_images = max(1, args.naive_inputs // args.views)
        rows = {}
        rows["naive (whole model, batch 1, hook)"] = bench_naive(cfg_head, model, paths[:naive_images], positions)
        rows[f"bare trunk forward (batch {args.batch_size})"] = bench_trunk(cfg_head, model, n_inputs)
        rows["collect, head off (activations only)"], _ = bench_collect(cfg_trunk)
        rows["collect (+ logits + JVP attribution)"], stored = bench_collect(cfg_head)
    naive = rows["naive (whole model, batch 1, hook)"]
    trunk = rows[f"bare trunk forward (batch {args.batch_size})"]
    print(f"\ncollect benchmark: {n_inputs} inputs ({args.images} real photos x {args.views} views), "
          f"MobileNetV2 {cfg_head.model.layer}, CPU x{os.cpu_count()}, torch {torch.__version__}")
    print(f"{'variant':42s} {'inputs/s':>9s} {'vs naive':>9s} {'vs trunk':>9s}")
    for name, rate in rows.items():
        print(f"{name:42s} {rate:9.1f} {rate / naive:8.2f}x {rate / trunk:8.0%}")
    result = {"inputs": n_inputs, "images": args.images, "views": args.views, "batch_size": args.batch_size,
              "workers": args.workers, "stored": stored, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "inputs_per_second": rows,
              "ratios": {name: {"vs_naive": rate / naive, "vs_trunk": rate / trunk} for name, rate in rows.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
