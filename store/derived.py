"""Read and write what the reduce and grid stages derive from a store: layout, levels, whitening.

Each group is a sibling of the store, ``<store>.<name>.zarr`` (``AtlasStore.derived_path``), so
every DVC stage owns one output folder::

    layout/rows           [n] int64    store row ids laid out (the valid rows), ascending
    layout/layout         [n, 2] f32   normalised layout in [0, 1]^2 (what the grid bins)
    layout/embedding      [n, 2] f32   the raw 2-D embedding before normalisation
    layout/fitted         [n] bool     True: fitted by the reducer; False: placed afterwards
        attrs: method, params, seed, deterministic, versions, layout_id, n_fit, ... complete
    grid/level_<N>/                    one group per level, N cells per side
        i, j              [K] int32    cell column (x) and row (y); see stages/grid/binning.py
        count             [K] int64    members
        direction         [K, C] f32   mean raw activation of the members
        attribution       [K, classes] f32  mean top-k attribution (see stages/grid/stage.py)
        top_idx, top_val  [K, T]       the T classes with the largest mean attribution
        member_offsets    [K + 1] int64, member_rows [M] int64   CSR member lists
        attrs: n, min_count, n_cells_kept, n_rows_kept, n_rows_dropped
    grid/                 attrs: levels, class_names, layout_id, complete, ...
    whitening/matrix      [C, C] f64   S = (A^T A / n + ridge I)^-1
    whitening/second_moment [C, C] f64 A^T A / n over the valid rows
        attrs: ridge, absolute_ridge, n, complete

Each group is written whole into a private folder beside its final place and then published by
two renames (:mod:`store.atomic`), marked ``complete`` last: a run killed half way leaves the
previous group (or none) and a hidden folder nobody reads, never a partial group; two runs of the
same stage publish one after the other. The layout records ``rows_token``, the
:meth:`~store.atlas_store.AtlasStore.content_token` of the rows it laid out, and is refused once the
store holds other rows; grid and whitening record the ``layout_id`` they were computed from.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from numpy.typing import NDArray

from store.atomic import write_aside
from store.errors import AtlasError
from store.metadata import json_ready
from store.zarrio import create_array, open_group, read

if TYPE_CHECKING:
    from store.view import RowStore

log = logging.getLogger(__name__)

LAYOUT = "layout"
GRID = "grid"
WHITENING = "whitening"
_ROW_CHUNK = 1 << 20
_CELL_CHUNK = 4096


@contextlib.contextmanager
def _fresh_group(store: RowStore, name: str) -> Iterator[zarr.Group]:
    """A new, empty group that replaces ``<store>.<name>.zarr`` whole when the block ends without error."""
    with write_aside(store.derived_path(name)) as tmp:
        group = open_group(tmp, mode="w")
        group.attrs.update({"complete": False})
        yield group


def _existing_group(store: RowStore, name: str) -> zarr.Group | None:
    path = store.derived_path(name)
    if not (path / "zarr.json").exists():
        return None
    return open_group(path, mode="r")


def _put(group: zarr.Group, name: str, data: NDArray[Any], chunk_rows: int) -> None:
    chunks = (max(1, min(chunk_rows, data.shape[0])),) + tuple(max(1, s) for s in data.shape[1:])
    create_array(group, name, data=np.ascontiguousarray(data), chunks=chunks, overwrite=True)


def rows_token(store: Any) -> str | None:
    """The store's :meth:`~store.atlas_store.AtlasStore.content_token` (None for a store without one)."""
    token = getattr(store, "content_token", None)
    return token() if callable(token) else None


def _complete_group(store: RowStore, name: str, what: str, stage: str) -> zarr.Group:
    where = getattr(store, "path", "the store")
    group = _existing_group(store, name)
    if group is None:
        raise AtlasError(f"store {where} has no {what}; run `atlas {stage}` first")
    if not group.attrs.get("complete", False):
        raise AtlasError(f"store {where} has an unfinished {what} (an interrupted run); run `atlas {stage}` again")
    return group


# --------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """The 2-D layout of the store's valid rows."""

    rows: NDArray[np.int64]
    layout: NDArray[np.float32]
    embedding: NDArray[np.float32]
    fitted: NDArray[np.bool_]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def layout_id(self) -> str:
        return str(self.attrs.get("layout_id", ""))


