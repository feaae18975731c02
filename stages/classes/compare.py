"""Class-comparison atlases: two classes' samples on an "a <-> b" axis (docs/method.md §8).

For each ``[a, b]`` of ``compare.pairs``: the union of both classes' selected rows
(:mod:`stages.classes.select`, ``compare.mode`` / ``compare.top_k``) -> a
:class:`store.subset.SubsetStore` in ``<store>.compare/<a>--<b>.*.zarr`` -> its layout written
here instead of by the reduce stage: x = the attribution difference scaled by its 99th
percentile, y = a 1-D t-SNE (cosine) of the activations (:mod:`stages.classes.axes` defines both
exactly) -> the grid stage at ``compare.grid`` (10 x 10) -> render -> export into
``<atlas>/compare/<a>--<b>/`` (kind ``compare``, axes naming both classes).

Carter et al. (2019) used this to show which concepts push a sample toward one of two similar
classes ("snorkel" vs "scuba diver": a steam-locomotive concept on the scuba diver side).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.classes.atlas import Attributions, read_attributions, rows_of_class
from stages.classes.axes import comparison_layout
from stages.classes.select import class_slug, class_values, resolve_class
from stages.classes.subset import export_subset, grid_and_render, subset_config
from stages.config import CompareConfig
from stages.context import StageContext
from stages.model.registry import load_model
from stages.reduce.stage import library_versions
from stages.sections import ClassesSection
from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.subset import SubsetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompareResult:
    a: tuple[int, str]
    b: tuple[int, str]
    slug: str
    rows: int
    rows_a_only: int
    rows_b_only: int
    scale: float
    cells: int
    icons_rendered: int
    export: str | None
    seconds: float


def compare_folder(store: AtlasStore) -> Path:
    """``<store>.compare/``: every comparison's derived groups (one DVC output folder)."""
    return store.path.with_name(f"{store.path.stem}.compare")


def tsne_1d(activations: NDArray[np.floating], cfg: CompareConfig) -> NDArray[np.float32]:
    """The y axis: scikit-learn's TSNE with one component (Barnes-Hut) on the raw activations.

    The perplexity is capped below a third of the rows (sklearn needs perplexity < n; a third keeps
    its neighbourhoods meaningful on small comparisons) and the cap is logged.
    """
    from sklearn.manifold import TSNE

    n = len(activations)
    perplexity = min(cfg.tsne_perplexity, max(1.0, (n - 1) / 3.0))
    if perplexity < cfg.tsne_perplexity:
        log.info("compare: t-SNE perplexity lowered to %.1f for %d rows", perplexity, n)
    tsne = TSNE(n_components=1, perplexity=perplexity, metric=cfg.tsne_metric, init="pca", random_state=cfg.seed)
    return np.asarray(tsne.fit_transform(np.asarray(activations, np.float32)), np.float32)[:, 0]


def read_rows(store: AtlasStore, rows: NDArray[np.int64]) -> NDArray[np.float32]:
    """Raw activations of ``rows`` (ascending), one store chunk at a time, as float32."""
    out = np.empty((len(rows), store.channels), np.float32)
    for block in derived.iter_row_blocks([store.activations()]):
        lo, hi = np.searchsorted(rows, [block.start, block.stop])
        if hi > lo:
            out[lo:hi] = block.arrays[0][rows[lo:hi] - block.start]
    return out


def write_comparison_layout(
    subset: SubsetStore, attr: Attributions, a: int, b: int, cfg: CompareConfig, config: ClassesSection
) -> float:
    """Compute the two axes of ``subset``'s rows and store them as its layout; return the x scale."""
    rows = subset.rows
    attr_a, _ = class_values(attr.idx[rows], attr.val[rows], a)
    attr_b, _ = class_values(attr.idx[rows], attr.val[rows], b)
    y = tsne_1d(read_rows(subset.parent, rows), cfg)
    layout, embedding, scale = comparison_layout(
        attr_a, attr_b, y, cfg.percentile, config.reduce.clip_percentiles, config.reduce.margin
    )
    attrs = {
        "method": "compare",
        "x": f"clip((attr_a - attr_b) / p{cfg.percentile:g}(|attr_a - attr_b|), -1, 1), "
        "drawn (1 - x) / 2: a left, b right",
        "y": "1-D t-SNE, normalised like the layout",
        "classes": [a, b],
        "scale": scale,
        "params": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "versions": library_versions(),
        "n_fit": int(len(rows)),
        "n_placed": 0,
    }
    derived.write_layout(
        subset,
        derived.Layout(rows=rows, layout=layout, embedding=embedding, fitted=np.ones(len(rows), bool), attrs=attrs),
    )
    return scale


