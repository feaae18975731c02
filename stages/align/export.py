"""Export an aligned atlas: both sides as ordinary atlases plus the synced side-by-side page.

``<data.atlas>/align/<name>/`` holds side ``a/`` and side ``b/``, each written by the tiles exporter
(:func:`stages.tiles.export.export_atlas`, docs/export_format.md: DZI levels, ``cells.json``, dataset
examples, mini-map layout), their shared ``atlases.json`` (the index names the pair, so the two
models do not replace each other's entry), ``align.json`` with its ``.js`` twin (the held-out R^2
of the linear maps, the per-level agreement summary and the per-cell agreement arrays the page
shows), the viewer files, and ``aligned.html``: the two atlases side by side, in sync
(stages/tiles/viewer/viewer/aligned.js; docs/viewer.md).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from stages.sections import AlignSection
from stages.tiles.export import export_atlas, write_json_twin
from stages.tiles.source import AtlasSource, store_minimap
from stages.tiles.viewer_assets import VIEWER_SOURCE, install_viewer
from store import derived
from store.atomic import aside_path
from store.icons import IconStore
from store.subset import SubsetStore

PAGE = "aligned.html"


def aligned_folder(config: AlignSection, name: str) -> Path:
    """``<data.atlas>/align/<name>/``."""
    return Path(config.data.atlas) / "align" / name


def _source(config: AlignSection, key: str, subset: SubsetStore, report: dict[str, Any]) -> AtlasSource:
    icons = IconStore.open(subset.derived_path("icons"))
    side = report["sides"][key]
    other = report["sides"]["b" if key == "a" else "a"]
    a, b = report["sides"]["a"], report["sides"]["b"]
    return AtlasSource(
        id=key,
        kind="align",
        title=f"{side['label']}  (aligned with {other['label']})",
        levels=list(config.grid.levels),
        cell_level=lambda n: derived.read_level(subset, n, with_attribution=False),
        icon_level=icons.read_level,
        minimap=lambda k, seed: store_minimap(subset, k, seed),
        class_names=list(subset.class_names),
        model={"name": f"{a['model']} | {b['model']}", "layer": f"{a['layer']} | {b['layer']}"},
        icon_px=icons.size,
        store=subset,
        index={"side": key, "model": side["model"], "layer": side["layer"]},
        fingerprint=icons.record.export_fingerprint("subset", subset.path),
    )


def install_page(out: Path) -> Path:
    """Copy ``aligned.html`` next to the viewer files (replaced whole, never half-written)."""
    target = out / PAGE
    partial = aside_path(target)
    shutil.copyfile(VIEWER_SOURCE / PAGE, partial)
    os.replace(partial, target)
    return target


def export_aligned(config: AlignSection, name: str, subsets: dict[str, SubsetStore], report: dict[str, Any]) -> Path:
    """Write both sides, ``align.json``/``.js`` and the synced page into :func:`aligned_folder`; its path."""
    out = aligned_folder(config, name)
    for key, subset in subsets.items():
        export_atlas(_source(config, key, subset, report), out, config.tiles)
    write_json_twin(out / "align.json", json_safe(report), "window.ATLAS_ALIGN")
    install_viewer(out)  # already there from the sides' export; cheap, and the page needs it
    return install_page(out)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