def layout_fingerprint(rows: NDArray[np.integer], layout: NDArray[np.floating]) -> str:
    """Content hash of a layout: the grid records it so a stale grid is refused, not used."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(layout, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def write_layout(store: RowStore, layout: Layout) -> str:
    """Replace the store's layout; a grid binned from the old one is then refused by :func:`read_level`."""
    layout_id = layout_fingerprint(layout.rows, layout.layout)
    token = rows_token(store)
    with _fresh_group(store, LAYOUT) as group:
        _put(group, "rows", layout.rows.astype(np.int64), _ROW_CHUNK)
        _put(group, "layout", layout.layout.astype(np.float32), _ROW_CHUNK)
        _put(group, "embedding", layout.embedding.astype(np.float32), _ROW_CHUNK)
        _put(group, "fitted", layout.fitted.astype(bool), _ROW_CHUNK)
        group.attrs.update(
            json_ready(
                {
                    **layout.attrs,
                    "layout_id": layout_id,
                    "n": int(len(layout.rows)),
                    "rows_token": token,
                    "complete": True,
                }
            )
        )
    layout.attrs["layout_id"] = layout_id
    log.info("wrote layout of %d rows (id %s) to %s", len(layout.rows), layout_id, getattr(store, "path", "store"))
    return layout_id


def read_layout(store: RowStore) -> Layout:
    """The complete layout; refused when the store now holds other rows than it laid out."""
    group = _complete_group(store, LAYOUT, "layout", "reduce")
    recorded, now = group.attrs.get("rows_token"), rows_token(store)
    if recorded is not None and now is not None and recorded != now:
        raise AtlasError(
            f"store {getattr(store, 'path', '')}: the layout was made from other collected rows than "
            "the store holds now (collect ran since); run `atlas reduce` again"
        )
    return Layout(
        rows=np.asarray(read(group["rows"]), dtype=np.int64),
        layout=np.asarray(read(group["layout"]), dtype=np.float32),
        embedding=np.asarray(read(group["embedding"]), dtype=np.float32),
        fitted=np.asarray(read(group["fitted"]), dtype=bool),
        attrs=dict(group.attrs),
    )


def has_layout(store: RowStore) -> bool:
    group = _existing_group(store, LAYOUT)
    return group is not None and bool(group.attrs.get("complete", False))


# --------------------------------------------------------------------------------- grid
@dataclass
class CellLevel:
    """The kept cells of one zoom level (N cells per side)."""

    n: int
    i: NDArray[np.int32]
    j: NDArray[np.int32]
    count: NDArray[np.int64]
    direction: NDArray[np.float32]
    attribution: NDArray[np.float32] | None
    top_idx: NDArray[np.int32]
    top_val: NDArray[np.float32]
    member_offsets: NDArray[np.int64]
    member_rows: NDArray[np.int64]
    class_names: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.count))

    def members(self, cell: int) -> NDArray[np.int64]:
        """Store row ids of the members of kept cell number ``cell`` (ascending)."""
        return self.member_rows[self.member_offsets[cell] : self.member_offsets[cell + 1]]

    def top_names(self) -> list[list[str]]:
        """The top classes of every cell as names (index -> ``class_names``; -1 padding left out)."""
        names = self.class_names
        return [[names[c] if c < len(names) else str(c) for c in row if c >= 0] for row in self.top_idx.tolist()]


_LEVEL_ARRAYS = ("i", "j", "count", "direction", "attribution", "top_idx", "top_val", "member_offsets", "member_rows")


def write_grid(store: RowStore, levels: list[CellLevel], attrs: dict[str, Any]) -> None:
    """Replace the store's grid with these levels (all written, then marked complete, then published)."""
    with _fresh_group(store, GRID) as group:
        for level in levels:
            sub = group.create_group(f"level_{level.n}")
            for name in _LEVEL_ARRAYS:
                data = getattr(level, name)
                if data is None:
                    continue
                chunk = _ROW_CHUNK if name in ("member_rows", "member_offsets") else _CELL_CHUNK
                _put(sub, name, np.asarray(data), chunk)
            sub.attrs.update(json_ready({**level.attrs, "n": level.n, "n_cells_kept": len(level)}))
        class_names = levels[0].class_names if levels else []
        group.attrs.update(json_ready({**attrs, "levels": [lv.n for lv in levels], "class_names": class_names}))
        group.attrs.update({"complete": True})


