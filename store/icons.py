"""Icon storage: the render stage's output group, the only code that knows its layout.

The icons live in their own zarr group beside the store (``store.derived_path("icons")``, i.e.
``<store>.icons.zarr``), so DVC tracks them as the render stage's output and a re-render never
touches the store::

    level_<N>/icons        [K, S, S, 3] uint8   one icon per kept cell of level N (cell order of
                                                 ``store.derived.read_level``), chunk = one batch
    level_<N>/objective    [K] float32          final atlas objective (untransformed icon)
    level_<N>/cossim       [K] float32          cos(icon's centre activation, cell direction)
    level_<N>/done         [batches] uint8      1 = batch written; chunk size 1, written LAST
    level_<N>/fidelity/    written by ``stages.render.fidelity`` (see :meth:`IconStore.write_fidelity`)
    attrs: format, version, identity {grid, model}, params {render params, seed},
           levels {N: cells}, batch_size, size

Resumption follows the collect store's ``blocks/done``: a batch's arrays are written first and
its ``done`` flag last, so a killed render leaves at worst a batch whose flag is 0, which the
next run renders again. Shards write disjoint batches (disjoint chunks) and never the attrs; two
processes rendering the same batch write the same bytes, each chunk file replaced whole. The
group itself is created aside and published whole (store/atomic.py), and deleted by renaming it
away first, so no run ever finds a half-made or half-deleted icons group. Version 2: every array
checksummed, every chunk of a done batch on disk (store/zarrio.py).

Policy when the group already exists (see ``docs/render.md``):

- made from another **grid** (layout id / grid fingerprint) or another **model** (name,
  weights hash, layer): refused with a one-line :class:`AtlasError`. Those icons belong to a
  different atlas; the user deletes the folder (or points the store elsewhere) on purpose.
- made with other **render params** (steps, size, attempts, seed, ...): deleted and recreated.
  Changing a render parameter is how one asks for a re-render, so nothing is worth keeping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from store.atomic import lock_for, remove_tree, write_aside
from store.errors import AtlasError
from store.metadata import first_difference, json_ready
from store.records import GridIdentity, IconsRecord
from store.zarrio import Mode, create_array, open_group, read, read_child, read_group, writable

log = logging.getLogger(__name__)

FORMAT = "activation-atlas-icons"
VERSION = 2
FIDELITY = "fidelity"


@dataclass(frozen=True)
class IconsSpec:
    """What an icons group is made from: reuse it only if all of this matches."""

    grid: dict[str, Any]  # layout_id, fingerprint (refuse on change)
    model: dict[str, Any]  # name, weights_sha256, layer (refuse on change)
    params: dict[str, Any]  # render params incl. seed (recreate on change)
    levels: dict[int, int]  # N -> kept cells
    size: int
    batch_size: int


@dataclass(frozen=True)
class IconLevel:
    """The rendered icons of one level, row-aligned with the level's kept cells."""

    n: int
    icons: NDArray[np.uint8]  # [K, S, S, 3]
    objective: NDArray[np.float32]  # [K]
    cossim: NDArray[np.float32]  # [K]
    done: NDArray[np.bool_]  # [batches]


@dataclass(frozen=True)
class FidelityArrays:
    """Per-icon fidelity of one level (see ``stages.render.fidelity``)."""

    cossim: NDArray[np.float32]  # [K] icon fed at its own size
    overlap: NDArray[np.bool_]  # [K] top-5 predictions meet the cell's top-5 classes
    top_pred: NDArray[np.int32]  # [K, 5] predicted classes, icon at its own size
    cossim_resized: NDArray[np.float32]  # [K] icon resized to the model's input size
    overlap_resized: NDArray[np.bool_]  # [K]


