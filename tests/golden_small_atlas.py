"""Digests of the ``small_atlas`` outputs, recorded once and compared ever after.

The layering refactor (and any later one) must not change a single output. ``tests/data/
small_atlas_digests.json`` holds the sha256 of every array the small real atlas writes (collect
store, layout, grid, whitening, icons) as recorded *before* the refactor; ``test_golden.py``
rebuilds the atlas with today's code and compares. Re-record only for an intended change of
output, and say why in the commit::

    python -m tests.golden_small_atlas --record
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from store.digest import group_digests

DIGESTS = Path(__file__).parent / "data" / "small_atlas_digests.json"
GROUPS = ("", "layout", "grid", "whitening", "icons")  # "" is the collect store itself


def atlas_digests(store_path: Path) -> dict[str, dict[str, str]]:
    """``{group: {array: sha256}}`` for the store and each derived group beside it."""
    out: dict[str, dict[str, str]] = {}
    for name in GROUPS:
        path = store_path if not name else store_path.with_name(f"{store_path.stem}.{name}.zarr")
        out[name or "collect"] = group_digests(path)
    return out


def _record() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from tests.atlas_fixtures import build_small_atlas
    from tests.conftest import _real_photos
    from stages.config import ModelConfig
    from stages.model.registry import load_model
    from stages.model.weights import install_default_weights

    install_default_weights()
    torch.manual_seed(0)
    model = load_model(ModelConfig(), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        for i, (name, pixels) in enumerate(_real_photos()):
            label = "tabby" if name == "cat" else "other"
            (photos / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(pixels)).save(photos / label / f"{i:02d}_{name}.jpg", quality=92)
        atlas = build_small_atlas(Path(tmp) / "atlas", photos, model)
        digests = atlas_digests(Path(atlas.store.path))
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    DIGESTS.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(len(v) for v in digests.values())} array digests into {DIGESTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", required=True)
    parser.parse_args()
    _record()
