"""Checksums of plain files: the exported atlas folder's tiles and JSON (``checksums.json``).

zarr groups carry a CRC-32C per chunk (store/zarrio.py); an exported atlas is a folder of plain
files a web server hands out, so each atlas folder gets a manifest instead, written last when the
folder is assembled: the sha256 and size of every file in it, and what the atlas was made from
(``inputs``: the icons group and its identity), so ``atlas verify`` can name a changed, truncated
or missing file, and an export made from icons that have since changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "checksums.json"
FORMAT = "activation-atlas-checksums"
VERSION = 1
_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: str | Path, inputs: dict[str, Any]) -> Path:
    """Hash every file under ``folder`` into ``folder/checksums.json`` (written aside, then renamed)."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in _files(folder)
    }
    manifest = {"format": FORMAT, "version": VERSION, "inputs": inputs, "files": files}
    target = folder / MANIFEST
    tmp = target.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=0, sort_keys=True))
    os.replace(tmp, target)
    return target


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder``; None when there is none; ValueError when it is not valid JSON of ours."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT or "files" not in data:
        raise ValueError(f"{path} is not a {FORMAT} manifest")
    return data


def check_manifest(folder: str | Path, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(relative path, problem)]`` for every listed file that is missing, resized or changed."""
    folder = Path(folder)
    out = []
    for rel, want in sorted(manifest["files"].items()):
        path = folder / rel
        if not path.is_file():
            out.append((rel, "missing"))
            continue
        size = path.stat().st_size
        if size != want["size"]:
            out.append((rel, f"is {size} bytes, was written as {want['size']} (truncated or changed)"))
        elif file_sha256(path) != want["sha256"]:
            out.append((rel, "fails its sha256 (the bytes changed since the export)"))
    return out
