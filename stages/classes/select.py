"""Which samples belong to a class atlas: pure selection rules on the stored top-k attributions.

docs/method.md §8 (Carter et al., 2019, class-filtered atlases): keep the samples whose
attribution for class c is the argmax over classes ("winner"), and/or the top-k (k about
2,000-3,000) samples by positive attribution for c.

What the store holds (store/schema.py, stages/collect/stage.py): per row the ``K`` classes with the
largest attribution (``collect.top_k``, default 20), indices ``attr_idx`` (-1: none, e.g. head off)
and values ``attr_val``, written by ``torch.topk`` and so sorted in descending order. Both rules
are defined on that:

- **winner**: the class holding the row's largest *stored* value (the argmax over the row's
  top-k entries) is c, and that value is > 0. Because the stored entries are the K largest of
  all classes, this is exactly the argmax of the full attribution vector (ties aside). A row
  whose largest attribution is <= 0 has no class it pushes up and wins for none.
- **topk**: among the rows whose stored top-k contains c with a value > 0, the ``k`` with the
  largest value (ties: lower row id first). A row where c ranks below its K-th class is not a
  candidate even if its attribution to c is positive (the store no longer knows the value).
- **both**: the union of the two (the reference's "and/or").

Nothing here reads files; :mod:`stages.classes.atlas` does the I/O.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from store.errors import AtlasError

Mode = Literal["winner", "topk", "both"]
MODES: tuple[str, ...] = ("winner", "topk", "both")


# --------------------------------------------------------------------------------- class names
def _normal(name: str) -> str:
    """Case, ``_``/``-`` and extra spaces ignored (as stages/images/class_names.py matches folder names)."""
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


def resolve_class(text: str | int, class_names: list[str], param: str = "classes.names") -> int:
    """The class index of ``text``: an index (``281``) or a name (``tabby``, ``Arabian_camel``).

    Unknown or ambiguous names raise a one-line :class:`AtlasError` naming ``param`` with close
    matches (difflib) or the candidate indices.
    """
    raw = str(text).strip()
    if re.fullmatch(r"-?\d+", raw):
        index = int(raw)
        if not 0 <= index < len(class_names):
            raise AtlasError(f"{param}: class {index} is out of range; the model has classes 0..{len(class_names) - 1}")
        return index
    wanted = _normal(raw)
    hits = [i for i, name in enumerate(class_names) if _normal(name) == wanted]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        listed = ", ".join(f"{i} ({class_names[i]})" for i in hits)
        raise AtlasError(f"{param}: class name {raw!r} is ambiguous: {listed}; give the index instead")
    normals = [_normal(n) for n in class_names]
    close = difflib.get_close_matches(wanted, normals, n=5, cutoff=0.6)
    hint = "; close matches: " + ", ".join(class_names[normals.index(c)] for c in close) if close else ""
    raise AtlasError(f"{param}: no class named {raw!r} among the model's {len(class_names)} classes{hint}")


def class_slug(index: int, class_names: list[str]) -> str:
    """A folder-safe name: ``Arabian camel`` -> ``arabian_camel``; the index is prefixed when the
    name is shared by two classes (ImageNet has two ``crane`` and two ``maillot``) or empty."""
    name = class_names[index]
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    duplicated = sum(_normal(n) == _normal(name) for n in class_names) > 1
    return f"{index}_{slug}" if duplicated or not slug else slug


# --------------------------------------------------------------------------------- attribution
def class_values(
    idx: NDArray[np.integer], val: NDArray[np.floating], cls: int
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """``(value, stored)``: each row's stored attribution to ``cls`` and whether it was stored.

    Rows where ``cls`` is not among the stored top-k get value 0 and ``stored`` False (the same
    top-k approximation as the grid's mean attribution, stages/grid/stage.py).
    """
    idx, val = np.asarray(idx), np.asarray(val, dtype=np.float32)
    hit = idx == cls
    stored = hit.any(axis=1)
    value = np.where(hit, val, 0.0).sum(axis=1).astype(np.float32)  # a class appears at most once per row
    return value, stored


def winner_mask(idx: NDArray[np.integer], val: NDArray[np.floating], cls: int) -> NDArray[np.bool_]:
    """Rows whose largest stored attribution is positive and belongs to ``cls``."""
    idx, val = np.asarray(idx), np.asarray(val, dtype=np.float32)
    if idx.shape[1] == 0:
        return np.zeros(len(idx), dtype=bool)
    masked = np.where(idx >= 0, val, -np.inf)  # -1 entries (no class) never win
    best = masked.argmax(axis=1)
    rows = np.arange(len(idx))
    return (idx[rows, best] == cls) & (masked[rows, best] > 0)


def topk_rows(idx: NDArray[np.integer], val: NDArray[np.floating], cls: int, k: int) -> NDArray[np.int64]:
    """The (at most) ``k`` rows with the largest positive stored attribution to ``cls``, ascending."""
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    value, stored = class_values(idx, val, cls)
    candidates = np.flatnonzero(stored & (value > 0))
    order = np.argsort(-value[candidates], kind="stable")  # stable: ties keep the lower row id first
    return np.sort(candidates[order[:k]]).astype(np.int64)


def select_rows(
    idx: NDArray[np.integer],
    val: NDArray[np.floating],
    cls: int,
    mode: str,
    k: int,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.int64]:
    """Row ids (ascending) of the class atlas of ``cls`` under ``mode`` (winner | topk | both).

    ``valid`` (optional, [n] bool) excludes rows that hold no sample (skipped inputs); their
    attribution arrays are fill values.
    """
    if mode not in MODES:
        raise AtlasError(f"classes.mode {mode!r} is not one of: {', '.join(MODES)}")
    idx, val = np.asarray(idx), np.asarray(val, dtype=np.float32)
    if valid is not None:
        idx = np.where(np.asarray(valid, dtype=bool)[:, None], idx, -1)
    picked = np.zeros(len(idx), dtype=bool)
    if mode in ("winner", "both"):
        picked |= winner_mask(idx, val, cls)
    if mode in ("topk", "both"):
        picked[topk_rows(idx, val, cls, k)] = True
    return np.flatnonzero(picked).astype(np.int64)