def _resolve_pairs(cfg: CompareConfig, names: list[str]) -> list[tuple[int, int]]:
    """``compare.pairs`` as class indices; a pair of one class twice is an error."""
    pairs = [(resolve_class(a, names, "compare.pairs"), resolve_class(b, names, "compare.pairs")) for a, b in cfg.pairs]
    for a, b in pairs:
        if a == b:
            raise AtlasError(f"compare.pairs: [{names[a]}, {names[b]}] compares a class with itself; pick two classes")
    return pairs


def _pair_rows(
    attr: Attributions, a: int, b: int, cfg: CompareConfig, names: list[str], what: str
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The rows selected for class ``a``, for ``b``, and their union (at least ``compare.min_rows``)."""
    rows_a = rows_of_class(attr, a, cfg.mode, cfg.top_k, 1, f"{what}: class {a} {names[a]!r}", "compare")
    rows_b = rows_of_class(attr, b, cfg.mode, cfg.top_k, 1, f"{what}: class {b} {names[b]!r}", "compare")
    rows = np.union1d(rows_a, rows_b)
    if len(rows) < cfg.min_rows:
        raise AtlasError(
            f"{what}: {len(rows)} rows selected, fewer than compare.min_rows = {cfg.min_rows}; "
            "use compare.mode both, raise compare.top_k or lower compare.min_rows"
        )
    return rows_a, rows_b, rows


def _export(
    config: ClassesSection, subset: SubsetStore, slug: str, name_a: str, name_b: str, selection: dict[str, Any]
) -> Path:
    """The comparison exported like the main atlas, ``a`` drawn left (x) and the 1-D t-SNE as y."""
    return export_subset(
        config,
        subset,
        kind="compare",
        slug=slug,
        title=f"{name_a} vs {name_b}",
        extra={"classes": selection["classes"]},
        axes={"x": f"{name_a}  <->  {name_b}", "y": "1-D t-SNE"},
    )


def run(config: ClassesSection, ctx: StageContext) -> list[CompareResult]:
    """Build every comparison of ``compare.pairs`` in ``ctx.store``; ``ctx.on_atlas("a--b", icons)`` per pair."""
    store, device = ctx.require_collect_store("compare"), ctx.device_for(config.render.device)
    progress, on_start, export = ctx.progress, ctx.on_atlas, config.export
    cfg = config.compare
    if not cfg.pairs:
        raise AtlasError(
            "compare.pairs is empty; list [a, b] class pairs, e.g. --set 'compare.pairs=[[lemon, orange]]'"
        )
    names = store.class_names
    pairs = _resolve_pairs(cfg, names)
    attr = read_attributions(store)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    sub_config = subset_config(config, cfg.grid, cfg.min_count, cfg.render)
    results = []
    for a, b in pairs:
        t0 = time.perf_counter()
        slug = f"{class_slug(a, names)}--{class_slug(b, names)}"
        what = f"comparison {names[a]!r} vs {names[b]!r}"
        rows_a, rows_b, rows = _pair_rows(attr, a, b, cfg, names, what)
        selection = {
            "kind": "compare",
            "classes": [{"index": a, "name": names[a]}, {"index": b, "name": names[b]}],
            "mode": cfg.mode,
            "top_k": cfg.top_k,
        }
        subset = SubsetStore.create(store, slug, rows, selection, base=compare_folder(store))
        scale = write_comparison_layout(subset, attr, a, b, cfg, config)
        start = (lambda total, _s=slug: on_start(_s, total)) if on_start is not None else None
        made = grid_and_render(
            sub_config,
            subset,
            device,
            what=what,
            whitening=cfg.whitening,
            model=model,
            progress=progress,
            on_start=start,
        )
        out = _export(sub_config, subset, slug, names[a], names[b], selection) if export else None
        results.append(
            CompareResult(
                a=(a, names[a]),
                b=(b, names[b]),
                slug=slug,
                rows=len(rows),
                rows_a_only=len(np.setdiff1d(rows_a, rows_b)),
                rows_b_only=len(np.setdiff1d(rows_b, rows_a)),
                scale=scale,
                cells=made.cells,
                icons_rendered=made.icons_rendered,
                export=str(out) if out else None,
                seconds=time.perf_counter() - t0,
            )
        )
    return results
