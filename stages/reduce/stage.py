"""The reduce stage: a 2-D layout of every valid row of the store (docs/method.md §3).

Production parameters (Carter et al., 2019): UMAP, n_neighbors 50, min_dist 0.05, cosine, then
the layout normalised to [0, 1]^2 (:func:`stages.reduce.layout_math.normalize_layout`).

Why it is not one ``umap.UMAP().fit_transform(all_rows)``: at 1M rows that does not finish on a
2-core machine (spectral init alone ran > 9.5 min; see docs/reduce_grid.md). The stage instead

1. draws ``fit_samples`` rows uniformly at random (seeded) and reads them in one pass over the
   store's float16 chunks, cast to float32 per block;
2. fits a linear feature map on them (:class:`~stages.reduce.reducers.FeatureMap`): for the cosine metric, rows are
   L2-normalised and projected on the top ``pca_dims`` eigenvectors of their uncentered second
   moment (which preserves inner products, i.e. cosines), then renormalised; for euclidean, a
   centred PCA. The neighbour search then runs on 64 dims instead of 512-576;
3. fits the reducer (UMAP / t-SNE / PCA) on the fitted rows' features;
4. in a second pass, places every other row at the 2-D position of its nearest fitted row in
   feature space (faiss, inner product on unit vectors = cosine; an IVF index from 20k fitted
   rows, exact search below). The article notes that 100k samples were often enough for the
   layout; the placed rows add density and members to the cells.

With ``deterministic: true`` UMAP is seeded, which makes it single-threaded (umap-learn's rule);
``deterministic: false`` drops the seed from UMAP only (sampling, PCA and faiss stay seeded or
exact) and runs its optimisation on all cores.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.config import ReduceConfig
from stages.context import StageContext
from stages.reduce.layout_math import normalize_layout
from stages.reduce.reducers import FeatureMap, fit_embedding, linear_2d, nearest_fitted, place
from store import derived
from store.errors import AtlasError
from store.view import RowStore

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LayoutResult:
    """Summary of one reduce run (the arrays are in the store, see :mod:`store.derived`)."""

    n_rows: int
    n_fit: int
    n_placed: int
    method: str
    seed: int
    deterministic: bool
    feature_dims: int
    layout_id: str
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------- the stage
def check_enough_rows(n_valid: int, cfg: ReduceConfig, where: str) -> None:
    """Refuse a store too small to lay out, with what to do about it."""
    need = cfg.n_neighbors + 1
    if n_valid < need:
        raise AtlasError(
            f"store {where} has {n_valid} valid rows; reduce needs at least reduce.n_neighbors + 1 = {need}: "
            "collect more images (or views) or lower reduce.n_neighbors"
        )
    if min(cfg.fit_samples, n_valid) < need:
        raise AtlasError(f"reduce.fit_samples ({cfg.fit_samples}) must exceed reduce.n_neighbors ({cfg.n_neighbors})")
    if cfg.method == "tsne" and min(cfg.fit_samples, n_valid) <= cfg.tsne_perplexity:
        raise AtlasError(
            f"store {where}: t-SNE needs more fitted rows than reduce.tsne_perplexity ({cfg.tsne_perplexity}); "
            "lower the perplexity or collect more images"
        )


def choose_fit_rows(valid_rows: NDArray[np.int64], fit_samples: int, seed: int) -> NDArray[np.int64]:
    """A uniform random (seeded) subset of the valid rows, ascending; all of them if few."""
    if len(valid_rows) <= fit_samples:
        return valid_rows.copy()
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(valid_rows, size=fit_samples, replace=False))


def library_versions() -> dict[str, str]:
    """Versions that change a layout; recorded with it (docs/method.md §10, pitfalls)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("umap-learn", "pynndescent", "numba", "numpy", "scikit-learn", "faiss-cpu"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def read_fit_rows(
    store: RowStore, fit_rows: NDArray[np.int64], progress: Progress | None = None
) -> NDArray[np.float32]:
    """Pass 1: the fitted rows' raw activations (ascending row ids), cast to float32 one block at a time."""
    out = np.empty((len(fit_rows), store.channels), dtype=np.float32)
    for block in derived.iter_row_blocks([store.activations()], progress):
        lo, hi = np.searchsorted(fit_rows, [block.start, block.stop])
        if hi > lo:
            out[lo:hi] = block.arrays[0][fit_rows[lo:hi] - block.start]
    return out


def _embed_rest(
    store: RowStore,
    valid: NDArray[np.bool_],
    fit_rows: NDArray[np.int64],
    fitted_embedding: NDArray[np.float32],
    features: FeatureMap,
    to_2d: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    progress: Progress | None,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.bool_]]:
    """Pass 2: every valid row's 2-D position (fitted rows keep theirs, the rest go through ``to_2d``)."""
    rows_out, emb_out, fitted_out = [], [], []
    fit_pos = np.full(len(valid), -1, dtype=np.int64)
    fit_pos[fit_rows] = np.arange(len(fit_rows))
    for block in derived.iter_row_blocks([store.activations()], progress):
        rows = np.flatnonzero(valid[block.start : block.stop]) + block.start
        emb = np.empty((len(rows), 2), np.float32)
        here_fit = fit_pos[rows] >= 0
        emb[here_fit] = fitted_embedding[fit_pos[rows[here_fit]]]
        rest = rows[~here_fit]
        if len(rest):
            emb[~here_fit] = to_2d(features.transform(block.arrays[0][rest - block.start]))
        rows_out.append(rows)
        emb_out.append(emb)
        fitted_out.append(here_fit)
    return np.concatenate(rows_out), np.concatenate(emb_out), np.concatenate(fitted_out)


