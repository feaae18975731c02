"""Write one atlas into the export folder (docs/export_format.md), atomically and shardably.

:func:`export_atlas` takes an :class:`~stages.tiles.source.AtlasSource` (the main atlas, a
class-filtered one, a comparison) and writes ``<out>/<id>/``: per level a DZI pyramid, the
``cells.json`` overlay, the dataset-example thumbnails and, when the grid carries attribution
(the main atlas), the highlight values per class and label (:mod:`stages.tiles.highlight`); then
``manifest.json``, ``layout.json``, ``highlight.json`` (each with its ``.js`` twin for
``file://``) and its entry in ``atlases.json``.

Atomic and resumable: each level is written into a hidden folder private to the process
(``<out>/.<slug>.staging.level_<N>.tmp-<host>-<pid>-<random>/``), which is renamed to
``<out>/.<slug>.staging/level_<N>/`` under the atlas's lock once complete (a ``done.json`` inside
records the inputs' fingerprint; :mod:`stages.tiles.integrity`). When every level is staged, the
atlas folder is assembled as ``<out>/.<slug>.new/``, its ``checksums.json`` written last, and
swapped in by two renames, so ``<out>/<id>/`` is always either the previous complete export or
the new one, never a half-written folder. A killed export leaves only hidden folders; rerunning
it reuses the levels it had finished. Two runs of the same export at once write private folders
and assemble one after the other.

Sharding: shard ``i`` of ``n`` stages a contiguous slice of the levels (``store.atlas_store.
shard_blocks`` over the sorted levels), so array jobs write disjoint folders; whichever shard
finds every level staged (checked under a file lock) assembles the atlas. Levels are the unit:
the finest level dominates the time, so more shards than levels do not help.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from stages.config import TilesConfig
from stages.images.class_names import label_classes
from stages.tiles import dataset_examples as examples_mod
from stages.tiles import highlight as highlight_mod
from stages.tiles import integrity
from stages.tiles.geometry import (
    DziGeometry,
    box_fractions,
    cell_pixel_boxes,
    icon_pixel_boxes,
    icon_pixel_sides,
    icon_scale,
)
from stages.tiles.pyramid import compose_canvas, write_dzi
from stages.tiles.source import AtlasSource
from stages.tiles.viewer_assets import install_viewer
from store.atomic import remove_tree
from store.derived import CellLevel
from store.errors import storage_error
from store.records import fingerprint
from store.shards import shard_blocks

log = logging.getLogger(__name__)

EXPORT_FORMAT = "activation-atlas-export"
EXPORT_VERSION = 1
#: bumped when a level's staged files change shape (2: highlight values), so older staged or
#: exported levels are rewritten instead of reused
LEVEL_FORMAT = 2
_DIGITS = 6


@dataclass
class ExportResult:
    """What one (shard of an) export did."""

    atlas_dir: Path
    levels_written: list[int]
    levels_reused: list[int]
    tiles: int
    examples: int
    assembled: bool
    cells: dict[int, int] = field(default_factory=dict)


def _slug(atlas_id: str) -> str:
    return atlas_id.replace("/", "__")


def _state_path(out: Path, source: AtlasSource) -> Path:
    """Fingerprint of the inputs of the atlas folder now in place (rerunning with equal inputs is a no-op)."""
    return out / f".{_slug(source.id)}.done.json"


def write_json_twin(path: Path, obj: Any, js_target: str) -> None:
    """``path`` (JSON) and its ``.js`` twin assigning the same object to ``js_target``.

    ``js_target`` is ``window.NAME`` or ``window.NAME["key"]``; for the keyed form the object is
    created first, so several atlases' scripts add to one global.
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    if "[" in js_target:
        base = js_target.split("[", 1)[0]
        js = f"{base} = {base} || {{}};\n{js_target} = {text};\n"
    else:
        js = f"{js_target} = {text};\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((path, text), (path.with_suffix(".js"), js)):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(content)
        os.replace(tmp, target)  # readers never see a half-written file