def directions_fingerprint(cells: dict[int, CellLevel]) -> str:
    """Content hash of the cell directions of some levels: icons record it, so icons rendered from
    another grid are refused by render and reported stale by ``atlas verify``."""
    digest = hashlib.sha256()
    for n, level in sorted(cells.items()):
        digest.update(f"{n}:{len(level)}".encode())
        digest.update(np.ascontiguousarray(level.direction, np.float32).tobytes())
    return digest.hexdigest()[:16]


def grid_levels(store: RowStore) -> list[int]:
    """Cells per side of every stored level, ascending."""
    return sorted(int(n) for n in _complete_group(store, GRID, "grid", "grid").attrs["levels"])


def grid_attrs(store: RowStore) -> dict[str, Any]:
    return dict(_complete_group(store, GRID, "grid", "grid").attrs)


def read_level(store: RowStore, n: int, with_attribution: bool = True) -> CellLevel:
    """One level; ``with_attribution=False`` skips the dense ``[K, classes]`` mean attribution."""
    group = _complete_group(store, GRID, "grid", "grid")
    levels = [int(v) for v in group.attrs["levels"]]
    if n not in levels:
        raise AtlasError(
            f"store {getattr(store, 'path', '')} has no grid level {n}; choose one of: {', '.join(map(str, levels))}"
        )
    layout_id = group.attrs.get("layout_id")
    if has_layout(store) and layout_id != _existing_group(store, LAYOUT).attrs.get("layout_id"):
        raise AtlasError(
            f"store {getattr(store, 'path', '')}: the grid was binned from an older layout; run `atlas grid` again"
        )
    sub = group[f"level_{n}"]
    data = {
        name: read(sub[name]) for name in _LEVEL_ARRAYS if name in sub and (with_attribution or name != "attribution")
    }
    return CellLevel(
        n=n,
        attribution=data.pop("attribution", None),
        class_names=list(group.attrs.get("class_names", [])),
        attrs=dict(sub.attrs),
        **data,
    )


# --------------------------------------------------------------------------------- whitening
@dataclass
class Whitening:
    """``matrix`` S (whiten a direction v as ``v @ S``) and the second moment it inverts."""

    matrix: NDArray[np.float64]
    second_moment: NDArray[np.float64]
    attrs: dict[str, Any] = field(default_factory=dict)


def write_whitening(store: RowStore, whitening: Whitening) -> None:
    c = whitening.matrix.shape[0]
    with _fresh_group(store, WHITENING) as group:
        _put(group, "matrix", whitening.matrix.astype(np.float64), c)
        _put(group, "second_moment", whitening.second_moment.astype(np.float64), c)
        group.attrs.update(json_ready({**whitening.attrs, "channels": c, "complete": True}))


def read_whitening(store: RowStore) -> Whitening:
    group = _complete_group(store, WHITENING, "whitening matrix", "grid")
    return Whitening(
        matrix=np.asarray(read(group["matrix"]), dtype=np.float64),
        second_moment=np.asarray(read(group["second_moment"]), dtype=np.float64),
        attrs=dict(group.attrs),
    )


# --------------------------------------------------------------------------------- chunk reading
@dataclass(frozen=True)
class RowBlock:
    """One chunk of rows ``[start, stop)`` of the store; ``arrays`` are in their stored dtypes."""

    index: int
    start: int
    stop: int
    arrays: tuple[NDArray[Any], ...]


def iter_row_blocks(
    arrays: list[Any],
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[RowBlock]:
    """Stream row-aligned dask arrays chunk by chunk (the first array's row chunks), one ahead.

    Only two blocks are in memory at a time, whatever the store's size. The next block is read
    in a background thread while the caller works on the current one (zarr decompression
    releases the GIL), which hides most of the read time on a 2-core machine. ``progress`` is
    called as ``progress(blocks_done, n_blocks)`` after each block is handed out.
    """
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.concatenate([[0], np.cumsum(arrays[0].chunks[0])]).astype(np.int64)
    n_blocks = len(bounds) - 1

    def load(b: int) -> RowBlock:
        start, stop = int(bounds[b]), int(bounds[b + 1])
        data = tuple(np.asarray(a[start:stop].compute(scheduler="synchronous")) for a in arrays)
        return RowBlock(b, start, stop, data)

    if n_blocks == 0:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, 0)
        for b in range(n_blocks):
            block = pending.result()
            if b + 1 < n_blocks:
                pending = pool.submit(load, b + 1)
            yield block
            if progress is not None:
                progress(b + 1, n_blocks)
