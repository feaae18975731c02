"""Publish a folder in one step, delete one without leaving half of it, and find what killed runs left.

Every output that a stage writes as a whole (the layout, grid and whitening groups, a new icons or
collect store, a subset's rows, a staged export level) is built in a hidden sibling folder,
``.<name>.tmp-<host>-<pid>-<random>``, and then *published*: under a file lock beside the output,
the old folder (if any) is renamed away to ``.<name>.trash-...`` and the new one renamed into
place, then the old one is deleted. A rename within one filesystem is atomic (POSIX ``rename(2)``),
so a reader finds either the previous complete output, the new complete one, or (for the
instant between the two renames, or after a kill exactly there) none at all, which every reader
reports as "run the stage"; never a mixture. Two processes writing the same output write two
private folders and publish one after the other; the last one wins whole.

A folder is deleted the same way: renamed away first, then removed, so a kill half way through
the removal leaves a hidden trash folder, never a group with some of its chunks missing.

A run killed by SIGKILL leaves its hidden folders behind. They are never read; the next write of
the same output removes the ones whose process is gone (same host, dead pid), and
``atlas verify --repair`` removes the rest it can prove dead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from store.errors import StorageError, storage_error

HOST = socket.gethostname()
_ASIDE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|trash)-(?P<host>.+)-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})$")


def aside_path(final: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``final`` private to this process (``kind``: tmp | trash)."""
    return final.with_name(f".{final.name}.{kind}-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, folder) from None


@contextlib.contextmanager
def held_lock(lock_file: str | Path) -> Iterator[None]:
    """Hold the file lock ``lock_file``; a folder that cannot take it (read-only, full) is a one-line
    :class:`~store.errors.StorageError`."""
    lock = FileLock(str(lock_file))
    try:
        lock.acquire()
    except OSError as exc:
        raise storage_error(exc, lock.lock_file) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def lock_for(final: str | Path) -> Iterator[None]:
    """Hold the lock beside ``final`` (``.<final name>.lock``) that creating and publishing it take.

    The folder it lives in is created first; a folder that cannot take the lock file (read-only,
    full) is a one-line :class:`~store.errors.StorageError`.
    """
    final = Path(final)
    _mkdir(final.parent)
    with held_lock(final.with_name(f".{final.name}.lock")):
        yield


@contextlib.contextmanager
def write_aside(final: str | Path, *, locked: bool = False) -> Iterator[Path]:
    """Yield a private folder to build ``final`` in; publish it when the block ends without error.

    On an exception the private folder is removed (a full disk gets its space back) and the
    previous ``final`` is left as it was. ``locked``: the caller already holds :func:`lock_for`.
    """
    final = Path(final)
    _mkdir(final.parent)
    clean_leftovers(final)
    tmp = aside_path(final, "tmp")
    try:
        yield tmp
    except StorageError as exc:  # name the output the user knows, not the private folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(str(exc).replace(str(tmp), str(final))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, final, locked=locked)


def publish(tmp: Path, final: Path, *, locked: bool = False) -> None:
    """Replace ``final`` by the complete folder ``tmp`` (two renames under the lock)."""
    trash = aside_path(final, "trash")
    try:
        with contextlib.nullcontext() if locked else lock_for(final):
            moved = False
            if final.exists():
                os.rename(final, trash)
                moved = True
            try:
                os.rename(tmp, final)
            except OSError:
                if moved:
                    os.rename(trash, final)
                raise
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(exc, final) from None
    shutil.rmtree(trash, ignore_errors=True)


def remove_tree(path: str | Path) -> None:
    """Delete the folder ``path``: renamed away first, so it is never seen half deleted."""
    path = Path(path)
    trash = aside_path(path, "trash")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise storage_error(exc, path) from None
    shutil.rmtree(trash, ignore_errors=True)


@dataclass(frozen=True)
class Leftover:
    """A hidden folder or partial file a run left behind."""

    path: Path
    owner: str  # "<host> pid <pid>" or "unknown"
    removable: bool  # provably abandoned: this host, and its process is gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover(path: Path) -> Leftover | None:
    """``path`` as a :class:`Leftover` if it is one of our private folders, else None."""
    m = _ASIDE.match(path.name)
    if m is None:
        return None
    host, pid = m["host"], int(m["pid"])
    return Leftover(path, f"{host} pid {pid}", host == HOST and not _alive(pid))


def leftovers_beside(final: Path) -> list[Leftover]:
    """The private folders of ``final`` (its hidden tmp/trash siblings)."""
    if not final.parent.is_dir():
        return []
    found = (leftover(p) for p in final.parent.glob(f".{final.name}.*-*"))
    return sorted((f for f in found if f is not None), key=lambda f: f.path.name)


def remove_own(final: Path) -> None:
    """Remove this process's private folders beside ``final`` (after an error in this process)."""
    for item in leftovers_beside(final):
        if item.owner == f"{HOST} pid {os.getpid()}":
            shutil.rmtree(item.path, ignore_errors=True)


def clean_leftovers(final: Path) -> list[Path]:
    """Remove ``final``'s abandoned private folders; return what was removed."""
    removed = []
    for item in leftovers_beside(final):
        if item.removable:
            shutil.rmtree(item.path, ignore_errors=True)
            removed.append(item.path)
    return removed
