"""Digests of the ``small_atlas`` outputs, recorded once per numerics environment and compared ever after.

A refactor must not change a single output. ``tests/data/small_atlas_digests.json`` holds, per
*numerics environment* (numpy version and the BLAS library and kernel it runs, e.g. ``numpy 2.4.6,
openblas 0.3.31 SkylakeX``), the sha256 of every array the small real atlas writes (collect store,
layout, grid, whitening, icons); ``test_golden.py`` rebuilds the atlas with today's code and
compares. Why per environment: the PCA layout and the whitening go through BLAS, whose kernels
(chosen per CPU) round differently in the last bit, and the icons are rendered from the whitening;
the same code gives other bytes for those arrays on another kind of CPU (measured: the commit
before this change, rebuilt on an AMD EPYC with OpenBLAS's SkylakeX kernels, differs from the
2026-11-30 record in exactly the layout, whitening and icon arrays). Record a new environment
from a commit whose outputs are known good (``git worktree add``), or an intended change of output
for the current environment, and say which in the commit::

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


def numerics_environment() -> str:
    """``numpy X, openblas Y KERNEL``: what decides the last bits of the BLAS-computed arrays."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in str(i.get("filepath", ""))]
    blas = blas or [i for i in threadpool_info() if i.get("user_api") == "blas"]
    lib = f"{blas[0]['internal_api']} {blas[0].get('version')} {blas[0].get('architecture')}" if blas else "no blas"
    return f"numpy {np.__version__}, {lib}"


def recorded_environments() -> dict[str, dict[str, dict[str, str]]]:
    return json.loads(DIGESTS.read_text())["environments"]


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

    from stages.config import ModelConfig
    from stages.model.registry import load_model
    from stages.model.weights import install_default_weights
    from tests.atlas_fixtures import build_small_atlas
    from tests.conftest import MOBILENET_LAYER, _real_photos

    install_default_weights()
    torch.manual_seed(0)
    model = load_model(ModelConfig(layer=MOBILENET_LAYER), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        for i, (name, pixels) in enumerate(_real_photos()):
            label = "tabby" if name == "cat" else "other"
            (photos / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(pixels)).save(photos / label / f"{i:02d}_{name}.jpg", quality=92)
        atlas = build_small_atlas(Path(tmp) / "atlas", photos, model)
        digests = atlas_digests(Path(atlas.store.path))
    envs = recorded_environments() if DIGESTS.exists() else {}
    envs[numerics_environment()] = digests
    DIGESTS.parent.mkdir(parents=True, exist_ok=True)
    DIGESTS.write_text(json.dumps({"environments": envs}, indent=1, sort_keys=True) + "\n")
    print(
        f"recorded {sum(len(v) for v in digests.values())} array digests for {numerics_environment()!r} into {DIGESTS}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", required=True)
    parser.parse_args()
    _record()
