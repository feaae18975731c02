"""Where ``torch.compile`` keeps its generated code, so a new process does not compile again.

Why: ``render.compile`` compiles the network cut at the layer (forward and backward) on the first
step of every input shape; on the demo layer that is a minute or more of CPU. inductor keeps what it
generates on disk (its FX-graph cache and AOT-autograd cache, both on by default) under
``$TORCHINDUCTOR_CACHE_DIR``, by default a folder under ``/tmp`` named after the user, which a reboot
or a container restart empties. As for UMAP's numba code (:mod:`stages.reduce.numba_cache`), the
folder is:

1. ``$TORCHINDUCTOR_CACHE_DIR`` when the user set it (inductor's own variable);
2. else ``<user cache dir>/activation-atlas/inductor`` (``~/.cache/activation-atlas/inductor`` on
   Linux), next to the numba cache;
3. else, when that is not writable, ``<temp>/activation-atlas-<user>/inductor``; when neither is,
   inductor's own default is left alone (a warning says so).

inductor keys each entry by the graph, the input shapes and strides, torch's version and the
compiler, so anything that changes the code recompiles instead of loading stale code. The cache
holds generated code, not results: a hit gives the same kernels as a compile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stages.user_cache import APP, first_writable, temp_root

log = logging.getLogger(__name__)

ENV = "TORCHINDUCTOR_CACHE_DIR"


def user_cache_root() -> Path:
    """``<user cache dir>/activation-atlas``: ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, the platform's elsewhere."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / APP / "Cache"
    if os.uname().sysname == "Darwin":
        return Path.home() / "Library" / "Caches" / APP
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / APP


def cache_dir(name: str = "inductor") -> Path | None:
    """``<user cache dir>/activation-atlas/<name>``, else the temp fallback, else ``None`` (nothing writable)."""
    return first_writable(user_cache_root() / name, temp_root() / name)


def _user_choice() -> str | None:
    """``$TORCHINDUCTOR_CACHE_DIR`` as the user set it: not inductor's own default, which inductor writes into
    the variable the first time it looks for its folder (any ``torch._dynamo`` / ``torch._inductor`` use)."""
    value = os.environ.get(ENV)
    if not value:
        return None
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: trust the variable
        return value
    return None if value == default_cache_dir() else value


def configure() -> Path | None:
    """Point inductor's on-disk cache at the project's folder (the user's ``$TORCHINDUCTOR_CACHE_DIR`` wins)."""
    user = _user_choice()
    if user:
        return Path(user).expanduser()
    folder = cache_dir()
    if folder is None:
        log.warning("compile cache: no writable cache folder (set %s); inductor uses its default", ENV)
        return None
    os.environ[ENV] = str(folder)  # inductor reads the variable whenever it needs the folder
    return folder
