"""The photos of class A: a folder the user names, or the data set's photos the model calls A.

Every photo becomes the model's input the way the collect stage's view 0 does (the whole photo
resized to ``S`` x ``S``, aspect not kept: stages/images/crops.py ``render_view``), as
``[S, S, 3]`` float32 in [0, 1].

Default source (``patches.photos`` null): the store's photos (``data.source`` as collected) whose
dataset label is class A, or whose whole-photo top-1 prediction recorded by collect is A. The demo's
folders are mostly not ImageNet classes ("fruit", "birds"), so the second rule is what finds its
lemons; the protocol then keeps only the photos the model classifies as A anyway.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from stages.images.crops import render_view
from stages.images.decoding import decode_rgb
from stages.images.sources import is_image_name
from store.errors import AtlasError

log = logging.getLogger(__name__)
MAX_PIXELS = 89_478_485


def folder_photos(folder: str | Path) -> list[str]:
    """Every image file below ``folder`` (recursive, hidden entries skipped), sorted; one-line errors."""
    root = Path(folder)
    if not root.exists():
        raise AtlasError(f"--photos {folder}: not found; name a folder of photos of the class")
    if not root.is_dir():
        raise AtlasError(f"--photos {folder}: is not a folder; name a folder of photos of the class")
    found = sorted(
        str(p)
        for p in root.rglob("*")
        if p.is_file() and is_image_name(p.name) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise AtlasError(
            f"--photos {folder}: the folder holds no image (.jpg, .png, ...); put photos of the class in it"
        )
    return found


def store_photos(store: object, cls: int) -> list[str]:
    """Paths of the store's photos labelled ``cls`` or predicted ``cls`` on their whole-photo view (view 0)."""
    paths = [str(p) for p in store.image_paths()]  # type: ignore[attr-defined]
    chosen = set()
    try:
        labels = np.asarray(store.image_label_classes(), np.int64)  # type: ignore[attr-defined]
        chosen |= set(np.flatnonzero(labels == cls).tolist())
    except (AttributeError, KeyError):
        pass
    sampling = store.sampling  # type: ignore[attr-defined]
    per_image = sampling.views_per_image * sampling.positions_per_image
    if store.has_row_array("top_pred_idx"):  # type: ignore[attr-defined]
        rows = np.arange(len(paths), dtype=np.int64) * per_image  # the first position of view 0
        valid = np.asarray(store.valid_mask(), np.bool_)[rows]  # type: ignore[attr-defined]
        top = np.asarray(store.row_values("top_pred_idx", rows[valid]))[:, 0]  # type: ignore[attr-defined]
        chosen |= set(np.flatnonzero(valid)[top == cls].tolist())
    else:
        log.warning("store has no predictions (collect.head false): only photos labelled as the class are used")
    return [paths[i] for i in sorted(chosen)]


def load_photo(path: str, size: int) -> NDArray[np.float32] | None:
    """The photo as the model's ``[size, size, 3]`` input in [0, 1]; None (with a warning) if unreadable."""
    decoded = decode_rgb(path, MAX_PIXELS)
    if decoded.image is None:
        log.warning("patches: photo %s cannot be opened (%s); left out", path, decoded.reason)
        return None
    img = decoded.image
    return np.asarray(render_view(img, (0, 0, img.width, img.height), size), np.float32) / 255.0


def load_photos(paths: list[str], size: int) -> tuple[list[str], NDArray[np.float32]]:
    """The readable photos of ``paths`` and their arrays ``[N, size, size, 3]``."""
    kept, arrays = [], []
    for p in paths:
        a = load_photo(p, size)
        if a is not None:
            kept.append(p)
            arrays.append(a)
    return kept, (np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32))


def same_file(path: str) -> str:
    """A key under which two names of one file compare equal."""
    return os.path.realpath(path)
