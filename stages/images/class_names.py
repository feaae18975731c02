"""Map a data set's label names to the model's class indices.

The attribution to an image's own label (stored per sample) needs the label as a model class.
ImageFolder trees name their folders freely, so a folder counts as a class when its name, with
``_``/``-`` read as spaces and case ignored, equals a class name, when it starts with the
class index (``281`` or ``281_tabby``), or when it is an ImageNet WordNet ID (``n01440764``, the
folder names of ImageNet's train split) of a class the model has; anything else is unknown (-1),
never a guess.

WordNet IDs go through ``imagenet_wnids.tsv`` beside this module (1000 rows: class index, WNID,
WordNet synonyms; its header names the source and licence). A WNID maps to its ImageNet index
when the model's class at that index carries that ImageNet name (every torchvision ImageNet
classifier), otherwise to the model class of the same name (a model with its own class list).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

WNID_TABLE = Path(__file__).with_name("imagenet_wnids.tsv")
_WNID = re.compile(r"^n\d{8}$")


def _normal(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The 1000 ImageNet-1k classes in model index order: (WNID, WordNet synonyms)."""
    rows: list[tuple[str, tuple[str, ...]]] = []
    for line in WNID_TABLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            index, wnid, words = line.split("\t")
            assert int(index) == len(rows), f"{WNID_TABLE}: rows out of order at {index}"
            rows.append((wnid, tuple(w.strip() for w in words.split(","))))
    return tuple(rows)


@functools.lru_cache(maxsize=1)
def wnid_index() -> dict[str, int]:
    """WNID -> ImageNet class index (0..999)."""
    return {wnid: i for i, (wnid, _) in enumerate(imagenet_classes())}


def is_wnid(name: str) -> bool:
    return bool(_WNID.match(name))


def _wnid_class(wnid: str, class_names: list[str], by_name: dict[str, int]) -> int:
    index = wnid_index().get(wnid)
    if index is None:
        return -1
    words = imagenet_classes()[index][1]
    if index < len(class_names):
        own = _normal(class_names[index])
        # torchvision's names are one of the synonyms, or one made unique ("crane bird")
        if any(own == _normal(w) or own.startswith(_normal(w) + " ") for w in words):
            return index
    for word in words:
        if _normal(word) in by_name:
            return by_name[_normal(word)]
    return -1


def label_classes(label_names: list[str] | tuple[str, ...], class_names: list[str]) -> np.ndarray:
    """[len(label_names)] int32: the model class of each data-set label, -1 when unknown."""
    by_name: dict[str, int] = {}
    for index, name in enumerate(class_names):
        by_name.setdefault(_normal(name), index)
    out = np.full(len(label_names), -1, np.int32)
    for i, label in enumerate(label_names):
        match = re.match(r"^(\d+)(?:[_\- ].*)?$", label)
        if match and int(match.group(1)) < len(class_names):
            out[i] = int(match.group(1))
        elif _normal(label) in by_name:
            out[i] = by_name[_normal(label)]
        elif is_wnid(label):
            out[i] = _wnid_class(label, class_names, by_name)
    return out
