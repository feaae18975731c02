"""The static web viewer that ships inside every exported atlas folder.

The viewer (``stages/tiles/viewer/``: ``index.html``, ``viewer/*.js``, ``viewer/viewer.css`` and the
vendored OpenSeadragon 6.1.1 with its LICENSE) is package data, so ``pip install`` carries it and an
export needs nothing from the internet: the folder opens from ``file://`` or ``atlas serve``
(docs/export_format.md, docs/viewer.md).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from store.atomic import aside_path, write_aside
from store.errors import AtlasError

log = logging.getLogger(__name__)

#: where the viewer's files live inside the installed package
VIEWER_SOURCE = Path(__file__).with_name("viewer")
#: files an export must have for the page to work (relative to the export folder)
REQUIRED_FILES = (
    "index.html",
    "viewer/viewer.js",
    "viewer/viewer.css",
    "viewer/openseadragon/openseadragon.min.js",
    "viewer/openseadragon/LICENSE.txt",
)


def install_viewer(out_dir: str | Path) -> Path:
    """Copy ``index.html`` and ``viewer/`` into the export folder ``out_dir``; return index.html.

    The ``viewer/`` folder is replaced as a whole, so a re-export never mixes files of two viewer
    versions; everything else in ``out_dir`` (tiles, cells, atlases.js) is left alone.
    """
    missing = [name for name in REQUIRED_FILES if not (VIEWER_SOURCE / name).is_file()]
    if missing:
        raise AtlasError(
            f"the installed package lacks viewer files {missing} under {VIEWER_SOURCE}; "
            "reinstall activation-atlas (pip install -e .)"
        )
    out = Path(out_dir)
    # copied aside and renamed into place (store/atomic.py): a kill or a second export at the same
    # time never leaves a half-copied viewer
    with write_aside(out / "viewer") as tmp:
        shutil.copytree(VIEWER_SOURCE / "viewer", tmp, ignore=shutil.ignore_patterns("*.map", ".*"))
    index = out / "index.html"
    partial = aside_path(index)
    shutil.copyfile(VIEWER_SOURCE / "index.html", partial)
    os.replace(partial, index)
    log.info("viewer installed in %s", out)
    return index