def _num(value: float) -> float | None:
    """A canvas fraction for JSON: 6 decimals (1e-6 of the canvas is far below a pixel)."""
    return None if not math.isfinite(float(value)) else round(float(value), _DIGITS)


def _sig(value: float) -> float | None:
    """A measured value (objective, cos-sim, attribution) for JSON: 6 significant digits, NaN -> null."""
    return None if not math.isfinite(float(value)) else float(f"{float(value):.6g}")


def cells_records(
    source: AtlasSource, n: int, level: Any, icons: Any, cfg: TilesConfig, example_paths: list[list[str]]
) -> list[dict[str, Any]]:
    """The ``cells.json`` list of one level (one entry per kept cell, the grid's cell order)."""
    scale = icon_scale(level.count, cfg.density, cfg.density_scaling)
    canvas_px = n * source.icon_px
    bounds = box_fractions(cell_pixel_boxes(level.i, level.j, source.icon_px), canvas_px)
    icon_bounds = box_fractions(
        icon_pixel_boxes(level.i, level.j, source.icon_px, icon_pixel_sides(scale, source.icon_px)), canvas_px
    )
    names = source.class_names
    records = []
    for c in range(len(level)):
        classes = [
            {"index": int(k), "name": names[k] if k < len(names) else str(k), "value": _sig(v)}
            for k, v in zip(level.top_idx[c].tolist(), level.top_val[c].tolist())
            if k >= 0
        ]
        records.append(
            {
                "cell": c,
                "i": int(level.i[c]),
                "j": int(level.j[c]),
                "bounds": [_num(v) for v in bounds[c]],
                "icon_bounds": [_num(v) for v in icon_bounds[c]],
                "count": int(level.count[c]),
                "classes": classes[:5],
                "objective": _sig(icons.objective[c]),
                "cossim": _sig(icons.cossim[c]),
                "examples": example_paths[c] if c < len(example_paths) else [],
            }
        )
    return records


def write_highlight(source: AtlasSource, level: Any, folder: Path, row_labels: Any) -> dict[str, list[int]]:
    """The level's highlight files (``folder/highlight/class_<c>.json`` + ``label_<l>``, each with
    its ``.js`` twin); return the classes and labels written (stages/tiles/highlight.py)."""
    written: dict[str, list[int]] = {"classes": [], "labels": []}
    if level.attribution is None:
        return written
    columns = {"class": highlight_mod.split_columns(level.attribution)}
    if row_labels is not None and len(level):
        columns["label"] = highlight_mod.label_shares(level.member_offsets, level.member_rows, row_labels)
    for kind, by_index in columns.items():
        for index, column in sorted(by_index.items()):
            write_json_twin(
                folder / "highlight" / f"{kind}_{index}.json",
                column.record(),
                f'window.ATLAS_HIGHLIGHT["{source.id}/{level.n}/{kind}/{index}"]',
            )
        written["classes" if kind == "class" else "labels"] = sorted(by_index)
    return written


