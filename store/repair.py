"""``atlas verify --repair``: mark every damaged unit that :mod:`store.verify` found for redo, so that
the ordinary commands (or ``--shard``) redo exactly those: collect blocks and the image table marked
not done, render batches marked not done, an unfinished or stale derived group or export file removed.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from store.atlas_store import AtlasStore
from store.icons import IconStore
from store.verify import Problem
from store.zarrio import open_group


def apply_repairs(problems: Iterable[Problem]) -> list[str]:
    """Mark every damaged unit for redo (see the module docstring); one line per action taken."""
    by_kind: dict[tuple[str, str], set[int | tuple[int, ...]]] = defaultdict(set)
    for problem in problems:
        r = problem.repair
        if r is None:
            continue
        if r.kind == "batches":
            by_kind[(r.kind, r.path)].update((r.units[0], b) for b in r.units[1:])
        else:
            by_kind[(r.kind, r.path)].update(r.units)
    done = []
    for (kind, path), units in sorted(by_kind.items(), key=lambda kv: _ORDER.index(kv[0][0])):
        done.append(_REPAIRS[kind](Path(path), units))
    return done


def _repair_blocks(path: Path, units: set[Any]) -> str:
    store = AtlasStore.open(path)
    blocks = sorted(int(u) for u in units)
    store.mark_blocks_not_done(blocks)
    return f"{path}: blocks {', '.join(map(str, blocks))} marked not done (collect redoes them)"


def _repair_images(path: Path, _units: set[Any]) -> str:
    AtlasStore.open(path).mark_images_not_written()
    return f"{path}: image table marked not written (collect rewrites it)"


def _repair_batches(path: Path, units: set[Any]) -> str:
    icons = IconStore.open(path, mode="r+")
    by_level: dict[int, list[int]] = defaultdict(list)
    for n, b in sorted(units):
        by_level[n].append(b)
    for n, batches in by_level.items():
        icons.mark_batches_not_done(n, batches)
    return (
        f"{path}: "
        + "; ".join(f"level {n} batches {', '.join(map(str, b))}" for n, b in by_level.items())
        + " marked not done (render redoes them)"
    )


def _repair_fidelity(path: Path, units: set[Any]) -> str:
    icons = IconStore.open(path, mode="r+")
    for n in sorted(units):
        icons.drop_fidelity(int(n))
    return f"{path}: fidelity of levels {sorted(units)} dropped (atlas fidelity recomputes it)"


def _repair_incomplete(path: Path, _units: set[Any]) -> str:
    open_group(path, mode="r+").attrs.update({"complete": False})
    return f"{path}: marked not complete (its stage rewrites it)"


def _repair_remove(path: Path, _units: set[Any]) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return f"{path}: removed"


def _repair_file(path: Path, _units: set[Any]) -> str:
    path.unlink(missing_ok=True)
    return f"{path}: removed"


_REPAIRS: dict[str, Callable[[Path, set[Any]], str]] = {
    "blocks": _repair_blocks,
    "images": _repair_images,
    "batches": _repair_batches,
    "fidelity": _repair_fidelity,
    "incomplete": _repair_incomplete,
    "remove": _repair_remove,
    "file": _repair_file,
}
_ORDER = ("blocks", "images", "incomplete", "batches", "fidelity", "remove", "file")
