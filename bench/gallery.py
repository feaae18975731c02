"""Render a gallery of channels and cell icons, and the steps trade-off figure, for the docs.

    python bench/gallery.py [--store data/store.zarr] [--steps 256] [--size 80]
        # docs/gallery.png + bench/results/gallery.json
    python bench/gallery.py --steps-figure
        # docs/render_steps.png + bench/results/render_steps.json
    python bench/gallery.py --smoke [--steps-figure] --store STORE --out X.json --png X.png  # seconds (CI)

The model, weights and layer are the store's own (``attrs["model"]``). Directions: if the store
has a grid, the most populated cells of its coarsest level and the grid's whitening matrix;
otherwise "pseudo-cells" made from the store's real activations (each the mean of a sample and
its 24 nearest neighbours by cosine, a stand-in for a layout cell) with S, the whitening matrix,
computed from all the store's rows as the grid stage does (the inverse of their uncentered second
moment, ridge 1e-3 relative to its mean eigenvalue; docs/method.md §5).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from benchlib import display_path, load_store_model, machine_record, model_record, write_json  # noqa: E402

from stages.featurevis import AtlasDirection, Channel, FourierImage, layer_forward, render  # noqa: E402
from stages.featurevis.fold_bn import fold_batchnorm  # noqa: E402
from stages.grid.whitening import whitening_matrix  # noqa: E402
from stages.model.registry import LoadedModel  # noqa: E402
from stages.render.stage import centre_cossim  # noqa: E402
from store import derived  # noqa: E402
from store.atlas_store import AtlasStore  # noqa: E402

log = logging.getLogger("gallery")


def real_directions(
    store_path: Path, count: int, seed: int = 0, level_n: int | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """``count`` real cell-like directions ``[count, C]``, the whitening S ``[C, C]``, and where from:
    the most populated cells of grid level ``level_n`` (default: the coarsest)."""
    store = AtlasStore.open(store_path, mode="r")
    try:
        levels = derived.grid_levels(store)
    except Exception:
        levels = []
    if levels:
        n = levels[0] if level_n is None else level_n
        level = derived.read_level(store, n, with_attribution=False)
        pick = np.argsort(-level.count, kind="stable")[:count]
        return level.direction[pick], derived.read_whitening(store).matrix, f"grid level {n} cells"
    acts = np.asarray(store.activations()[:].compute(), dtype=np.float32)[store.valid_mask()]
    s = whitening_matrix(acts.astype(np.float64).T @ acts / len(acts), 1e-3)
    rng = np.random.default_rng(seed)
    unit = acts / (np.linalg.norm(acts, axis=1, keepdims=True) + 1e-8)
    centres = rng.choice(len(acts), count, replace=False)
    near = np.argsort(-(unit[centres] @ unit.T), axis=1)[:, :25]
    return acts[near].mean(axis=1), s, "pseudo-cells (mean of 25 nearest real activations)"


CHANNELS = [3, 17, 42, 99, 150, 233, 321, 500]  # the docs figure's channels (both demo layers have > 500)


def pick_channels(n_channels: int, k: int) -> list[int]:
    """The docs figure's channels where the layer has them, else ``k`` spread evenly over the layer."""
    fit = [c for c in CHANNELS if c < n_channels][:k]
    return fit if len(fit) == k else [int(c) for c in np.linspace(0, n_channels - 1, k).round()]


