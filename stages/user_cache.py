"""The project's on-disk caches of generated code (UMAP's numba code, inductor's compiled render network).

Why one module: both caches live under the same user cache folder, fall back to the same per-user temp
folder when it is not writable, and must be probed the same way (create it, write a file), so a read-only
home or a full disk gives a warning and a slower run, never a crash (stages/reduce/numba_cache.py,
stages/render/compile_cache.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

APP = "activation-atlas"


def writable(path: Path) -> bool:
    """Whether ``path`` exists or can be made, and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def temp_root() -> Path:
    """``<temp>/activation-atlas-<user>``: the fallback when the user cache folder is not writable."""
    user = os.environ.get("USER") or str(os.getuid() if hasattr(os, "getuid") else "user")
    return Path(tempfile.gettempdir()) / f"{APP}-{user}"


def first_writable(*candidates: Path) -> Path | None:
    """The first of ``candidates`` that is writable, else None."""
    return next((c for c in candidates if writable(c)), None)
