"""The reducers of the reduce stage (docs/method.md §3, docs/reduce_grid.md): the 2-D embedding of
the fitted rows (UMAP with its neighbour graph from faiss, t-SNE or PCA), and the placement of every
other row at its nearest fitted row's position."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.config import ReduceConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- features
@dataclass
class FeatureMap:
    """Linear map from raw activations to the space the neighbour search runs in.

    ``metric='cosine'``: unit rows, uncentered projection, unit rows again (so the inner
    product of two features approximates the cosine of the raw rows). ``'euclidean'``: centred
    PCA. ``dims=None`` (or >= channels) keeps every channel. Fitted state ends in ``_``.
    """

    metric: str = "cosine"
    dims: int | None = 64
    mean_: NDArray[np.float32] | None = None
    basis_: NDArray[np.float32] | None = None
    kept_energy_: float = 1.0

    def fit(self, raw: NDArray[np.floating]) -> FeatureMap:
        x = self._prepare(np.asarray(raw, dtype=np.float32))
        self.mean_ = x.mean(axis=0) if self.metric == "euclidean" else np.zeros(x.shape[1], np.float32)
        channels = x.shape[1]
        if self.dims is None or self.dims >= channels:
            self.basis_ = None
            return self
        centred = x - self.mean_
        gram = np.zeros((channels, channels), dtype=np.float64)
        for start in range(0, len(centred), 65536):
            part = centred[start : start + 65536].astype(np.float64)
            gram += part.T @ part
        eigvals, eigvecs = np.linalg.eigh(gram)
        order = np.argsort(eigvals)[::-1][: self.dims]
        # Fix each eigenvector's sign so the basis (and the layout) is the same run to run.
        vecs = eigvecs[:, order]
        vecs *= np.where(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])] < 0, -1.0, 1.0)
        self.basis_ = vecs.astype(np.float32)
        total = float(np.clip(eigvals, 0, None).sum())
        self.kept_energy_ = float(np.clip(eigvals[order], 0, None).sum() / total) if total > 0 else 1.0
        return self

    @property
    def out_dims(self) -> int:
        if self.mean_ is None:
            raise RuntimeError("FeatureMap is not fitted")
        return int(self.basis_.shape[1]) if self.basis_ is not None else int(self.mean_.shape[0])

    def transform(self, raw: NDArray[np.floating]) -> NDArray[np.float32]:
        if self.mean_ is None:
            raise RuntimeError("FeatureMap is not fitted")
        x = self._prepare(np.asarray(raw, dtype=np.float32))
        if self.basis_ is not None:
            x = np.asarray((x - self.mean_) @ self.basis_, dtype=np.float32)  # float32 already; typed so
        return self._prepare(x) if self.metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)

    def _prepare(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.metric != "cosine":
            return x
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        # An all-zero row (a dead position) has no direction; it stays zero.
        return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------------- reducers
def fit_embedding(features: NDArray[np.float32], cfg: ReduceConfig) -> NDArray[np.float32]:
    """2-D embedding of the fitted rows with the configured method (UMAP, t-SNE or PCA)."""
    if cfg.method == "umap":
        return _fit_umap(features, cfg)
    if cfg.method == "tsne":
        return _fit_tsne(features, cfg)
    return _fit_pca(features, cfg)


UMAP_ALL_PAIRS_BELOW = 4096  # umap-learn computes every pairwise distance itself below this many rows
EXACT_KNN_BELOW = 50_000  # knn: auto: exact search (~17 CPU-s at 50k) costs about what NN-descent's compile does


def umap_knn(features: NDArray[np.float32], n_neighbors: int, cfg: ReduceConfig) -> tuple[Any, Any, None] | None:
    """UMAP's neighbour graph by exact faiss search, or None to let umap-learn build it.

    umap-learn is exact below 4,096 rows and uses pynndescent's NN-descent above. NN-descent's
    numba code cannot be cached on disk (its functions take the metric as a function argument
    and ask numba for its thread count, which pins the compiled code to one process), so every
    process compiled it again: ~20 CPU-s, more than the rest of the demo's UMAP fit. Exact
    search of 14,508 x 64 features takes ~1.7 CPU-s, is deterministic, and the layout is as
    trustworthy (0.946 vs 0.948 at k = 10 on the demo store; docs/reduce_grid.md). It grows with
    the square of the rows, so from ``EXACT_KNN_BELOW`` rows (``knn: auto``) NN-descent is used.
    Each row's list holds the row itself at distance 0 (or an identical row), as umap-learn's own does.
    """
    n = len(features)
    exact = cfg.knn == "exact" or (cfg.knn == "auto" and n < EXACT_KNN_BELOW)
    if n < UMAP_ALL_PAIRS_BELOW or not exact:
        return None
    import faiss

    data = np.ascontiguousarray(features, dtype=np.float32)
    index: faiss.Index
    if cfg.metric == "cosine":  # FeatureMap rows are unit vectors: cosine distance = 1 - inner product
        index = faiss.IndexFlatIP(data.shape[1])
        index.add(data)
        similarity, indices = index.search(data, n_neighbors)
        distances = np.maximum(1.0 - similarity, 0.0)
    else:
        index = faiss.IndexFlatL2(data.shape[1])
        index.add(data)
        squared, indices = index.search(data, n_neighbors)
        distances = np.sqrt(np.maximum(squared, 0.0))
    return indices.astype(np.int64), distances.astype(np.float32), None


def _fit_umap(features: NDArray[np.float32], cfg: ReduceConfig) -> NDArray[np.float32]:
    from stages.reduce.numba_cache import prepare_umap

    umap = prepare_umap()  # its numba code compiled once per machine, not once per process
    n_neighbors = min(cfg.n_neighbors, len(features) - 1)
    knn = umap_knn(features, n_neighbors, cfg)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=cfg.min_dist,
        metric=cfg.metric,
        n_epochs=cfg.n_epochs,
        init=cfg.init,
        random_state=cfg.seed if cfg.deterministic else None,
        n_jobs=1 if cfg.deterministic else -1,
        low_memory=True,
        precomputed_knn=knn or (None, None, None),
    )
    with warnings.catch_warnings():
        # umap-learn warns about its own choices (e.g. spectral init falling back on tiny data, no
        # transform() with a precomputed graph: placement uses faiss, not transform()).
        warnings.simplefilter("ignore", category=UserWarning)
        return np.asarray(reducer.fit_transform(features), dtype=np.float32)


def _fit_tsne(features: NDArray[np.float32], cfg: ReduceConfig) -> NDArray[np.float32]:
    from sklearn.manifold import TSNE

    tsne = TSNE(
        n_components=2,
        perplexity=cfg.tsne_perplexity,
        metric=cfg.metric,
        init="pca" if cfg.init == "spectral" else cfg.init,
        random_state=cfg.seed,
        n_jobs=1 if cfg.deterministic else None,
    )
    return np.asarray(tsne.fit_transform(features), dtype=np.float32)


def _fit_pca(features: NDArray[np.float32], cfg: ReduceConfig) -> NDArray[np.float32]:
    return linear_2d(features).transform(features)


def linear_2d(features: NDArray[np.float32]) -> FeatureMap:
    """The first two principal components of the features (the ``method: pca`` layout)."""
    return FeatureMap(metric="euclidean", dims=2).fit(features)


# --------------------------------------------------------------------------------- placement
IVF_FROM_ROWS = 20_000  # below this many fitted rows exact search is cheap enough


def nearest_fitted(fitted: NDArray[np.float32], cfg: ReduceConfig) -> Any:
    """A faiss index over the fitted rows' features (inner product on unit vectors for cosine,
    squared L2 for euclidean).

    Exact search of 800k rows against 200k fitted ones would take ~520 s on 2 cores; an IVF index with
    ~2 sqrt(n) lists and ``place_nprobe`` 16 took ~39 s and found the exact nearest row for
    99.9% of queries (docs/reduce_grid.md). Its k-means uses faiss's fixed seed on the same
    (seeded) fitted rows, so placement stays deterministic on one machine.
    """
    import faiss

    dims = fitted.shape[1]
    metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "cosine" else faiss.METRIC_L2
    data = np.ascontiguousarray(fitted, dtype=np.float32)
    use_ivf = cfg.place_index == "ivf" or (cfg.place_index == "auto" and len(data) >= IVF_FROM_ROWS)
    if not use_ivf:
        flat: faiss.Index = faiss.IndexFlatIP(dims) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dims)
        flat.add(data)
        return flat
    n_lists = int(np.clip(round(2 * np.sqrt(len(data))), 1, max(1, len(data) // 39)))
    quantizer = faiss.IndexFlatIP(dims) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dims)
    ivf = faiss.IndexIVFFlat(quantizer, dims, n_lists, metric)
    ivf.cp.seed = 1234
    ivf.train(data)
    ivf.add(data)
    ivf.nprobe = min(cfg.place_nprobe, n_lists)
    return ivf


def place(index: Any, features: NDArray[np.float32], fitted_embedding: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each row at the embedding of its single nearest fitted row.

    Averaging several neighbours' positions pulls points between clusters (trustworthiness
    0.900 vs 0.968 for one neighbour, docs/method.md §10), so one neighbour it is.
    """
    if len(features) == 0:
        return np.zeros((0, 2), np.float32)
    queries = np.ascontiguousarray(features, dtype=np.float32)
    _, nearest = index.search(queries, 1)
    missed = nearest[:, 0] < 0  # IVF: every probed list was empty (never seen, but cheap to cover)
    if missed.any():
        exhaustive_probe = index.nlist
        index.nprobe, saved = exhaustive_probe, index.nprobe
        nearest[missed] = index.search(queries[missed], 1)[1]
        index.nprobe = saved
    return fitted_embedding[nearest[:, 0]]