def render_cells(
    model: LoadedModel,
    directions: np.ndarray,
    s: np.ndarray | None,
    steps: int,
    size: int,
    seed: int = 0,
    cosine: str = "raw",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Icons, raw-direction cos-sims and seconds for ``directions`` (one batch; the render defaults)."""
    v = torch.as_tensor(directions, dtype=torch.float32)
    module = fold_batchnorm(model.module, model.layer, model.normalize)  # as the render stage does
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        result = render(
            forward,
            AtlasDirection(
                model.layer,
                v,
                whitening=None if s is None else torch.as_tensor(s).float(),
                cos_power=4.0,
                cosine=cosine,
            ),
            FourierImage(len(v), (size, size)),
            steps=steps,
            device=model.device,
            seed=seed,
        )
        cos = centre_cossim(forward, model.layer, result.images, v, model.device)
    return result.images, cos, result.seconds


def render_channels(model: LoadedModel, channels: list[int], steps: int, size: int) -> np.ndarray:
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        return render(
            forward,
            Channel(model.layer, channels),
            FourierImage(len(channels), (size, size)),
            steps=steps,
            device=model.device,
            seed=0,
        ).images


def sheet(
    rows: list[tuple[str, np.ndarray]], captions: list[list[str]] | None = None, label_w: int = 120, gap: int = 4
) -> Image.Image:
    """Rows of uint8 icons ``[k, S, S, 3]`` with a label on the left, optional caption under each."""
    size = rows[0][1].shape[1]
    cols = max(len(icons) for _, icons in rows)
    cap_h = 12 if captions else 0
    w = label_w + cols * (size + gap)
    h = len(rows) * (size + gap + cap_h)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, icons) in enumerate(rows):
        y = r * (size + gap + cap_h)
        draw.text((4, y + size // 2 - 6), label, fill="black")
        for c, icon in enumerate(icons):
            x = label_w + c * (size + gap)
            canvas.paste(Image.fromarray(icon), (x, y))
            if captions:
                draw.text((x + 2, y + size), captions[r][c], fill="black")
    return canvas


def save_small(image: Image.Image, out: Path) -> None:
    """PNG with a 256-colour palette: the docs images stay well under 300 KB."""
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)


def gallery(args: argparse.Namespace, model: LoadedModel) -> dict:
    directions, s, where = real_directions(args.store, args.cells, level_n=args.level)
    channels = pick_channels(model.layer_shape[0], args.channels)
    ch_icons = render_channels(model, channels, args.steps, args.size)
    cell_icons, cos, seconds = render_cells(model, directions, s, args.steps, args.size)
    half = (len(cell_icons) + 1) // 2
    rows = [
        ("channels", ch_icons),
        (f"cells 1-{half}", cell_icons[:half]),
        (f"cells {half + 1}-{len(cell_icons)}", cell_icons[half:]),
    ]
    caps = [[f"ch {c}" for c in channels], [f"cos {c:.2f}" for c in cos[:half]], [f"cos {c:.2f}" for c in cos[half:]]]
    out = args.png or REPO / "docs" / "gallery.png"
    save_small(sheet([r for r in rows if len(r[1])], [c for c, r in zip(caps, rows) if len(r[1])]), out)
    log.info(
        "wrote %s (%d KB): %s, %d steps, %d px; mean cos %.3f",
        out,
        out.stat().st_size // 1024,
        where,
        args.steps,
        args.size,
        float(cos.mean()),
    )
    return {
        "directions": where,
        "png": str(out),
        "channels": channels,
        "cells": len(cell_icons),
        "cells_seconds": round(seconds, 2),
        "cells_icons_per_s": round(len(cell_icons) / seconds, 3),
        "mean_cossim": round(float(cos.mean()), 4),
        "steps": args.steps,
        "size": args.size,
    }


def steps_figure(args: argparse.Namespace, model: LoadedModel) -> dict:
    """The same cells at 64/128/256/512 steps (``--steps-list``), with seconds and cos-sim per setting."""
    directions, s, where = real_directions(args.store, args.cells_steps, seed=1, level_n=args.level)
    rows, caps, table = [], [], []
    for steps in args.steps_list:
        icons, cos, seconds = render_cells(model, directions, s, steps, args.size)
        rows.append((f"{steps} steps\n{len(icons) / seconds:.2f} icons/s", icons))
        caps.append([f"cos {c:.2f}" for c in cos])
        table.append(
            {
                "steps": steps,
                "icons": len(icons),
                "seconds": round(seconds, 2),
                "icons_per_s": round(len(icons) / seconds, 3),
                "mean_cossim": round(float(cos.mean()), 4),
            }
        )
        log.info("%s", table[-1])
    out = args.png or REPO / "docs" / "render_steps.png"
    save_small(sheet(rows, caps), out)
    log.info("wrote %s (%d KB)", out, out.stat().st_size // 1024)
    return {"directions": where, "png": str(out), "size": args.size, "rows": table}


SMOKE = {"steps": 2, "size": 32, "cells": 4, "channels": 2, "cells_steps": 2, "steps_list": [1, 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--store",
        type=Path,
        default=REPO / "data" / "store.zarr",
        help="store with a grid (or at least activations); its model and layer are used",
    )
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--level", type=int, default=None, help="grid level the cells come from (default: the coarsest)"
    )
    parser.add_argument("--cells", type=int, default=16, help="cells in the gallery")
    parser.add_argument("--channels", type=int, default=8, help="channels in the gallery")
    parser.add_argument("--cells-steps", type=int, default=8, help="cells in the steps figure")
    parser.add_argument(
        "--steps-list",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[64, 128, 256, 512],
        help="step counts of the steps figure",
    )
    parser.add_argument("--steps-figure", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=f"tiny run of the same path: {SMOKE}")
    parser.add_argument(
        "--png",
        type=Path,
        default=None,
        help="figure (default docs/gallery.png, or docs/render_steps.png with --steps-figure)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON (default bench/results/gallery.json, or render_steps.json with --steps-figure)",
    )
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("stages").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    model = load_store_model(args.store, torch.device("cpu"))
    t = time.perf_counter()
    result = (steps_figure if args.steps_figure else gallery)(args, model)
    out = args.out or REPO / "bench" / "results" / ("render_steps.json" if args.steps_figure else "gallery.json")
    write_json(
        out,
        {
            "store": display_path(args.store),
            "model": model_record(model),
            "smoke": args.smoke,
            "threads": torch.get_num_threads(),
            **machine_record(),
            **result,
        },
    )
    log.info("wrote %s; done in %.0f s", out, time.perf_counter() - t)


if __name__ == "__main__":
    main()
