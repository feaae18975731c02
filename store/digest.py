"""Content digests of zarr groups: one sha256 per array, independent of where the group lives.

Used to prove that two runs wrote the same numbers (a refactor that must not change a single
output, two shards against one run) without keeping a copy of either. Only array *contents*
count: attributes hold timestamps and absolute paths, which legitimately differ between runs.
String arrays (image paths) are digested by their file names alone, for the same reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import zarr


def _array_digest(array: zarr.Array[Any]) -> str:
    data = np.asarray(array[...])
    h = hashlib.sha256()
    h.update(f"{data.dtype.str if data.dtype.kind not in 'OUT' else 'str'}|{data.shape}|".encode())
    if data.dtype.kind in "OUT":
        for item in data.reshape(-1):
            h.update(Path(str(item)).name.encode() + b"\0")
    else:
        h.update(np.ascontiguousarray(data).tobytes())
    return h.hexdigest()


def group_digests(path: str | Path) -> dict[str, str]:
    """``{array path inside the group: sha256 of its contents}`` for every array below ``path``."""
    group = zarr.open_group(str(path), mode="r")
    out: dict[str, str] = {}

    def walk(g: zarr.Group, prefix: str) -> None:
        for name, member in sorted(g.members(), key=lambda kv: kv[0]):
            key = f"{prefix}{name}"
            if isinstance(member, zarr.Group):
                walk(member, key + "/")
            else:
                out[key] = _array_digest(member)

    walk(group, "")
    return out