def _fit_reducer(
    cfg: ReduceConfig, fit_features: NDArray[np.float32]
) -> tuple[NDArray[np.float32], Callable[[NDArray[np.float32]], NDArray[np.float32]], str]:
    """The fitted rows' embedding, the map that takes any other row's features to 2-D, and its name."""
    if cfg.method == "pca":
        linear = linear_2d(fit_features)
        return linear.transform(fit_features), linear.transform, "linear (all rows)"
    fitted_embedding = fit_embedding(fit_features, cfg)
    index = nearest_fitted(fit_features, cfg)
    return fitted_embedding, lambda x: place(index, x, fitted_embedding), f"nearest fitted row ({type(index).__name__})"


def _layout_attrs(
    cfg: ReduceConfig, n_fit: int, n_rows: int, features: FeatureMap, placement: str, seconds: dict[str, float]
) -> dict[str, Any]:
    """What the layout group records about how it was made."""
    return {
        "method": cfg.method,
        "params": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "deterministic": cfg.deterministic,
        "versions": library_versions(),
        "n_fit": int(n_fit),
        "n_placed": int(n_rows - n_fit),
        "feature_dims": features.out_dims,
        "feature_energy": features.kept_energy_,
        "placement": placement,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def run(cfg: ReduceConfig, ctx: StageContext) -> LayoutResult:
    """Lay out every valid row of ``ctx.store`` in 2-D and write it with :func:`store.derived.write_layout`."""
    store, progress = ctx.require_store("reduce"), ctx.done_of_total()
    where = str(getattr(store, "path", "(in memory)"))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    store.require_collected(needed_by="reduce")
    valid = np.asarray(store.valid_mask(), dtype=bool)
    valid_rows = np.flatnonzero(valid).astype(np.int64)
    check_enough_rows(len(valid_rows), cfg, where)
    fit_rows = choose_fit_rows(valid_rows, cfg.fit_samples, cfg.seed)
    log.info("reduce %s: %d valid rows, fitting %s on %d of them", where, len(valid_rows), cfg.method, len(fit_rows))
    n_blocks = len(store.activations().chunks[0])
    n_passes = 1 if len(fit_rows) == len(valid_rows) else 2
    raw = read_fit_rows(store, fit_rows, _offset_progress(progress, 0, n_passes * n_blocks))
    seconds["read_fit_rows"] = time.perf_counter() - t0

    t = time.perf_counter()
    features = FeatureMap(metric=cfg.metric, dims=cfg.pca_dims).fit(raw)
    fit_features = features.transform(raw)
    del raw
    seconds["features"] = time.perf_counter() - t
    log.info("features: %d dims keep %.1f%% of the fitted rows' energy", features.out_dims, 100 * features.kept_energy_)

    t = time.perf_counter()
    fitted_embedding, to_2d, placement = _fit_reducer(cfg, fit_features)
    seconds["fit"] = time.perf_counter() - t
    log.info("fitted %s on %d rows in %.1f s", cfg.method, len(fit_rows), seconds["fit"])

    t = time.perf_counter()
    if n_passes == 1:  # every valid row was fitted: no second pass needed
        rows, embedding, fitted = fit_rows, fitted_embedding, np.ones(len(fit_rows), dtype=bool)
    else:
        step = _offset_progress(progress, n_blocks, 2 * n_blocks)
        rows, embedding, fitted = _embed_rest(store, valid, fit_rows, fitted_embedding, features, to_2d, step)
    seconds["place"] = time.perf_counter() - t

    layout = normalize_layout(embedding, cfg.clip_percentiles, cfg.margin)
    seconds["total"] = time.perf_counter() - t0
    attrs = _layout_attrs(cfg, len(fit_rows), len(rows), features, placement, seconds)
    layout_id = derived.write_layout(
        store, derived.Layout(rows=rows, layout=layout, embedding=embedding, fitted=fitted, attrs=attrs)
    )
    log.info("reduce done in %.1f s: %s", seconds["total"], {k: round(v, 1) for k, v in seconds.items()})
    return LayoutResult(
        n_rows=int(len(rows)),
        n_fit=int(len(fit_rows)),
        n_placed=int(len(rows) - len(fit_rows)),
        method=cfg.method,
        seed=cfg.seed,
        deterministic=cfg.deterministic,
        feature_dims=features.out_dims,
        layout_id=layout_id,
        seconds=seconds,
    )


def layout_in_memory(raw: NDArray[np.floating], cfg: ReduceConfig) -> derived.Layout:
    """The layout of an in-memory ``[n, C]`` activation matrix, the stage's method without a store.

    For the notebook API (:func:`pipeline.api.activation_atlas`): the same seeded choice of fitted
    rows, :class:`~stages.reduce.reducers.FeatureMap`, reducer, nearest-fitted-row placement and
    :func:`~stages.reduce.layout_math.normalize_layout` as :func:`run`, on rows ``0..n-1``; nothing
    is written. The caller checks the shape and that there are enough rows for ``cfg.method``.
    """
    t0 = time.perf_counter()
    x = np.asarray(raw, dtype=np.float32)
    rows = np.arange(len(x), dtype=np.int64)
    fit_rows = choose_fit_rows(rows, cfg.fit_samples, cfg.seed)
    features = FeatureMap(metric=cfg.metric, dims=cfg.pca_dims).fit(x[fit_rows])
    fitted_embedding, to_2d, placement = _fit_reducer(cfg, features.transform(x[fit_rows]))
    embedding = np.empty((len(x), 2), np.float32)
    fitted = np.zeros(len(x), dtype=bool)
    fitted[fit_rows] = True
    embedding[fit_rows] = fitted_embedding
    rest = np.flatnonzero(~fitted)
    for start in range(0, len(rest), 65536):  # the placed rows a chunk at a time, like the stage's second pass
        part = rest[start : start + 65536]
        embedding[part] = to_2d(features.transform(x[part]))
    layout = normalize_layout(embedding, cfg.clip_percentiles, cfg.margin)
    attrs = {
        "method": cfg.method,
        "params": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "n_fit": int(len(fit_rows)),
        "n_placed": int(len(rest)),
        "feature_dims": features.out_dims,
        "placement": placement,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info(
        "laid out %d in-memory rows with %s (%d fitted) in %.1f s", len(x), cfg.method, len(fit_rows), attrs["seconds"]
    )
    return derived.Layout(rows=rows, layout=layout, embedding=embedding, fitted=fitted, attrs=attrs)


def _offset_progress(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """Report the two passes over the store as one progress bar of ``total`` blocks."""
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)
