"""Benchmark the tiles stage: seconds to export each zoom level of a real atlas (target: <= 2 min for 20-160).

    python bench/tiles.py [--store data/store.zarr] [--levels 20,40,80,160] [--fill-missing] [--examples 4]
    python bench/tiles.py --smoke --store STORE --out X.json      # seconds; what CI runs

``--levels`` defaults to every grid level of the store; the atlas title and the JSON carry the
model and layer the store records (``attrs["model"]``).

Each level is exported on its own (``export_atlas`` of a one-level source into its own folder),
so its time covers everything ``atlas tiles`` does for it: the canvas, the DZI pyramid, one pass
over the store for the dataset examples and their thumbnails, cells.json, the mini-map, the
manifest and the atomic swap. Then all levels are exported together, as ``atlas tiles`` does
(one shared examples pass).

Levels whose icons are not completely rendered are skipped, unless ``--fill-missing``: their
cells then get real rendered icons of another level, repeated in cell order. The pixels are
the same kind and size, so the timing is representative, but those levels are **not** an atlas;
the table and JSON label them ``substitute``. Prints a table and writes ``bench/results/tiles.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import load_config, machine_record, model_record, store_model_config, write_json  # noqa: E402

from stages.tiles.export import export_atlas  # noqa: E402
from stages.tiles.geometry import DziGeometry  # noqa: E402
from stages.tiles.source import AtlasSource, store_minimap  # noqa: E402
from store import derived  # noqa: E402
from store.atlas_store import AtlasStore  # noqa: E402
from store.icons import IconLevel, IconStore  # noqa: E402

log = logging.getLogger("bench.tiles")


def donor_icons(icons: IconStore) -> IconLevel:
    """Every rendered icon the store has (done batches of any level), to stand in for missing ones."""
    parts, objective, cossim = [], [], []
    for n in icons.levels:
        level = icons.read_level(n)
        for b in np.flatnonzero(level.done):
            rows = icons.batch_range(n, int(b))
            parts.append(level.icons[rows.start : rows.stop])
            objective.append(level.objective[rows.start : rows.stop])
            cossim.append(level.cossim[rows.start : rows.stop])
    if not parts:
        raise SystemExit(f"{icons.path} has no rendered icon at all; run `atlas render` first")
    return IconLevel(
        n=0,
        icons=np.concatenate(parts),
        objective=np.concatenate(objective),
        cossim=np.concatenate(cossim),
        done=np.ones(1, bool),
    )


def bench_source(store: AtlasStore, levels: list[int], fill_missing: bool) -> tuple[AtlasSource, dict[int, str]]:
    """The main atlas over ``levels``; missing icons filled with repeated real ones if asked."""
    icons = IconStore.open(store.derived_path("icons"))
    grid = derived.grid_levels(store)
    kind = {n: "rendered" if n in icons.levels and icons.complete(n) else "missing" for n in levels if n in grid}
    real = [n for n, k in kind.items() if k == "rendered"]
    if fill_missing:
        kind = {n: "substitute" if k == "missing" else k for n, k in kind.items()}
    chosen = [n for n, k in kind.items() if k != "missing"]
    if not chosen:
        raise SystemExit(f"no level of {levels} has complete icons; pass --fill-missing to time substitutes")
    base = AtlasSource.from_store(store, real) if real else _any_source(store, icons)
    donor = donor_icons(icons) if fill_missing else None

    def icon_level(n: int) -> IconLevel:
        if kind[n] == "rendered":
            return icons.read_level(n)
        k = len(derived.read_level(store, n, with_attribution=False))
        pick = np.arange(k) % len(donor.icons)
        return IconLevel(
            n=n,
            icons=donor.icons[pick],
            objective=donor.objective[pick],
            cossim=donor.cossim[pick],
            done=np.ones(1, bool),
        )

    source = dataclasses.replace(base, levels=chosen, icon_level=icon_level, fingerprint=f"bench-{time.time()}")
    return source, {n: kind[n] for n in chosen}


def _any_source(store: AtlasStore, icons: IconStore) -> AtlasSource:
    """An AtlasSource of the store when no level is complete (``from_store`` would refuse it)."""
    model = store.attrs.get("model") or {}
    return AtlasSource(
        id="main",
        kind="main",
        title=f"{model.get('name')} {model.get('layer')}",
        levels=[],
        cell_level=lambda n: derived.read_level(store, n, with_attribution=False),
        icon_level=icons.read_level,
        minimap=lambda k, seed: store_minimap(store, k, seed),
        class_names=list(store.class_names),
        model={"name": model.get("name"), "layer": model.get("layer")},
        icon_px=int(icons.group.attrs["size"]),
        store=store,
    )


SMOKE = {"examples": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/store.zarr")
    parser.add_argument("--levels", default=None, help="comma-separated levels (default: all of the store's grid)")
    parser.add_argument("--fill-missing", action="store_true", help="time missing levels with repeated real icons")
    parser.add_argument("--examples", type=int, default=None, help="examples per cell (default: params.yaml)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="parameters file (its tiles: section)")
    parser.add_argument("--smoke", action="store_true", help=f"a small store's levels as they are, {SMOKE}")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "tiles.json"))
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.params).tiles
    if args.examples is not None:
        cfg = cfg.model_copy(update={"examples": args.examples})
    store = AtlasStore.open(args.store, mode="r")
    model = store_model_config(store)
    levels = [int(v) for v in args.levels.split(",")] if args.levels else derived.grid_levels(store)
    source, kinds = bench_source(store, levels, args.fill_missing)
    work = Path(tempfile.mkdtemp(prefix="bench_tiles_"))
    rows = []
    try:
        for n in source.levels:
            one = dataclasses.replace(source, levels=[n])
            t0 = time.perf_counter()
            result = export_atlas(one, work / f"level_{n}", cfg)
            seconds = time.perf_counter() - t0
            side = n * source.icon_px
            rows.append(
                {
                    "level": n,
                    "icons": kinds[n],
                    "cells": result.cells[n],
                    "canvas_px": side,
                    "tiles": result.tiles,
                    "examples": result.examples,
                    "seconds": round(seconds, 2),
                    "dzi_levels": DziGeometry(side, side, cfg.tile_size, cfg.overlap).n_levels,
                }
            )
            print(f"  level {n}: {seconds:.1f} s", flush=True)
        t0 = time.perf_counter()
        export_atlas(source, work / "all", cfg)
        all_seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\ntiles export of {args.store} ({model.name} {model.layer}; {source.icon_px} px icons, {cfg.format} "
        f"q{cfg.quality}, {cfg.examples} examples/cell, tile {cfg.tile_size}, {os.cpu_count()} cores)"
    )
    print(f"{'level':>6} {'icons':>11} {'cells':>6} {'canvas':>7} {'tiles':>6} {'examples':>8} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['level']:>6} {r['icons']:>11} {r['cells']:>6} {r['canvas_px']:>7} {r['tiles']:>6} "
            f"{r['examples']:>8} {r['seconds']:>8.1f}"
        )
    print(f"all levels in one export: {all_seconds:.1f} s (target <= 120 s); peak RSS {peak_mb:.0f} MB")
    if any(r["icons"] == "substitute" for r in rows):
        print(
            "substitute = the level's icons were not rendered; real icons of another level were repeated "
            "(timing only, not an atlas)"
        )
    out = {
        "store": args.store,
        "model": model_record(model),
        "smoke": args.smoke,
        "icon_px": source.icon_px,
        "format": cfg.format,
        "quality": cfg.quality,
        "tile_size": cfg.tile_size,
        "examples_per_cell": cfg.examples,
        "example_search": cfg.example_search,
        "levels": rows,
        "all_levels_seconds": round(all_seconds, 2),
        "peak_rss_mb": round(peak_mb),
        "substitute_note": "icons 'substitute': real rendered icons of another level repeated; timing only",
        **machine_record(),
    }
    print(f"wrote {write_json(args.out, out)}")


if __name__ == "__main__":
    main()
