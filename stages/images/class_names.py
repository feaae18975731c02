"""Map a data set's label names to the model's class indices.

The attribution to an image's own label (stored per sample) needs the label as a model class.
ImageFolder trees name their folders freely, so a folder counts as a class when its name, with
``_``/``-`` read as spaces and case ignored, equals a class name, or when it starts with the
class index (``281`` or ``281_tabby``); anything else is unknown (-1), never a guess.
"""

from __future__ import annotations

import re

import numpy as np


def _normal(name: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


def label_classes(label_names: list[str] | tuple[str, ...], class_names: list[str]) -> np.ndarray:
    """[len(label_names)] int32: the model class of each data-set label, -1 when unknown."""
    by_name = {}
    for index, name in enumerate(class_names):
        by_name.setdefault(_normal(name), index)
    out = np.full(len(label_names), -1, np.int32)
    for i, label in enumerate(label_names):
        match = re.match(r"^(\d+)(?:[_\- ].*)?$", label)
        if match and int(match.group(1)) < len(class_names):
            out[i] = int(match.group(1))
        elif _normal(label) in by_name:
            out[i] = by_name[_normal(label)]
    return out
