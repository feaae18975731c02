"""Class-filtered atlases: one small atlas per class of ``classes.names`` (docs/method.md §8).

For each class c (several per run): select its rows from the stored top-k attributions
(:mod:`stages.classes.select`, ``classes.mode`` / ``classes.top_k``) -> a
:class:`store.subset.SubsetStore` in ``<store>.classes/<slug>.*.zarr`` -> the reduce stage with the
class settings -> one ``classes.grid`` level -> render -> export into ``<atlas>/class/<slug>/``
(kind ``class``, docs/export_format.md).

Class settings: Carter et al. (2019) laid class atlases out with UMAP n_neighbors 20, min_dist
0.01, cosine in the class notebook and 20 / 0.02 / cosine in the production configuration (the
issue's values, our defaults: ``classes.n_neighbors`` / ``min_dist`` / ``metric``), or t-SNE
(``classes.method: tsne``, which the article found worked better for class atlases); an 8 x 8 grid
keeping cells with more than 4 samples; icons rendered with the main ``render`` settings unless
``classes.render`` overrides them (production: 80 px, 1056 steps, 3 attempts, batch 64). Every
other reduce parameter (PCA dims, seed, normalisation) is the main ``reduce`` section's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from stages.classes.select import class_slug, resolve_class, select_rows
from stages.classes.subset import export_subset, grid_and_render, subset_config
from stages.context import StageContext
from stages.model.registry import load_model
from stages.reduce import stage as reduce
from stages.sections import ClassesSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.subset import SubsetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attributions:
    """The store's top-k attributions of every row, read once for every class of a run."""

    idx: NDArray[np.int32]  # [n_rows, K], -1: none
    val: NDArray[np.float32]  # [n_rows, K]
    valid: NDArray[np.bool_]  # [n_rows]


@dataclass(frozen=True)
class ClassAtlasResult:
    index: int
    name: str
    slug: str
    rows: int
    cells: int
    icons_rendered: int
    export: str | None
    seconds: float


def read_attributions(store: AtlasStore) -> Attributions:
    """All rows' stored top-k attributions; refuse a store collected without them."""
    idx, val = store.attribution_topk()
    valid = np.asarray(store.valid_mask(), dtype=bool)
    out = Attributions(np.asarray(idx.compute(), np.int32), np.asarray(val.compute(), np.float32), valid)
    if not (out.idx[valid] >= 0).any():
        raise AtlasError(
            f"store {store.path} holds no attributions (collected with collect.head false); "
            "collect again with the head on to build class atlases"
        )
    return out


def rows_of_class(
    attr: Attributions, cls: int, mode: str, top_k: int, min_rows: int, what: str, section: str
) -> NDArray[np.int64]:
    """The class's rows; too few is a one-line error naming the class, the count and what to change."""
    rows = select_rows(attr.idx, attr.val, cls, mode, top_k, attr.valid)
    if len(rows) < min_rows:
        change = f"use {section}.mode both" if mode == "winner" else f"raise {section}.top_k"
        lower = f", lower {section}.min_rows" if min_rows > 1 else ""
        raise AtlasError(
            f"{what}: {section}.mode {mode!r} selects {len(rows)} rows, fewer than {section}.min_rows = {min_rows}; "
            f"{change}{lower}, or collect more images of the class"
        )
    return rows


def class_reduce_config(config: ClassesSection) -> ClassesSection:
    """The section with the class atlas's reduce settings (see the module docstring)."""
    c = config.classes
    r = config.reduce.model_copy(
        update={"method": c.method, "n_neighbors": c.n_neighbors, "min_dist": c.min_dist, "metric": c.metric}
    )
    return config.model_copy(update={"reduce": r})


def classes_folder(store: AtlasStore) -> Path:
    """``<store>.classes/``: every class atlas's derived groups (one DVC output folder)."""
    return store.path.with_name(f"{store.path.stem}.classes")


def run(config: ClassesSection, ctx: StageContext) -> list[ClassAtlasResult]:
    """Build the atlas of every class in ``classes.names`` in ``ctx.store``; ``ctx.on_atlas(name, icons)`` per class."""
    store, device = ctx.require_collect_store("classes"), ctx.device_for(config.render.device)
    progress, on_start, export = ctx.progress, ctx.on_atlas, config.export
    c = config.classes
    if not c.names:
        raise AtlasError("classes.names is empty; list the classes to build, e.g. --set 'classes.names=[tabby, 281]'")
    names = store.class_names
    targets = [resolve_class(name, names, "classes.names") for name in c.names]
    attr = read_attributions(store)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    sub_config = subset_config(class_reduce_config(config), c.grid, c.min_count, c.render)
    results = []
    for cls in dict.fromkeys(targets):  # each class once, in the order given
        t0 = time.perf_counter()
        name, slug = names[cls], class_slug(cls, names)
        what = f"class {cls} {name!r}"
        rows = rows_of_class(attr, cls, c.mode, c.top_k, c.min_rows, what, "classes")
        if c.method == "umap" and len(rows) <= c.n_neighbors:
            raise AtlasError(
                f"{what}: {len(rows)} rows cannot be laid out with classes.n_neighbors = {c.n_neighbors}; "
                "lower classes.n_neighbors or select more rows (classes.top_k, classes.mode)"
            )
        selection = {"kind": "class", "class": {"index": cls, "name": name}, "mode": c.mode, "top_k": c.top_k}
        subset = SubsetStore.create(store, slug, rows, selection, base=classes_folder(store))
        log.info("%s: %d rows (%s), layout with %s", what, len(rows), c.mode, c.method)
        reduce.run(sub_config.reduce, StageContext(subset))
        start = (lambda total, _n=name: on_start(_n, total)) if on_start is not None else None
        made = grid_and_render(
            sub_config, subset, device, what=what, whitening=c.whitening, model=model, progress=progress, on_start=start
        )
        out = None
        if export:
            out = export_subset(
                sub_config,
                subset,
                kind="class",
                slug=slug,
                title=f"{name} ({c.mode})",
                extra={"class": {"index": cls, "name": name}},
            )
        results.append(
            ClassAtlasResult(
                index=cls,
                name=name,
                slug=slug,
                rows=len(rows),
                cells=made.cells,
                icons_rendered=made.icons_rendered,
                export=str(out) if out else None,
                seconds=time.perf_counter() - t0,
            )
        )
    return results
