"""How store/ opens, creates and reads zarr: checksummed chunks, every chunk on disk, one-line errors.

- **Checksums.** Every array is created with zarr v3's ``crc32c`` codec after the default zstd
  compressor (zarr v3 core spec, codec ``crc32c``): each chunk file ends with the CRC-32C
  (Castagnoli) of the compressed bytes before it, so a flipped bit, a truncated file or a chunk
  overwritten by something else fails to decode instead of reading as wrong numbers. The codec
  is part of each array's ``zarr.json``, so any zarr v3 reader checks it too.
- **Every chunk written.** zarr skips chunks equal to the fill value by default and reads a missing
  chunk file as the fill value. Arrays are written with ``write_empty_chunks`` on, so a chunk
  file missing from a unit marked done is corruption that ``atlas verify`` reports, not zeros.
- **Guarded writes.** :class:`GuardedLocalStore` (zarr's LocalStore, which already writes each
  chunk to a temporary file and renames it into place) turns a refused write (disk full,
  read-only, permissions) into one :class:`~store.errors.StorageError` line naming the file, and
  refuses to write into a group folder that another process replaced since this one opened it.
- **Checked reads.** :func:`read` and :func:`dask_array` turn a failed checksum into one
  :class:`~store.errors.ChecksumError` line naming the array, the chunk, its file and the command
  that rewrites it (:func:`rewrite_command`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import google_crc32c
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfigParams
from zarr.storage import LocalStore

from store.errors import AtlasError, ChecksumError, storage_error

#: per-array runtime setting for every write: chunks equal to the fill value are stored too
WRITE_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}
#: how a group is opened: read only, read and write, or created anew (zarr's access modes)
Mode = Literal["r", "r+", "a", "w", "w-"]
_checksums = True


def compressors() -> list[Any]:
    """zarr's default compressor (zstd level 0), then the CRC-32C checksum of the compressed chunk."""
    return [ZstdCodec(level=0), Crc32cCodec()] if _checksums else [ZstdCodec(level=0)]


@contextlib.contextmanager
def without_checksums() -> Iterator[None]:
    """Create arrays without the checksum codec inside this block: only for the collect benchmark's
    baseline (bench/collect.py measures what the checksums cost); never for a real store."""
    global _checksums
    old, _checksums = _checksums, False
    try:
        yield
    finally:
        _checksums = old


class GuardedLocalStore(LocalStore):
    """LocalStore whose refused writes are one-line errors, and which never writes into a replaced folder."""

    _inode: int | None = None

    def _check_same_folder(self) -> None:
        try:
            inode = os.stat(self.root).st_ino
        except FileNotFoundError:
            inode = None
        if self._inode is None and inode is not None:
            self._inode = inode
        elif inode != self._inode:
            raise AtlasError(
                f"{self.root} was replaced or removed by another process while this one was writing "
                "it; rerun the command (the other process's output is complete and kept)"
            )

    async def _set(self, key: str, value: Any, exclusive: bool = False) -> None:
        if not self.read_only:
            self._check_same_folder()
        try:
            await super()._set(key, value, exclusive)
        except FileExistsError:
            raise
        except OSError as exc:
            raise storage_error(exc, self.root / key) from None

    async def delete(self, key: str) -> None:
        try:
            await super().delete(key)
        except OSError as exc:
            raise storage_error(exc, self.root / key) from None

    async def delete_dir(self, prefix: str) -> None:
        try:
            await super().delete_dir(prefix)
        except OSError as exc:
            raise storage_error(exc, self.root / prefix) from None

    async def clear(self) -> None:
        try:
            await super().clear()
        except OSError as exc:
            raise storage_error(exc, self.root) from None
        self._inode = None

    async def _open(self, *, mode: Any = None) -> None:
        try:
            await super()._open(mode=mode)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, self.root) from None


def open_group(path: str | Path, mode: Mode = "r") -> zarr.Group:
    """The zarr group at ``path`` through :class:`GuardedLocalStore` (``mode``: r, r+, w)."""
    store = GuardedLocalStore(Path(path), read_only=(mode == "r"))
    return zarr.open_group(store=store, mode=mode)