def _stage_level(
    source: AtlasSource,
    level: Any,
    staging: Path,
    cfg: TilesConfig,
    picks: Any,
    level_fp: str,
    progress: Callable[[int], None] | None,
    row_labels: Any = None,
) -> tuple[int, int, int]:
    """Write ``level`` into ``staging/level_<n>/`` (via a ``.tmp`` folder); (tiles, examples, cells)."""
    n = level.n
    examples_store = source.store if picks is not None else None  # None: no examples for this level
    with_examples = examples_store is not None
    tmp = integrity.level_tmp(staging, n)  # private to this process (stages/tiles/integrity.py)
    icons = source.icon_level(n)
    if len(icons.icons) != len(level):
        raise ValueError(f"level {n}: {len(icons.icons)} icons for {len(level)} cells")
    scale = icon_scale(level.count, cfg.density, cfg.density_scaling)
    canvas, _ = compose_canvas(icons.icons, level.i, level.j, n, scale, cfg.background)
    geometry = DziGeometry(canvas.width, canvas.height, cfg.tile_size, cfg.overlap)
    tiles = write_dzi(canvas, tmp / f"level_{n}.dzi", geometry, cfg.format, cfg.quality, progress)
    del canvas
    paths: list[list[str]] = [[] for _ in range(len(level))]
    if examples_store is not None:
        paths = examples_mod.write_thumbnails(
            examples_store,
            picks,
            tmp / "examples" / f"level_{n}",
            f"examples/level_{n}",
            cfg.example_px,
            cfg.example_field,
            cfg.quality,
        )
    n_examples = sum(len(p) for p in paths)
    if progress is not None and with_examples:
        progress(len(level) * cfg.examples)  # as announced (fewer are written when photos are missing)
    records = cells_records(source, n, level, icons, cfg, paths)
    write_json_twin(tmp / f"level_{n}" / "cells.json", records, f'window.ATLAS_CELLS["{source.id}/{n}"]')
    highlight = write_highlight(source, level, tmp / f"level_{n}", row_labels) if cfg.highlight else {}
    (tmp / "done.json").write_text(
        json.dumps(
            {
                "fingerprint": level_fp,
                "tiles": tiles,
                "examples": n_examples,
                "cells": len(level),
                "canvas_px": geometry.width,
                "highlight": highlight,
            }
        )
    )
    integrity.publish_level(tmp, staging, n)
    return tiles, n_examples, len(level)


def _staged(staging: Path, n: int, level_fp: str) -> dict[str, Any] | None:
    done = staging / f"level_{n}" / "done.json"
    if not done.exists():
        return None
    info = json.loads(done.read_text())
    return info if info.get("fingerprint") == level_fp else None


def _files_to_write(source: AtlasSource, cells: dict[int, CellLevel], cfg: TilesConfig, with_examples: bool) -> int:
    """The tiles and example thumbnails of the levels in ``cells`` (the progress bar's total)."""
    return sum(
        DziGeometry(n * source.icon_px, n * source.icon_px, cfg.tile_size, cfg.overlap).n_tiles()
        + (len(cells[n]) * cfg.examples if with_examples else 0)
        for n in cells
    )


def _assemble_when_complete(
    source: AtlasSource,
    out: Path,
    staging: Path,
    cfg: TilesConfig,
    level_fps: dict[int, str],
    atlas_fp: str,
) -> list[int]:
    """Assemble the atlas when every level is staged (the last shard does); the levels still missing."""
    state = _state_path(out, source)
    with integrity.atlas_lock(staging):
        if (
            (out / source.path / "manifest.json").exists()
            and state.exists()
            and json.loads(state.read_text()) == atlas_fp
        ):
            missing = []  # another run assembled these same inputs meanwhile
            shutil.rmtree(staging, ignore_errors=True)
        else:
            missing = [n for n in source.levels if _staged(staging, n, level_fps[n]) is None]
        if missing:
            log.info(
                "atlas %s: levels %s are not staged yet (other shards); the last shard assembles it", source.id, missing
            )
        elif staging.exists():
            state.unlink(missing_ok=True)
            _assemble(source, out, staging, cfg)
            integrity.write_state(state, atlas_fp)
    return missing


def _up_to_date(source: AtlasSource, out: Path, mine: list[int]) -> ExportResult:
    """Nothing to write: the atlas in place was made from the same inputs (listed and viewer installed again)."""
    log.info("atlas %s in %s is up to date (same icons, grid and tiles parameters)", source.id, out)
    update_index(out, source)
    install_viewer(out)
    return ExportResult(
        atlas_dir=out / source.path, levels_written=[], levels_reused=mine, tiles=0, examples=0, assembled=True
    )


