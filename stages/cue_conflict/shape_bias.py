"""Shape bias by Geirhos et al.'s recipe (ICLR 2019), as pure functions of probabilities and labels.

1. Each of the 16 entry-level categories is scored by the **mean** softmax probability of its
   ImageNet classes (:data:`categories.json`; the published index lists).
2. The model's decision is the best-scoring category.
3. Stimuli whose shape and texture category are the same are no cue conflict: left out.
4. Of the rest, a decision equal to the shape category counts as *shape*, equal to the texture
   category as *texture*, anything else as *other* (and is not part of the ratio).
5. Shape bias = shape / (shape + texture).

Published figures on the full 1,280-image set: ResNet-50 21.4%, AlexNet 25.3%, VGG-16 9.2%, humans
about 96%. Every rate here comes with its counts and a 95% Wilson interval, because a sample of 160
stimuli leaves a wide one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CATEGORIES_FILE = Path(__file__).with_name("categories.json")


@dataclass(frozen=True)
class Categories:
    """The 16 categories (sorted names) and the ImageNet class indices of each."""

    names: tuple[str, ...]
    indices: tuple[tuple[int, ...], ...]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def of_class(self, n_classes: int = 1000) -> NDArray[np.int64]:
        """``[n_classes]``: the category number of every ImageNet class, -1 for the classes of none."""
        out = np.full(n_classes, -1, dtype=np.int64)
        for k, members in enumerate(self.indices):
            out[list(members)] = k
        return out


@lru_cache(maxsize=1)
def load_categories(path: Path = CATEGORIES_FILE) -> Categories:
    table = json.loads(Path(path).read_text())["categories"]
    names = tuple(sorted(table))
    return Categories(names=names, indices=tuple(tuple(int(i) for i in table[n]) for n in names))


def category_probabilities(probs: NDArray[np.floating], categories: Categories) -> NDArray[np.float64]:
    """``[B, 1000]`` softmax probabilities -> ``[B, 16]``: each category's mean over its classes."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] <= max(max(c) for c in categories.indices):
        raise ValueError(f"expected [B, 1000] ImageNet probabilities, got shape {p.shape}")
    return np.stack([p[:, list(c)].mean(axis=1) for c in categories.indices], axis=1)


def decide(probs: NDArray[np.floating], categories: Categories) -> list[str]:
    """The 16-class decision of every row of ``[B, 1000]`` probabilities."""
    best = category_probabilities(probs, categories).argmax(axis=1)
    return [categories.names[int(k)] for k in best]


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial rate k/n ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Counts:
    """Shape / texture / other decisions of the cue-conflict stimuli (same-category ones left out)."""

    shape: int = 0
    texture: int = 0
    other: int = 0
    left_out: int = 0  # shape category == texture category: no conflict

    @property
    def total(self) -> int:
        return self.shape + self.texture + self.other

    @property
    def bias(self) -> float | None:
        """shape / (shape + texture); None when no decision was either."""
        n = self.shape + self.texture
        return self.shape / n if n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.shape, self.shape + self.texture)

    def as_dict(self) -> dict[str, object]:
        lo, hi = self.interval
        return {
            "shape": self.shape,
            "texture": self.texture,
            "other": self.other,
            "total": self.total,
            "left_out": self.left_out,
            "shape_bias": self.bias,
            "interval95": [lo, hi],
        }


@dataclass(frozen=True)
class ShapeBias:
    """The whole set's counts, and the same per shape category and per texture category."""

    overall: Counts
    by_shape: dict[str, Counts] = field(default_factory=dict)
    by_texture: dict[str, Counts] = field(default_factory=dict)


def _count(outcomes: list[str], left_out: int = 0) -> Counts:
    c = Counter(outcomes)
    return Counts(shape=c["shape"], texture=c["texture"], other=c["other"], left_out=left_out)


def outcome(decision: str, shape: str, texture: str) -> str | None:
    """'shape', 'texture' or 'other' for one stimulus; None when it is no cue conflict."""
    if shape == texture:
        return None
    return "shape" if decision == shape else "texture" if decision == texture else "other"


def shape_bias(decisions: list[str], shapes: list[str], textures: list[str]) -> ShapeBias:
    """Geirhos et al.'s shape bias of these decisions (see the module docstring)."""
    if not (len(decisions) == len(shapes) == len(textures)):
        raise ValueError("decisions, shapes and textures must have one entry per stimulus")
    results = [outcome(d, s, t) for d, s, t in zip(decisions, shapes, textures)]
    kept = [(r, s, t) for r, s, t in zip(results, shapes, textures) if r is not None]
    overall = _count([r for r, _, _ in kept], left_out=sum(r is None for r in results))
    by_shape = {s: _count([r for r, s2, _ in kept if s2 == s]) for s in sorted({s for _, s, _ in kept})}
    by_texture = {t: _count([r for r, _, t2 in kept if t2 == t]) for t in sorted({t for _, _, t in kept})}
    return ShapeBias(overall=overall, by_shape=by_shape, by_texture=by_texture)