class IconStore:
    """A handle on one icons group."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.group = group
        self.record = IconsRecord.parse(dict(group.attrs), f"icons {path}")

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, mode: Mode = "r") -> IconStore:
        """Open an existing icons group for reading (fidelity, tiles)."""
        p = Path(path)
        if not (p / "zarr.json").exists():
            raise AtlasError(f"icons {p} do not exist; run `atlas render` first")
        group = open_group(p, mode=mode)
        fmt, version = group.attrs.get("format"), group.attrs.get("version")
        if fmt != FORMAT or version != VERSION:
            raise AtlasError(
                f"{p} is not an icons group of version {VERSION} (found format {fmt!r}, version "
                f"{version!r}); `atlas migrate` rewrites version 1, else delete it and run `atlas render`"
            )
        return cls(p, group)

    @classmethod
    def open_for_render(cls, path: str | Path, spec: IconsSpec) -> IconStore:
        """Reopen a matching group (to resume), recreate it on new params, refuse another atlas.

        A file lock beside the group makes this safe when n shards start at once.
        """
        p = Path(path)
        with lock_for(p):
            if (p / "zarr.json").exists():
                store = cls.open(p, mode="r+")
                attrs = store.group.attrs
                diff = first_difference(
                    {"grid": attrs.get("grid"), "model": attrs.get("model")},
                    json_ready({"grid": spec.grid, "model": spec.model}),
                    holder="icons",
                )
                if diff:
                    raise AtlasError(f"icons {p} were rendered for another atlas ({diff}); delete {p} to render again")
                diff = first_difference(
                    {"params": attrs.get("params"), "levels": attrs.get("levels")},
                    json_ready({"params": spec.params, "levels": spec.levels}),
                    holder="icons",
                )
                if diff is None:
                    return store
                log.warning("render params changed (%s): deleting %s and rendering again", diff, p)
                remove_tree(p)
            return cls._create(p, spec)

    @classmethod
    def _create(cls, p: Path, spec: IconsSpec) -> IconStore:
        """Build the empty group aside and publish it (the caller holds the lock beside ``p``)."""
        s, bs = spec.size, spec.batch_size
        with write_aside(p, locked=True) as tmp:
            group = open_group(tmp, mode="w")
            for n, k in spec.levels.items():
                sub = group.create_group(f"level_{n}")
                rows = max(k, 1)
                create_array(
                    sub, "icons", shape=(k, s, s, 3), chunks=(min(bs, rows), s, s, 3), dtype="uint8", fill_value=0
                )
                create_array(sub, "objective", shape=(k,), chunks=(min(bs, rows),), dtype="float32", fill_value=np.nan)
                create_array(sub, "cossim", shape=(k,), chunks=(min(bs, rows),), dtype="float32", fill_value=np.nan)
                create_array(sub, "done", shape=(-(-k // bs),), chunks=(1,), dtype="uint8", fill_value=0)
                sub.attrs.update({"n": int(n), "cells": int(k)})
            group.attrs.update(
                json_ready(
                    {
                        "format": FORMAT,
                        "version": VERSION,
                        "grid": spec.grid,
                        "model": spec.model,
                        "params": spec.params,
                        "levels": spec.levels,
                        "size": s,
                        "batch_size": bs,
                    }
                )
            )
        log.info("created icons %s: %s cells per level, %d px, batches of %d", p, spec.levels, s, bs)
        return cls(p, open_group(p, mode="r+"))

    # ----------------------------------------------------------------------------- geometry
    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether an icons group was ever created at ``path``."""
        return (Path(path) / "zarr.json").exists()

    @property
    def attrs(self) -> dict[str, Any]:
        """The raw JSON attributes, as on disk (for tests and debugging: code reads :attr:`record`)."""
        return dict(self.group.attrs)

    @property
    def grid(self) -> GridIdentity:
        """The grid these icons were rendered from (see ``store.derived.icons_current``)."""
        return self.record.grid

    @property
    def size(self) -> int:
        """Icon side in pixels."""
        return self.record.size

    @property
    def levels(self) -> list[int]:
        return sorted(self.record.levels)

    @property
    def batch_size(self) -> int:
        return self.record.batch_size

    def cells(self, n: int) -> int:
        return self.record.levels[n]

    def n_batches(self, n: int) -> int:
        return -(-self.cells(n) // self.batch_size)

    def batch_range(self, n: int, batch: int) -> range:
        bs = self.batch_size
        return range(batch * bs, min((batch + 1) * bs, self.cells(n)))

    def _level(self, n: int) -> zarr.Group:
        if f"level_{n}" not in self.group:
            raise AtlasError(
                f"icons {self.path} have no level {n}; rendered levels: {', '.join(map(str, self.levels))}"
            )
        return read_group(self.group, f"level_{n}")

    # ----------------------------------------------------------------------------- batches
    def done(self, n: int) -> NDArray[np.bool_]:
        return np.asarray(read(read_child(self._level(n), "done")), dtype=np.bool_)

    def mark_batches_not_done(self, n: int, batches: list[int]) -> None:
        """Make render redo ``batches`` of level ``n`` (``atlas verify --repair``); drops its fidelity."""
        self.drop_fidelity(n)
        done = writable(read_child(self._level(n), "done"))
        for batch in batches:
            done[batch] = 0

    def drop_fidelity(self, n: int) -> None:
        """Delete level ``n``'s fidelity results: marked incomplete first, so a kill half way through
        the deletion leaves results the readers refuse, never some arrays read as fill values."""
        sub = self._level(n)
        if FIDELITY in sub:
            read_group(sub, FIDELITY).attrs.update({"complete": False})
            del sub[FIDELITY]

    def write_batch(
        self,
        n: int,
        batch: int,
        icons: NDArray[np.uint8],
        objective: NDArray[np.floating],
        cossim: NDArray[np.floating],
    ) -> None:
        """Write one batch's arrays, then mark it done (the mark is the commit point)."""
        rows = self.batch_range(n, batch)
        if icons.shape[0] != len(rows):
            raise ValueError(f"level {n} batch {batch}: got {icons.shape[0]} icons, expected {len(rows)}")
        sub = self._level(n)
        self.drop_fidelity(n)  # a new batch makes any earlier fidelity of this level stale
        sl = slice(rows.start, rows.stop)
        writable(read_child(sub, "icons"))[sl] = icons.astype(np.uint8, copy=False)
        writable(read_child(sub, "objective"))[sl] = np.asarray(objective, np.float32)
        writable(read_child(sub, "cossim"))[sl] = np.asarray(cossim, np.float32)
        writable(read_child(sub, "done"))[batch] = 1

    def read_level(self, n: int) -> IconLevel:
        sub = self._level(n)
        return IconLevel(
            n=n,
            icons=read(read_child(sub, "icons")),
            objective=read(read_child(sub, "objective")),
            cossim=read(read_child(sub, "cossim")),
            done=np.asarray(read(read_child(sub, "done")), dtype=np.bool_),
        )

    def complete(self, n: int) -> bool:
        return bool(self.done(n).all())

    # ----------------------------------------------------------------------------- fidelity
    def write_fidelity(self, n: int, result: FidelityArrays, attrs: dict[str, Any]) -> None:
        """Replace level ``n``'s fidelity arrays (written whole, marked complete last)."""
        sub = self._level(n)
        self.drop_fidelity(n)
        group = sub.create_group(FIDELITY)
        group.attrs.update({"complete": False})
        for name in ("cossim", "overlap", "top_pred", "cossim_resized", "overlap_resized"):
            data = np.ascontiguousarray(getattr(result, name))
            chunks = (max(1, min(4096, data.shape[0])),) + tuple(max(1, d) for d in data.shape[1:])
            create_array(group, name, data=data, chunks=chunks)
        group.attrs.update(json_ready({**attrs, "complete": True}))

    def read_fidelity(self, n: int) -> FidelityArrays:
        sub = self._level(n)
        if FIDELITY not in sub or not read_group(sub, FIDELITY).attrs.get("complete", False):
            raise AtlasError(f"icons {self.path} level {n} have no fidelity results; run `atlas fidelity`")
        g = read_group(sub, FIDELITY)
        return FidelityArrays(**{name: read(read_child(g, name)) for name in FidelityArrays.__dataclass_fields__})
