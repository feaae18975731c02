"""Make stages/featurevis/maco_magnitude_80.npy: the natural magnitude spectrum MACO keeps fixed.

    python scripts/maco_spectrum.py [--photos data/demo_photos] [--size 80] [--out stages/featurevis/maco_magnitude_80.npy]

Every ``.jpg``/``.jpeg``/``.png`` under ``--photos`` (the demo's 403 photos, data/demo_photos), as
RGB, centre square crop, resized to ``--size`` px (Pillow, bicubic with antialiasing: the icon
size the render stage optimises at), then :func:`stages.featurevis.maco.natural_magnitude`: the
mean magnitude of the orthonormal 2-D FFT of each photo, mean removed, in the decorrelated
colour space of the render's image parameterisations. Written as float32 ``[3, size, size // 2 + 1]``
(about 40 KB); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.featurevis.maco import DEFAULT_MAGNITUDE, natural_magnitude  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png"}


def load_photo(path: Path, size: int) -> np.ndarray:
    """``[3, size, size]`` float32 in [0, 1]: the centre square of the photo, resized."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        small = rgb.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    return np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=REPO / "data" / "demo_photos")
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--out", type=Path, default=DEFAULT_MAGNITUDE)
    args = p.parse_args(argv)
    paths = sorted(q for q in args.photos.rglob("*") if q.suffix.lower() in SUFFIXES)
    if not paths:
        sys.exit(f"maco_spectrum: no photos under {args.photos}; pass --photos DIR")
    photos = torch.as_tensor(np.stack([load_photo(q, args.size) for q in paths]))
    magnitude = natural_magnitude(photos).numpy().astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, magnitude)
    print(f"{len(paths)} photos from {args.photos} -> {args.out} {list(magnitude.shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
