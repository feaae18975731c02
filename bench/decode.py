"""Does decoding keep up with the model? JPEG draft mode (``collect.jpeg_draft``) measured.

Synthetic JPEGs (smooth gradients plus noise, quality 90) at three sizes: ImageNet-typical
500x375, 1600x1200 and a 12-megapixel phone photo 4032x3024. For each size and for draft off / on:

* ``decode``: images/s of one process doing a worker's whole job (read, decode, EXIF, RGB, the
  views rendered to the model's input size), i.e. per decoding worker;
* ``model``: images/s of the bare trunk forward (batch 32, this process's threads) at the layer
  of ``params.yaml`` (or ``--layer``), the rate decoding has to match;
* ``collect``: a real ``collect.run`` over the photos with one decoding worker: inputs/s and the
  share of its processing time spent waiting for the next decoded image.

    python bench/decode.py --out bench/results/decode.json
    python bench/decode.py --smoke --out /tmp/decode.json
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_model_flags, load_config, machine_record, model_overrides, model_record, write_json

SIZES = [(500, 375), (1600, 1200), (4032, 3024)]


def _photo(size: tuple[int, int], seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1) * rng.uniform(0.5, 1.0, 3)
    pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _decode_rate(paths: list[Path], settings, repeats: int) -> float:
    from stages.collect.inputs import ViewDataset, work_items

    items = work_items({0: range(0, len(paths) * settings.views_per_image)}, settings.views_per_image)
    dataset = ViewDataset(items, [str(p) for p in paths], settings)
    dataset[0]  # warm-up: imports, the file cache
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(dataset)):
            _, views, reason = dataset[i]
            assert views is not None, reason
        best = min(best, time.perf_counter() - t)
    return len(paths) / best


def _model_rate(config, batches: int, batch: int) -> float:
    import torch

    from stages.model.registry import load_model
    from stages.model.weights import install_default_weights

    install_default_weights()
    model = load_model(config.model, torch.device("cpu"))
    x = torch.rand(batch, 3, config.model.image_size, config.model.image_size).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode():
        x = model.normalize(x)
        model.trunk(x)  # warm-up
        t = time.perf_counter()
        for _ in range(batches):
            model.trunk(x)
    return batches * batch / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--images", type=int, default=24, help="photos per size")
    parser.add_argument("--views", type=int, default=1, help="views per image (1: the paper's setting)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2 photos per size, 1 repeat, small model batches")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.smoke:
        args.images, args.repeats = 2, 1
    import torch

    from stages.collect import stage as collect
    from stages.collect.inputs import ViewSettings, draft_side
    from stages.context import StageContext
    from stages.sections import CollectSection

    work = Path(tempfile.mkdtemp(prefix="atlas_decode_"))
    base = load_config(args.params, model_overrides(args))
    size, scale = base.model.image_size, tuple(base.collect.view_scale)
    batch = 4 if args.smoke else 32
    result: dict = {
        "model": model_record(base.model),
        "machine": machine_record(),
        "views_per_image": args.views,
        "images_per_size": args.images,
        "threads": torch.get_num_threads(),
        "model_images_per_s": round(_model_rate(base, 1 if args.smoke else 3, batch), 1),
        "sizes": {},
    }
    print(f"model trunk: {result['model_images_per_s']} images/s", flush=True)
    for w, h in SIZES:
        folder = work / f"{w}x{h}"
        folder.mkdir()
        paths = []
        for i in range(args.images):
            paths.append(folder / f"{i:03d}.jpg")
            paths[-1].write_bytes(_photo((w, h), i))
        row: dict = {}
        for draft in (False, True):
            side = draft_side(draft, size, args.views, scale)
            settings = ViewSettings(args.views, scale, size, 0, base.collect.max_pixels, side)
            key = "draft" if draft else "full"
            row[f"decode_{key}_images_per_s"] = round(_decode_rate(paths, settings, args.repeats), 1)
            sets = [
                f"data.source={folder}",
                f"data.store={work / f'{w}_{key}.zarr'}",
                "collect.num_workers=1",
                f"collect.views_per_image={args.views}",
                "collect.positions_per_image=1",
                f"collect.batch_size={batch}",
                f"collect.rows_per_chunk={batch}",
                f"collect.jpeg_draft={draft}",
            ]
            summary = collect.run(
                CollectSection.of(load_config(args.params, model_overrides(args) + sets)),
                StageContext(device=torch.device("cpu")),
            )
            busy = summary.seconds - summary.setup_seconds
            row[f"collect_{key}_inputs_per_s"] = round(summary.inputs_per_second, 1)
            row[f"collect_{key}_waiting_share"] = round(summary.input_wait_seconds / busy, 3) if busy > 0 else None
        row["draft_side"] = draft_side(True, size, args.views, scale)
        row["decode_speedup"] = round(row["decode_draft_images_per_s"] / row["decode_full_images_per_s"], 2)
        result["sizes"][f"{w}x{h}"] = row
        print(f"{w}x{h}: {row}", flush=True)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
