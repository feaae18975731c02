"""Render a gallery of channels and cell icons, and the steps trade-off figure, for the docs.

    python bench/gallery.py [--store data/store.zarr] [--steps 256] [--size 80]
    python bench/gallery.py --steps-figure          # docs/render_steps.png + bench/results/render_steps.json

Directions: if the store has a grid, the most populated cells of its coarsest level and the
grid's whitening matrix; otherwise "pseudo-cells" made from the store's real activations (each
the mean of a sample and its 24 nearest neighbours by cosine, a stand-in for a layout cell) with
S computed from all the store's rows (REFERENCE.md §5, ridge 1e-3).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.config import ModelConfig  # noqa: E402
from stages.model.registry import LoadedModel, load_model  # noqa: E402
from stages.model.weights import install_default_weights  # noqa: E402
from stages.featurevis import AtlasDirection, Channel, FourierImage, layer_forward, render  # noqa: E402
from stages.featurevis.fold_bn import fold_batchnorm  # noqa: E402
from stages.render.stage import centre_cossim  # noqa: E402
from stages.grid.whitening import whitening_matrix  # noqa: E402
from store import derived  # noqa: E402
from store.atlas_store import AtlasStore  # noqa: E402

log = logging.getLogger("gallery")


def real_directions(store_path: Path, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``count`` real cell-like directions ``[count, C]``, the whitening S ``[C, C]``, and where from."""
    store = AtlasStore.open(store_path, mode="r")
    try:
        levels = derived.grid_levels(store)
    except Exception:  # noqa: BLE001 - no grid yet: fall back to pseudo-cells
        levels = []
    if levels:
        level = derived.read_level(store, levels[0], with_attribution=False)
        pick = np.argsort(-level.count, kind="stable")[:count]
        return level.direction[pick], derived.read_whitening(store).matrix, f"grid level {levels[0]} cells"
    acts = np.asarray(store.activations()[:].compute(), dtype=np.float32)[store.valid_mask()]
    s = whitening_matrix(acts.astype(np.float64).T @ acts / len(acts), 1e-3)
    rng = np.random.default_rng(seed)
    unit = acts / (np.linalg.norm(acts, axis=1, keepdims=True) + 1e-8)
    centres = rng.choice(len(acts), count, replace=False)
    near = np.argsort(-(unit[centres] @ unit.T), axis=1)[:, :25]
    return acts[near].mean(axis=1), s, "pseudo-cells (mean of 25 nearest real activations)"


def _load(device: torch.device) -> LoadedModel:
    install_default_weights()
    return load_model(ModelConfig(), device)


def render_cells(model: LoadedModel, directions: np.ndarray, s: np.ndarray | None, steps: int, size: int,
                 seed: int = 0, cosine: str = "raw") -> tuple[np.ndarray, np.ndarray, float]:
    """Icons, raw-direction cos-sims and seconds for ``directions`` (one batch; the render defaults)."""
    v = torch.as_tensor(directions, dtype=torch.float32)
    module = fold_batchnorm(model.module, model.layer, model.normalize)  # as the render stage does
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        result = render(forward, AtlasDirection(model.layer, v, whitening=None if s is None else torch.as_tensor(s).float(),
                                                cos_power=4.0, cosine=cosine),
                        FourierImage(len(v), (size, size)), steps=steps, device=model.device, seed=seed)
        cos = centre_cossim(forward, model.layer, result.images, v, model.device)
    return result.images, cos, result.seconds


def render_channels(model: LoadedModel, channels: list[int], steps: int, size: int) -> np.ndarray:
    module = fold_batchnorm(model.module, model.layer, model.normalize)
    with layer_forward(module, model.layer, normalize=model.normalize) as forward:
        return render(forward, Channel(model.layer, channels), FourierImage(len(channels), (size, size)),
                      steps=steps, device=model.device, seed=0).images


def sheet(rows: list[tuple[str, np.ndarray]], captions: list[list[str]] | None = None, label_w: int = 120,
          gap: int = 4) -> Image.Image:
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


def gallery(args: argparse.Namespace, model: LoadedModel) -> None:
    directions, s, where = real_directions(args.store, 16)
    channels = [3, 17, 42, 99, 150, 233, 321, 500]
    ch_icons = render_channels(model, channels, args.steps, args.size)
    cell_icons, cos, _ = render_cells(model, directions, s, args.steps, args.size)
    rows = [("channels", ch_icons), ("cells 1-8", cell_icons[:8]), ("cells 9-16", cell_icons[8:16])]
    caps = [[f"ch {c}" for c in channels], [f"cos {c:.2f}" for c in cos[:8]], [f"cos {c:.2f}" for c in cos[8:16]]]
    out = REPO / "docs" / "gallery.png"
    save_small(sheet(rows, caps), out)
    log.info("wrote %s (%d KB): %s, %d steps, %d px; mean cos %.3f", out, out.stat().st_size // 1024, where,
             args.steps, args.size, float(cos.mean()))


def steps_figure(args: argparse.Namespace, model: LoadedModel) -> None:
    """The same 8 cells at 64/128/256/512 steps, with seconds and cos-sim per setting."""
    directions, s, where = real_directions(args.store, 8, seed=1)
    rows, caps, table = [], [], []
    for steps in (64, 128, 256, 512):
        icons, cos, seconds = render_cells(model, directions, s, steps, args.size)
        rows.append((f"{steps} steps\n{len(icons) / seconds:.2f} icons/s", icons))
        caps.append([f"cos {c:.2f}" for c in cos])
        table.append({"steps": steps, "icons": len(icons), "seconds": round(seconds, 2),
                      "icons_per_s": round(len(icons) / seconds, 3), "mean_cossim": round(float(cos.mean()), 4)})
        log.info("%s", table[-1])
    out = REPO / "docs" / "render_steps.png"
    save_small(sheet(rows, caps), out)
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "render_steps.json").write_text(json.dumps(
        {"directions": where, "size": args.size, "threads": torch.get_num_threads(), "rows": table}, indent=2))
    log.info("wrote %s (%d KB)", out, out.stat().st_size // 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "data" / "store.zarr")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-figure", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("stages").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    model = _load(torch.device("cpu"))
    t = time.perf_counter()
    (steps_figure if args.steps_figure else gallery)(args, model)
    log.info("done in %.0f s", time.perf_counter() - t)


if __name__ == "__main__":
    main()
