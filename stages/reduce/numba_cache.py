"""A persistent compile cache for UMAP's numba code, so a new process does not compile it again.

Why: umap-learn and pynndescent are numba code, compiled on first call in every process. On
the demo store (14,508 rows) compiling took ~50 of the ~65 CPU-seconds of the first UMAP fit in
a process; every ``atlas reduce`` / ``dvc repro`` / class-atlas process paid it again. numba can
keep compiled machine code on disk (``cache=True``), but most of umap-learn's functions are
declared without it, so pointing ``NUMBA_CACHE_DIR`` somewhere alone does not help.

What :func:`prepare_umap` does, before anything of umap is compiled:

1. the cache folder: ``$NUMBA_CACHE_DIR`` when the user set it (numba's own variable, so it
   also moves the cache of every other numba library), else ``<user cache dir>/activation-atlas/
   numba`` (``~/.cache/activation-atlas/numba`` on Linux, ``~/Library/Caches/activation-atlas/
   numba`` on macOS, ``%LOCALAPPDATA%\\activation-atlas\\Cache\\numba`` on Windows). It is the
   user's, not the installation's, so a read-only install (a system site-packages, a container
   image) caches all the same. When that folder is not writable the temporary folder is tried;
   when neither is, nothing is cached and UMAP compiles as before (a warning says so).
2. after importing umap (and with it pynndescent), turns numba's disk cache on for every
   jitted function of those two packages that was declared without ``cache=True`` (numba's
   ``Dispatcher.enable_caching``, what ``cache=True`` calls). numba keys each entry by the
   source file's content hash, the function's signature, the CPU and numba's version, so an
   upgrade of any of them recompiles instead of loading stale code; results are the same
   machine code, so layouts are bit-identical with or without the cache.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from stages.user_cache import APP, first_writable, temp_root

log = logging.getLogger(__name__)

ENV = "NUMBA_CACHE_DIR"
PACKAGES = ("umap", "pynndescent")


def default_cache_dir() -> Path:
    """``<user cache dir>/activation-atlas/numba`` (the platform's convention, as numba computes it)."""
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(APP, appauthor=False).user_cache_dir) / "numba"


def cache_dir() -> Path | None:
    """The folder numba's cache goes to: the user's ``$NUMBA_CACHE_DIR``, else the default, else a temp folder."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return first_writable(default_cache_dir(), temp_root() / "numba")


def configure() -> Path | None:
    """Point numba's cache at :func:`cache_dir` (before or after numba was imported); returns it."""
    folder = cache_dir()
    if folder is None:
        log.warning("numba cache: no writable cache folder (set %s); UMAP compiles in every process", ENV)
        return None
    os.environ[ENV] = str(folder)
    numba_config: Any = sys.modules.get("numba.core.config")  # its settings are set at run time
    if numba_config is not None:  # already imported: numba read the variable then; set it where it looks now
        numba_config.CACHE_DIR = str(folder)
    return folder


def enable_caching(modules: list[ModuleType]) -> int:
    """Turn numba's disk cache on for the not-yet-compiled jitted functions of ``modules``; how many."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for module in modules:
        for value in list(vars(module).values()):
            if not isinstance(value, Dispatcher):
                continue
            jitted: Any = value  # numba's stubs do not declare the dispatcher's _cache
            if isinstance(jitted._cache, NullCache) and not jitted.overloads:
                jitted.enable_caching()
                enabled += 1
    return enabled


def library_modules(packages: tuple[str, ...] = PACKAGES) -> list[ModuleType]:
    """The imported modules of ``packages`` (their submodules included)."""
    return [m for name, m in list(sys.modules.items()) if m is not None and name.split(".")[0] in packages]


def prepare_umap() -> ModuleType:
    """``import umap`` with its numba code cached on disk (see the module docstring)."""
    folder = configure()
    import umap

    if folder is not None:
        n = enable_caching(library_modules())
        log.debug("numba cache %s: caching %d more umap/pynndescent functions", folder, n)
    return umap
