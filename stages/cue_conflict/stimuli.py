"""Cue-conflict stimuli on disk: ``<shape><i>-<texture><j>.png`` (Geirhos et al. 2019's naming).

The published set (``stimuli/style-transfer-preprocessed-512`` of the authors' texture-vs-shape
repository) has one folder per shape category and files such as ``cat4-elephant2.png``: the shape
of cat image 4 in the texture of elephant image 2, 224 x 224 RGB. The images are fed to the model
as they are: no resize, no crop, only the model's normalisation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from store.errors import AtlasError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<shape>[a-z]+)\d+-(?P<texture>[a-z]+)\d+$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Stimulus:
    path: Path
    shape: str
    texture: str

    @property
    def conflict(self) -> bool:
        return self.shape != self.texture


def parse_name(path: Path) -> tuple[str, str] | None:
    """(shape, texture) from ``cat4-elephant2.png``; None for a name of another form."""
    match = _NAME.match(path.stem.lower())
    return (match["shape"], match["texture"]) if match else None


def list_stimuli(folder: str | Path, categories: tuple[str, ...]) -> list[Stimulus]:
    """Every stimulus under ``folder`` (sorted by path); a one-line error when there is none, or when
    a file names a category that is not one of the 16."""
    root = Path(folder)
    if not root.is_dir():
        raise AtlasError(
            f"cue-conflict stimuli: {root} is not a folder; pass --stimuli DIR (the images named "
            "<shape><i>-<texture><j>.png, e.g. cat4-elephant2.png)"
        )
    out, other = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        parsed = parse_name(path)
        if parsed is None:
            other += 1
            continue
        unknown = [c for c in parsed if c not in categories]
        if unknown:
            raise AtlasError(
                f"{path}: category {unknown[0]!r} is not one of the 16 cue-conflict categories "
                f"({', '.join(categories)})"
            )
        out.append(Stimulus(path, *parsed))
    if other:
        log.warning(
            "cue-conflict: %d image files under %s are not named <shape><i>-<texture><j>; left out", other, root
        )
    if not out:
        raise AtlasError(
            f"cue-conflict stimuli: no image named <shape><i>-<texture><j>.png under {root} "
            f"({other} other image files); pass the folder of the cue-conflict set with --stimuli"
        )
    return out


def load_pixels(stimulus: Stimulus, size: int) -> NDArray[np.float32]:
    """``[3, size, size]`` in [0, 1], the file's own pixels (no resize: a stimulus of another size is an error)."""
    try:
        with Image.open(stimulus.path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise AtlasError(f"{stimulus.path}: cannot read the image ({exc})") from None
    if rgb.size != (size, size):
        raise AtlasError(
            f"{stimulus.path}: {rgb.size[0]} x {rgb.size[1]} pixels; cue-conflict stimuli are fed "
            f"as they are, so they must match the model's input ({size} x {size})"
        )
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