def export_atlas(
    source: AtlasSource,
    out_dir: str | Path,
    cfg: TilesConfig,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export ``source`` into ``out_dir`` (shard ``i/n`` of its levels; see the module docstring).

    ``on_start(total)`` gets the tiles + thumbnails this shard will write, ``progress(k)`` is
    called as they are written.
    """
    out = Path(out_dir)
    staging = out / f".{_slug(source.id)}.staging"
    params = cfg.model_dump(mode="json", exclude={"levels", "layout_points", "seed"})
    level_fps = {
        n: fingerprint({"source": source.fingerprint, "params": params, "n": n, "format": LEVEL_FORMAT})
        for n in source.levels
    }
    mine = [source.levels[k] for k in shard_blocks(len(source.levels), *shard)]
    state = _state_path(out, source)
    atlas_fp = fingerprint({"levels": level_fps, "minimap": [cfg.layout_points, cfg.seed], "title": source.title})
    if (out / source.path / "manifest.json").exists() and state.exists() and json.loads(state.read_text()) == atlas_fp:
        return _up_to_date(source, out, mine)
    staging.mkdir(parents=True, exist_ok=True)
    todo = [n for n in mine if _staged(staging, n, level_fps[n]) is None]
    reused = [n for n in mine if n not in todo]
    cells = {n: source.cell_level(n) for n in todo}
    examples_store = source.store if cfg.examples else None
    with_examples = examples_store is not None
    if on_start is not None:
        on_start(_files_to_write(source, cells, cfg, with_examples))
    picks = {}
    if todo and examples_store is not None:
        picks = examples_mod.nearest_rows(
            examples_store, cells, cfg.examples, cfg.example_search, cfg.example_distinct_photos
        )
    row_labels = _row_labels(source) if todo and cfg.highlight else None
    tiles = n_examples = 0
    counts = {}
    try:
        for n in todo:
            t, e, k = _stage_level(source, cells.pop(n), staging, cfg, picks.get(n), level_fps[n], progress, row_labels)
            tiles, n_examples, counts[n] = tiles + t, n_examples + e, k
            log.info("atlas %s level %d staged: %d cells, %d tiles, %d example thumbnails", source.id, n, k, t, e)
    except BaseException as exc:
        integrity.drop_private(staging, todo)
        raise (storage_error(exc, out) if isinstance(exc, OSError) else exc) from None
    missing = _assemble_when_complete(source, out, staging, cfg, level_fps, atlas_fp)
    return ExportResult(
        atlas_dir=out / source.path,
        levels_written=todo,
        levels_reused=reused,
        tiles=tiles,
        examples=n_examples,
        assembled=not missing,
        cells=counts,
    )


def _row_labels(source: AtlasSource) -> Any:
    """The data-set label of every store row, or None when the source has no labelled store."""
    if source.store is None or not source.label_names:
        return None
    return source.store.row_labels()


def _write_highlight_index(source: AtlasSource, folder: Path, per_level: dict[int, dict[str, list[int]]]) -> str | None:
    """``highlight.json`` (+ ``.js``): what the viewer's search offers and which files exist per level."""
    if not any(v.get("classes") or v.get("labels") for v in per_level.values()):
        return None
    label_rows = np.zeros(len(source.label_names), np.int64)
    if source.store is not None and source.label_names:
        known = source.store.row_labels()
        known = known[(known >= 0) & (known < len(source.label_names))]
        label_rows = np.bincount(known, minlength=len(source.label_names))
    as_class = label_classes(source.label_names, source.class_names)
    index = {
        "classes": list(source.class_names),
        "labels": [
            {"index": k, "name": name, "class": int(as_class[k]), "rows": int(label_rows[k])}
            for k, name in enumerate(source.label_names)
        ],
        "levels": {
            str(n): {"classes": v.get("classes", []), "labels": v.get("labels", [])} for n, v in per_level.items()
        },
        "files": "level_{n}/highlight/{kind}_{index}.js",
    }
    write_json_twin(folder / "highlight.json", index, f'window.ATLAS_HIGHLIGHT_INDEX["{source.id}"]')
    return "highlight.js"


def _assemble(source: AtlasSource, out: Path, staging: Path, cfg: TilesConfig) -> None:
    """Move the staged levels into a new atlas folder, write manifest + layout, swap it in."""
    slug = _slug(source.id)
    new, old = out / f".{slug}.new", out / f".{slug}.old"
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(parents=True)
    levels = []
    highlight: dict[int, dict[str, list[int]]] = {}
    for n in source.levels:
        part = staging / f"level_{n}"
        info = json.loads((part / "done.json").read_text())
        highlight[n] = info.get("highlight") or {}
        for name in (f"level_{n}.dzi", f"level_{n}_files", f"level_{n}"):
            _link(part / name, new / name)
        if (part / "examples" / f"level_{n}").exists():
            (new / "examples").mkdir(exist_ok=True)
            _link(part / "examples" / f"level_{n}", new / "examples" / f"level_{n}")
        levels.append(
            {
                "n": n,
                "canvas_px": info["canvas_px"],
                "cell_px": source.icon_px,
                "cells": info["cells"],
                "dzi": f"level_{n}.dzi",
                "tiles": f"level_{n}_files/",
                "tile_size": cfg.tile_size,
                "overlap": cfg.overlap,
                "format": cfg.format,
                "cells_json": f"level_{n}/cells.json",
                "cells_js": f"level_{n}/cells.js",
            }
        )
    _write_minimap(source, new, cfg)
    manifest = {
        "id": source.id,
        "kind": source.kind,
        "title": source.title,
        "icon_px": source.icon_px,
        "axes": source.axes,
        "density_scaling": cfg.density_scaling,
        "levels": levels,
        "layout": "layout.js",
        "highlight": _write_highlight_index(source, new, highlight),
    }
    write_json_twin(new / "manifest.json", manifest, f'window.ATLAS_MANIFESTS["{source.id}"]')
    integrity.write_checksums(new, source)  # last: every file's sha256 (atlas verify checks them)
    final = out / source.path
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    remove_tree(staging)  # renamed away first: a kill here never leaves a staged level half deleted
    update_index(out, source)
    install_viewer(out)
    log.info("atlas %s assembled in %s (levels %s)", source.id, final, source.levels)


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (a file or a folder tree) at ``dst``, copying where the filesystem refuses links.

    Not a move: the staged level stays whole until the new atlas folder is published, so a run
    killed half way through assembling leaves every staged level as it was, and the next run
    assembles again from it (a move would leave a level marked done with files missing).
    """

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link_or_copy)
    else:
        link_or_copy(str(src), str(dst))


def _write_minimap(source: AtlasSource, folder: Path, cfg: TilesConfig) -> None:
    points = source.minimap(cfg.layout_points, cfg.seed)
    labels = points.label.astype(int)
    names = source.class_names
    layout = {
        "x": np.round(points.x.astype(np.float64), 4).tolist(),
        "y": np.round(points.y.astype(np.float64), 4).tolist(),
        "label": labels.tolist(),
        "names": {str(k): names[k] for k in sorted(set(labels.tolist())) if 0 <= k < len(names)},
    }
    write_json_twin(folder / "layout.json", layout, f'window.ATLAS_LAYOUTS["{source.id}"]')


def update_index(out: Path, source: AtlasSource) -> None:
    """Add or replace this atlas's entry in ``atlases.json`` (+ ``.js``); keep the others.

    Entries of another model (an export folder reused for a new model) are dropped with a warning.
    """
    with FileLock(str(out / ".atlases.lock")):
        index_path = out / "atlases.json"
        entries: list[dict[str, Any]] = []
        if index_path.exists():
            try:
                old = json.loads(index_path.read_text())
            except json.JSONDecodeError:
                old = {}
                log.warning("%s is not valid JSON; rewriting it with this atlas only", index_path)
            if old.get("model") not in (None, source.model):
                log.warning("%s indexed atlases of %s; replacing them with this model's", index_path, old.get("model"))
            else:
                entries = [e for e in old.get("atlases", []) if e.get("id") != source.id]
        entry = {"id": source.id, "kind": source.kind, "title": source.title, "path": source.path, **source.index}
        entries = sorted([entry, *entries], key=lambda e: (e.get("kind") != "main",))
        index = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model": source.model, "atlases": entries}
        write_json_twin(index_path, index, "window.ATLAS_INDEX")
