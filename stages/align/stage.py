"""The align stage: aligned activation atlases of two models, or two layers of one model (docs/method.md §11).

For every pair of ``align.pairs`` (lucid's ``aligned_activation_atlas``, Carter et al. 2019):

1. **collect** both sides into their own stores on the same photos, views and image locations
   (:mod:`stages.align.sides`; ``collect.image_margin``): row r of both stores is one place of one
   view, mapped to each layer's own grid. A side used by several pairs is collected once;
2. **linear maps** between the two activation spaces, ridge least squares in both directions, fitted
   on most photos and scored (R^2) on held-out ones (:mod:`stages.align.maps`);
3. **one layout**: each side's rows concatenated with their translation into the other space,
   both groups laid out by one UMAP fit and split in two (:mod:`stages.align.layout`);
4. **grid and render** each side on the shared layout, its cells rendered with its own model
   (the grid and render stages, unchanged, on a :class:`store.subset.SubsetStore` of each side);
5. **agreement** per cell and level (:mod:`stages.align.agreement`) and the **export** of both
   sides plus the synced side-by-side viewer (:mod:`stages.align.export`).

Resumable like the other stages: collect skips finished blocks, the layout is recomputed only
when what it is made of changed (both stores' rows and the reduce/align parameters), render resumes
its batches, the export reuses finished levels. Every model and layer is checked before anything
is written, so a bad spec stops with one line and no files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.align import agreement, maps
from stages.align.layout import shared_layout
from stages.align.sides import SIDES, pair_name, require_same_inputs, side_config, side_key, side_label
from stages.config import AlignModel, AlignPair
from stages.context import StageContext
from stages.images.sources import ImageSource
from stages.model.registry import LoadedModel, load_model
from stages.sections import AlignSection, RenderSection
from store import derived
from store.atlas_store import AtlasStore
from store.atomic import remove_tree
from store.errors import AtlasError
from store.icons import IconStore
from store.subset import SubsetStore

log = logging.getLogger(__name__)

FORMAT = "activation-atlas-aligned"
VERSION = 1


@dataclass
class AlignResult:
    """What one aligned atlas came to (also written to ``align.json`` in its export folder)."""

    name: str
    rows: int
    maps: dict[str, Any]
    levels: list[dict[str, Any]]
    icons_rendered: int
    export: Path | None
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step (collect: in run's first pair)


def _check_inputs(config: AlignSection, pairs: list[AlignPair]) -> ImageSource:
    """What needs no model, checked before any loads (a bad value would otherwise cost two model loads
    per pair first): the pair names are unique, both sides of a pair see one input size, ``data.source``
    opens (collect's own check; the opened source is what every side collects). Else one line, nothing written."""
    from stages.collect.stage import open_source

    names = [pair_name(p) for p in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AtlasError(f"align.pairs: the name {dupes[0]!r} is used twice; give the pairs distinct names")
    for pair, name in zip(pairs, names):
        if pair.a.image_size != pair.b.image_size:
            raise AtlasError(
                f"align pair {name}: image_size {pair.a.image_size} vs {pair.b.image_size}; both sides "
                "must see the same inputs (give them one image_size)"
            )
    return open_source(side_config(config, pairs[0].a))  # every side collects the same photos


def _check_pairs(config: AlignSection, pairs: list[AlignPair], device: torch.device) -> dict[str, LoadedModel]:
    """Every side loads and has its layer (after :func:`_check_inputs`): else one line, nothing written."""
    names = [pair_name(p) for p in pairs]
    models: dict[str, LoadedModel] = {}
    for pair, name in zip(pairs, names):
        for key in SIDES:
            side: AlignModel = getattr(pair, key)
            if side_key(side) in models:
                continue
            try:
                models[side_key(side)] = load_model(side_config(config, side).model, device)
            except AtlasError as exc:
                raise AtlasError(f"align pair {name}, model {key} ({side.name} @ {side.layer}): {exc}") from None
    return models


def _collect_sides(
    config: AlignSection, pairs: list[AlignPair], side_ctx: StageContext, on_collect: Callable[[str], None] | None
) -> float:
    """Collect every distinct side once (``side_ctx``: the device and the photos opened once); the seconds it took."""
    from stages.collect import stage as collect

    t0 = time.perf_counter()
    seen: set[str] = set()
    for pair in pairs:
        for key in SIDES:
            side = getattr(pair, key)
            if side_key(side) in seen:
                continue
            seen.add(side_key(side))
            label = side_label(side)
            if on_collect is not None:
                on_collect(label)
            summary = collect.run(side_config(config, side), side_ctx)
            log.info("collected %s: %d inputs this run, store %s", label, summary.inputs_run, summary.store)
    return time.perf_counter() - t0


def _layout_fingerprint(config: AlignSection, store_a: AtlasStore, store_b: AtlasStore, rows: np.ndarray) -> str:
    a = config.align
    what = {
        "a": store_a.content_token(),
        "b": store_b.content_token(),
        "rows": hashlib.sha256(rows.tobytes()).hexdigest(),
        "reduce": config.reduce.model_dump(mode="json"),
        "ridge": a.ridge,
        "test_fraction": a.test_fraction,
        "seed": a.seed,
        "format": VERSION,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _has_layout(subset: SubsetStore, fp: str) -> bool:
    try:
        return derived.read_layout(subset).info.align_fingerprint == fp
    except AtlasError:
        return False


def _read_rows(store: AtlasStore, rows: np.ndarray) -> np.ndarray:
    return np.asarray(store.row_values("activations", rows), np.float32)


def _maps_report(m: maps.AlignedMaps, test_fraction: float) -> dict[str, Any]:
    def one(lm: maps.LinearMap) -> dict[str, float]:
        return {"r2_test": lm.r2_test, "r2_fit": lm.r2_fit, "alpha": lm.alpha, "ridge": lm.ridge}

    return {
        "a_to_b": one(m.a_to_b),
        "b_to_a": one(m.b_to_a),
        "n_fit": m.n_fit,
        "n_test": m.n_test,
        "test_fraction": test_fraction,
        "scale_a": m.scale_a,
        "scale_b": m.scale_b,
    }


def _drop_stale_icons(subset: SubsetStore, levels: list[int]) -> None:
    """Delete a side's icons rendered from another grid (a new layout asks for new icons)."""
    path = subset.derived_path("icons")
    if not IconStore.exists(path):
        return
    cells = {n: derived.read_level(subset, n, with_attribution=False) for n in levels}
    if not derived.icons_current(IconStore.open(path).record, subset, cells):
        log.info("%s: icons were rendered from another grid; deleting them", subset.path)
        remove_tree(path)


def side_render_config(config: AlignSection) -> AlignSection:
    """The grid and render settings of an aligned atlas's sides (``align.levels``, ``align.min_count``, ``align.render``)."""
    a = config.align
    g = config.grid.model_copy(update={"levels": a.levels, "min_count": a.min_count})
    return config.model_copy(update={"grid": g, "render": a.render.apply(config.render)})


@dataclass
class _PairRows:
    """The two sides' stores, the rows valid in both, and the subsets of those rows."""

    name: str
    stores: dict[str, AtlasStore]
    rows: np.ndarray
    selection: dict[str, Any]
    subsets: dict[str, SubsetStore]


def _pair_rows(config: AlignSection, pair: AlignPair) -> _PairRows:
    """Open both sides' collect stores (same inputs, collected) and the aligned rows' subsets."""
    a = config.align
    name = pair_name(pair)
    stores = {key: AtlasStore.open(side_config(config, getattr(pair, key)).data.store) for key in SIDES}
    for key in SIDES:
        stores[key].require_collected(needed_by=f"align ({key})")
    require_same_inputs(stores["a"], stores["b"])
    valid = np.asarray(stores["a"].valid_mask(), bool) & np.asarray(stores["b"].valid_mask(), bool)
    rows = np.flatnonzero(valid).astype(np.int64)
    if len(rows) <= max(config.reduce.n_neighbors, a.knn) + 1:
        raise AtlasError(
            f"align pair {name}: {len(rows)} aligned rows; collect more photos or views "
            f"(align.views_per_image) or lower reduce.n_neighbors"
        )
    selection = {"kind": "align", "pair": name, "a": side_label(pair.a), "b": side_label(pair.b)}
    folder = Path(a.folder) / name
    subsets = {
        key: SubsetStore.create(stores[key], key, rows, {**selection, "side": key}, base=folder) for key in SIDES
    }
    return _PairRows(name, stores, rows, selection, subsets)


def _write_shared_layout(
    config: AlignSection, p: _PairRows, acts: dict[str, np.ndarray], fitted: maps.AlignedMaps
) -> None:
    """The one UMAP of both sides' joint rows, written as each side's layout (kept when up to date)."""
    fp = _layout_fingerprint(config, p.stores["a"], p.stores["b"], p.rows)
    if all(_has_layout(p.subsets[k], fp) for k in SIDES):
        log.info("align %s: shared layout is up to date", p.name)
        return
    joint_a, joint_b = maps.joint_rows(acts["a"], acts["b"], fitted)
    shared = shared_layout(joint_a, joint_b, config.reduce)
    attrs = {**shared.metadata, "align_fingerprint": fp, "aligned": p.selection}
    for key, lay, emb, fit in (
        ("a", shared.layout_a, shared.embedding_a, shared.fitted_a),
        ("b", shared.layout_b, shared.embedding_b, shared.fitted_b),
    ):
        derived.write_layout(
            p.subsets[key],
            derived.Layout(rows=p.rows, layout=lay, embedding=emb, fitted=fit, attrs={**attrs, "side": key}),
        )


def _named_start(on_atlas: Callable[[str, int], None] | None, name: str) -> Callable[[int], None] | None:
    """``on_start(total)`` that reports ``on_atlas(name, total)``."""
    return None if on_atlas is None else (lambda total: on_atlas(name, total))


def _grid_and_render_sides(
    sub_config: AlignSection,
    pair: AlignPair,
    p: _PairRows,
    models: dict[str, LoadedModel],
    ctx: StageContext,
    phases: dict[str, float],
) -> int:
    """Bin and render each side with its own model; the icons rendered (seconds added to ``phases``)."""
    from stages.grid import stage as grid
    from stages.render import stage as render

    icons_rendered = 0
    phases["grid"] = phases["render"] = 0.0
    for key in SIDES:
        side = getattr(pair, key)
        t = time.perf_counter()
        result = grid.run(sub_config.grid, StageContext(p.subsets[key]))
        if not any(result.cells.values()):
            raise AtlasError(
                f"align pair {p.name}: no cell of levels {result.levels} holds more than "
                f"{sub_config.align.min_count} rows; lower align.min_count or collect more"
            )
        _drop_stale_icons(p.subsets[key], result.levels)
        phases["grid"] += time.perf_counter() - t
        t = time.perf_counter()
        start = _named_start(ctx.on_atlas, f"{p.name} {key}")
        section = RenderSection(model=side_config(sub_config, side).model, render=sub_config.render)
        side_ctx = StageContext(
            p.subsets[key], device=ctx.device, model=models[side_key(side)], progress=ctx.progress, on_start=start
        )
        icons_rendered += render.run(section, side_ctx).icons_run
        phases["render"] += time.perf_counter() - t
    return icons_rendered


def _pair_report(
    sub_config: AlignSection,
    pair: AlignPair,
    p: _PairRows,
    models: dict[str, LoadedModel],
    acts: dict[str, np.ndarray],
    report_maps: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-level agreement and each side's label ceiling: the levels and the report written as align.json."""
    stores, a = p.stores, sub_config.align
    row_top1 = {key: _row_top1(stores[key]) for key in SIDES}
    same_classes = list(stores["a"].class_names) == list(stores["b"].class_names)
    levels, cells = _agreement(sub_config, p.subsets, acts, p.rows, stores["a"].n_rows, same_classes, row_top1)
    sides = {key: _side_report(getattr(pair, key), models[side_key(getattr(pair, key))]) for key in SIDES}
    for key in SIDES:  # the side's label ceiling over every level's cells (atlas fidelity's ceiling)
        meets = [np.asarray(cells[str(lv["n"])][key]["meets"], np.float32) for lv in levels]
        sides[key]["label_ceiling"] = agreement.ceiling(np.concatenate(meets) if meets else np.zeros(0, np.float32))
        log.info(
            "align %s: side %s labels meet their members' own predictions in %s of %d labelled cells (%s)",
            p.name,
            key,
            _pct(sides[key]["label_ceiling"]["fraction"]),
            sides[key]["label_ceiling"]["cells"],
            ", ".join(f"level {lv['n']}: {_pct(lv['ceiling_' + key])}" for lv in levels),
        )
    return levels, {
        "format": FORMAT,
        "version": VERSION,
        "name": p.name,
        "rows": int(len(p.rows)),
        "sides": sides,
        "maps": report_maps,
        "knn": a.knn,
        "knn_chance": min(a.knn, len(p.rows) - 1) / (len(p.rows) - 1),
        "levels": levels,
        "cells": cells,
    }


def _pair(config: AlignSection, pair: AlignPair, models: dict[str, LoadedModel], ctx: StageContext) -> AlignResult:
    t0 = time.perf_counter()
    phases: dict[str, float] = {}
    a = config.align
    p = _pair_rows(config, pair)
    acts = {key: _read_rows(p.stores[key], p.rows) for key in SIDES}
    groups = p.stores["a"].row_images()[p.rows]
    fitted = maps.fit_aligned_maps(acts["a"], acts["b"], groups, a.test_fraction, a.ridge, a.seed)
    phases["maps"] = time.perf_counter() - t0
    report_maps = _maps_report(fitted, a.test_fraction)
    log.info(
        "align %s: %d rows; R^2 held out a->b %.3f, b->a %.3f",
        p.name,
        len(p.rows),
        fitted.a_to_b.r2_test,
        fitted.b_to_a.r2_test,
    )
    t = time.perf_counter()
    _write_shared_layout(config, p, acts, fitted)
    phases["layout"] = time.perf_counter() - t
    sub_config = side_render_config(config)
    icons_rendered = _grid_and_render_sides(sub_config, pair, p, models, ctx, phases)
    t = time.perf_counter()
    levels, report = _pair_report(sub_config, pair, p, models, acts, report_maps)
    phases["agreement"] = time.perf_counter() - t
    out = None
    if config.export:
        from stages.align.export import export_aligned

        t = time.perf_counter()
        out = export_aligned(sub_config, p.name, p.subsets, report)
        phases["export"] = time.perf_counter() - t
    return AlignResult(
        name=p.name,
        rows=int(len(p.rows)),
        maps=report_maps,
        levels=levels,
        icons_rendered=icons_rendered,
        export=out,
        seconds=time.perf_counter() - t0,
        report=report,
        phases=phases,
    )


def _side_report(side: AlignModel, model: LoadedModel) -> dict[str, Any]:
    return {
        "model": side.name,
        "weights": side.weights,
        "layer": side.layer,
        "label": side_label(side),
        "layer_shape": list(model.layer_shape),
        "tokens": model.tokens,
    }


def _row_top1(store: AtlasStore) -> np.ndarray | None:
    """The side's own top-1 prediction per store row (None: a store collected without the head)."""
    return np.asarray(store.row_values("top_pred_idx"))[:, 0] if store.has_row_array("top_pred_idx") else None


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.0f}%"


def _agreement(
    config: AlignSection,
    subsets: dict[str, SubsetStore],
    acts: dict[str, np.ndarray],
    rows: np.ndarray,
    n_rows: int,
    same_classes: bool,
    row_top1: dict[str, np.ndarray | None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-level summary and per-cell arrays (the viewer's agreement figures, each side's label ceiling)."""
    k = config.align.knn
    overlap = agreement.knn_overlap(agreement.knn_indices(acts["a"], k), agreement.knn_indices(acts["b"], k))
    row_knn = np.full(n_rows, np.nan, np.float32)
    row_knn[rows] = overlap
    layouts = {key: derived.read_layout(subsets[key]) for key in SIDES}
    summaries, cells = [], {}
    for n in derived.grid_levels(subsets["a"]):
        level = {key: derived.read_level(subsets[key], n, with_attribution=False) for key in SIDES}
        placed = {key: agreement.cell_of_rows(layouts[key].layout, layouts[key].rows, n, n_rows) for key in SIDES}
        agree = {
            "a": agreement.cell_agreement(level["a"], level["b"], row_knn, placed["b"]),
            "b": agreement.cell_agreement(level["b"], level["a"], row_knn, placed["a"]),
        }
        summary = agreement.level_summary(level["a"], level["b"], agree["a"], agree["b"], same_classes)
        meets = {}
        for key in SIDES:
            top1 = (row_top1 or {}).get(key)
            meets[key] = (
                agreement.label_meets(level[key], top1)
                if top1 is not None
                else np.full(len(level[key]), np.nan, np.float32)
            )
            got = agreement.ceiling(meets[key])
            summary[f"ceiling_{key}"], summary[f"labelled_{key}"] = got["fraction"], got["cells"]
        summaries.append(summary)
        cells[str(n)] = {
            key: {
                "knn": _rounded(agree[key].knn),
                "same_cell": _rounded(agree[key].same_cell),
                "partner": agree[key].partner.tolist(),
                "meets": _rounded(meets[key]),
            }
            for key in SIDES
        }
    return summaries, cells


def _rounded(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values.tolist()]


def run(config: AlignSection, ctx: StageContext) -> list[AlignResult]:
    """Build every aligned atlas of ``align.pairs``; see the module docstring.

    ``ctx.on_step(label)`` before each side is collected, ``ctx.on_atlas(name, icons)`` before each
    side is rendered, ``ctx.progress(k)`` per rendered batch; ``ctx.device`` else ``collect.device``.
    """
    pairs = list(config.align.pairs)
    if not pairs:
        raise AtlasError(
            "align.pairs is empty; list pairs in params.yaml or give two specs: atlas align MODEL@LAYER MODEL@LAYER"
        )
    source = _check_inputs(config, pairs)
    t0 = time.perf_counter()
    device = ctx.device_for(config.collect.device)
    ctx = replace(ctx, device=device)
    models = _check_pairs(config, pairs, device)
    collect_seconds = _collect_sides(config, pairs, StageContext(device=device, source=source), ctx.on_step)
    results = [_pair(config, pair, models, ctx) for pair in pairs]
    results[0].phases = {
        "models": time.perf_counter() - t0 - collect_seconds - sum(r.seconds for r in results),
        "collect": collect_seconds,
        **results[0].phases,
    }
    return results
