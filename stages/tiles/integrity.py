"""Crash and concurrency safety of an export, and the checksums an atlas folder carries.

:mod:`stages.tiles.export` stages every level in a folder private to its process (hidden, beside
the export's staging folder, named by host and pid: store/atomic.py) and publishes it into
``.<slug>.staging/level_<N>/`` under the atlas's lock, so two tiles runs (or shards) never write
into the same folder and the assembling run never moves a half-written level. A killed run's
private folders are never read and are removed by the next run on that host once its process is
gone. When an atlas folder is assembled, :func:`write_checksums` records the sha256 of every file
in it and the icons it was made from (``checksums.json``, :mod:`store.files`), which
``atlas verify`` checks.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from store.atomic import aside_path, clean_leftovers, held_lock, publish, remove_own
from store.errors import storage_error
from store.files import write_manifest
from store.icons import IconStore


def _level_name(staging: Path, n: int) -> Path:
    """The name the private folders of level ``n`` are derived from (``<out>/.<slug>.staging.level_<n>.tmp-...``)."""
    return staging.parent / f"{staging.name.lstrip('.')}.level_{n}"


@contextlib.contextmanager
def atlas_lock(staging: Path) -> Iterator[None]:
    """The lock of one atlas in the export folder (``<out>/.<slug>.lock``), held to publish and assemble."""
    with held_lock(staging.with_name(staging.name.removesuffix(".staging") + ".lock")):
        yield


def level_tmp(staging: Path, n: int) -> Path:
    """A new folder private to this process to stage level ``n`` in (abandoned ones are removed first)."""
    name = _level_name(staging, n)
    clean_leftovers(name)
    tmp = aside_path(name)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise storage_error(exc, tmp) from None
    return tmp


def publish_level(tmp: Path, staging: Path, n: int) -> None:
    """Move the complete private folder ``tmp`` to ``staging/level_<n>`` (replacing an equal one) under the lock."""
    with atlas_lock(staging):
        staging.mkdir(parents=True, exist_ok=True)  # the assembling run removes it
        publish(tmp, staging / f"level_{n}", locked=True)


def drop_private(staging: Path, levels: list[int]) -> None:
    """Remove this process's private level folders (after an error in this process)."""
    for n in levels:
        remove_own(_level_name(staging, n))


def write_state(path: Path, atlas_fp: str) -> None:
    """The fingerprint of the atlas now in place, replaced whole (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(atlas_fp))
    os.replace(tmp, path)


def made_from(store: Any) -> dict[str, Any]:
    """What an atlas folder is made from: the icons group and its identity (for ``atlas verify``)."""
    if store is None or not hasattr(store, "derived_path"):
        return {}
    path = Path(store.derived_path("icons"))
    if not IconStore.exists(path):
        return {}
    return {"icons": str(path), **IconStore.open(path).record.made_from}


def write_checksums(folder: Path, source: Any) -> None:
    """``folder/checksums.json``: every file's sha256 and size, and what the atlas was made from."""
    write_manifest(
        folder, {"fingerprint": getattr(source, "fingerprint", ""), **made_from(getattr(source, "store", None))}
    )
