"""Small ImageNet-style data made by the tests: WNID train trees, val folders, tar shards."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# (WNID, model class index): tench, goldfish, crane (the machine; "crane" is also a bird)
WNIDS = [("n01440764", 0), ("n01443537", 1), ("n03126707", 517)]


def jpeg_bytes(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3) * rng.uniform(0.3, 1.0, 3)
    pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def samples(per_class: int = 3) -> list[tuple[str, str, int, bytes]]:
    """(wnid, file name, class index, JPEG bytes) in the sorted order of a train tree."""
    out = []
    for k, (wnid, cls) in enumerate(WNIDS):
        for j in range(per_class):
            out.append((wnid, f"{wnid}_{1000 + j}.JPEG", cls, jpeg_bytes(100 * k + j)))
    return out


def write_tree(root: Path, items: list[tuple[str, str, int, bytes]]) -> Path:
    for wnid, name, _, data in items:
        (root / wnid).mkdir(parents=True, exist_ok=True)
        (root / wnid / name).write_bytes(data)
    return root


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