def create_array(group: zarr.Group, name: str, *, data: np.ndarray | None = None, **kwargs: Any) -> zarr.Array[Any]:
    """``group.create_array`` with the checksum codec and every chunk written (see the module docstring)."""
    return group.create_array(name, data=data, compressors=compressors(), config=WRITE_CONFIG, **kwargs)


def read_child(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` of ``group``; a group or nothing there is one line naming both."""
    member = group.get(name)
    if not isinstance(member, zarr.Array):
        raise _not_there(group, name, member, "an array")
    return member


def read_group(group: zarr.Group, name: str) -> zarr.Group:
    """The sub-group ``name`` of ``group``; an array or nothing there is one line naming both."""
    member = group.get(name)
    if not isinstance(member, zarr.Group):
        raise _not_there(group, name, member, "a group")
    return member


def _not_there(group: zarr.Group, name: str, member: object, wanted: str) -> AtlasError:
    found = "missing" if member is None else f"not {wanted}"
    return AtlasError(f"{_root(group)}: {name} is {found}; the group is damaged: run `atlas verify` on it")


def _root(node: zarr.Group | zarr.Array[Any]) -> str:
    root = getattr(node.store, "root", None)
    where = Path(str(root)) / node.path if root is not None else Path(node.path or "/")
    return str(where)


def writable(array: zarr.Array[Any]) -> zarr.Array[Any]:
    """``array`` set up for writing: chunks equal to the fill value are stored too."""
    return array.with_config(WRITE_CONFIG)


# --------------------------------------------------------------------------------- chunks
def chunk_grid(array: zarr.Array[Any]) -> tuple[int, ...]:
    """Chunks per axis."""
    return tuple(-(-s // c) if s else 0 for s, c in zip(array.shape, array.chunks))


def chunk_file(array: zarr.Array[Any], coords: tuple[int, ...]) -> Path | None:
    """Where chunk ``coords`` of ``array`` lives on disk (None for a store that is not a local folder)."""
    root = getattr(array.store, "root", None)
    if root is None:
        return None
    key = array.metadata.encode_chunk_key(tuple(int(c) for c in coords))
    return Path(root) / array.path / key


def has_checksum(array: zarr.Array[Any]) -> bool:
    """Whether every chunk of ``array`` ends with a CRC-32C (the codec is the last one of the chain)."""
    codecs: tuple[object, ...] = tuple(getattr(array.metadata, "codecs", ()))
    return bool(codecs) and isinstance(codecs[-1], Crc32cCodec)


def check_chunk(array: zarr.Array[Any], coords: tuple[int, ...]) -> str | None:
    """None if chunk ``coords`` is on disk and intact; else ``"missing"`` or why it is corrupt.

    With the checksum codec the CRC is checked on the raw file bytes (no decompression); without
    it (a store from before checksums, or from another tool) the chunk is decoded instead.
    """
    path = chunk_file(array, coords)
    if path is not None and has_checksum(array):
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return "missing"
        if len(raw) < 4 or np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
            return f"fails its checksum ({len(raw)} bytes on disk: changed or truncated)"
        return None
    if path is not None and not path.exists():
        return "missing"
    try:
        array.get_block_selection(tuple(int(c) for c in coords))
    except Exception as exc:
        return f"cannot be decoded ({type(exc).__name__})"
    return None


def rewrite_command(group_root: str | Path) -> str:
    """The command that rewrites a damaged chunk of the group at ``group_root``.

    Whole groups (layout, grid, whitening) are rewritten by rerunning their stage. Groups written
    in units (the collect store's blocks, icon batches, a subset's rows) keep their done units, so
    ``atlas verify --repair`` first marks the damaged units not done.
    """
    root = Path(group_root)
    parent = root.parent.name
    stage = "collect"
    for suffix, name in (
        (".layout.zarr", "reduce"),
        (".grid.zarr", "grid"),
        (".whitening.zarr", "grid"),
        (".icons.zarr", "render"),
        (".rows.zarr", "rows"),
    ):
        if root.name.endswith(suffix):
            stage = name
    if parent.endswith(".classes") or parent.endswith(".compare"):
        command = "atlas classes" if parent.endswith(".classes") else "atlas compare"
        return command if stage in ("reduce", "grid") else f"atlas verify --repair, then {command}"
    if stage in ("reduce", "grid"):
        return f"atlas {stage}"
    return f"atlas verify --repair, then atlas {stage}"


def _axis0_range(selection: Any, n: int) -> tuple[int, int]:
    """The rows a selection touches (conservatively: all of them when it is not a plain slice/index)."""
    first = selection[0] if isinstance(selection, tuple) and selection else selection
    if isinstance(first, slice):
        start, stop, _ = first.indices(n)
        return start, max(start, stop)
    if isinstance(first, (int, np.integer)):
        i = int(first) % n if n else 0
        return i, i + 1
    if isinstance(first, np.ndarray) and first.size and first.dtype.kind in "iu":
        return int(first.min()), int(first.max()) + 1
    return 0, n


def bad_chunks(array: zarr.Array[Any], rows: tuple[int, int] | None = None) -> list[tuple[tuple[int, ...], str]]:
    """Every damaged chunk of ``array`` (restricted to chunks over rows ``[start, stop)``), with why."""
    grid = chunk_grid(array)
    if not grid or 0 in grid:
        return []
    axes = [range(g) for g in grid]
    if rows is not None:
        step = array.chunks[0]
        axes[0] = range(rows[0] // step, min(grid[0], -(-rows[1] // step)))
    out = []
    for coords in itertools.product(*axes):
        problem = check_chunk(array, coords)
        if problem is not None and problem != "missing":
            out.append((coords, problem))
    return out


def _is_checksum_failure(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and "checksum" in str(exc).lower()


def checksum_error(array: zarr.Array[Any], rows: tuple[int, int] | None = None) -> AtlasError:
    """The one-line error for a failed checksum of ``array`` (the first damaged chunk is named)."""
    root = Path(getattr(array.store, "root", "")) if getattr(array.store, "root", None) else Path("?")
    found = bad_chunks(array, rows) or bad_chunks(array)
    where = f"{root}: array {array.path}"
    if not found:
        return ChecksumError(
            f"{where}: a chunk failed its checksum while being read; run `atlas verify` "
            f"to find it, then `{rewrite_command(root)}`"
        )
    coords, problem = found[0]
    more = f" (and {len(found) - 1} more chunks)" if len(found) > 1 else ""
    return ChecksumError(
        f"{where}: chunk {'.'.join(map(str, coords))} ({chunk_file(array, coords)}) {problem}{more}; "
        f"rewrite it with `{rewrite_command(root)}`"
    )


def read(array: zarr.Array[Any], selection: Any = Ellipsis) -> np.ndarray:
    """``array[selection]`` as numpy; a failed checksum is a :class:`ChecksumError`, never wrong numbers."""
    try:
        return np.asarray(array[selection])
    except ValueError as exc:
        if not _is_checksum_failure(exc):
            raise
        raise checksum_error(array, _axis0_range(selection, array.shape[0] if array.shape else 0)) from None


def read_rows(array: zarr.Array[Any], rows: np.ndarray) -> np.ndarray:
    """``array.oindex[rows]`` (rows along the first axis), checked like :func:`read`."""
    rows = np.asarray(rows, dtype=np.int64)
    try:
        return np.asarray(array.oindex[rows])
    except ValueError as exc:
        if not _is_checksum_failure(exc):
            raise
        raise checksum_error(array, _axis0_range(rows, array.shape[0])) from None


class _CheckedChunks:
    """What ``dask.array.from_array`` needs of an array, reading through :func:`read`."""

    def __init__(self, array: zarr.Array[Any]) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, selection: Any) -> np.ndarray:
        return read(self.array, selection)


def dask_array(array: zarr.Array[Any]) -> da.Array:
    """``array`` as a dask array with its own chunks, every chunk read through :func:`read`."""
    checked: da.Array = da.from_array(  # type: ignore[no-untyped-call]  # dask ships no annotations
        _CheckedChunks(array),
        chunks=array.chunks,
        name=f"checked-zarr-{uuid.uuid4().hex}",
        asarray=False,
        lock=False,
        fancy=False,
        meta=np.empty((0,) * array.ndim, array.dtype),
    )
    return checked
