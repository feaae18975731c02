"""stages/reduce/stage.py: seeded UMAP reproducibility, t-SNE and PCA paths, refusals, stored metadata.

UMAP costs ~60 s of numba compilation per process, so there is one UMAP test (two seeded runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.config import Config
from stages.context import StageContext
from stages.reduce import stage as reduce
from store import derived, schema
from store.atlas_store import AtlasStore
from store.errors import AtlasError


def _clustered(n: int = 600, c: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative, clustered ReLU-like rows (4 clusters) and their cluster ids."""
    rng = np.random.default_rng(seed)
    centres = np.maximum(rng.normal(size=(4, c)), 0) * 3
    labels = rng.integers(0, 4, size=n)
    x = np.maximum(centres[labels] + rng.normal(scale=0.5, size=(n, c)), 0)
    return x.astype(np.float16), labels.astype(np.int32)


def _store(tmp_path: Path, n: int = 600, name: str = "s.zarr") -> AtlasStore:
    x, labels = _clustered(n)
    return AtlasStore.create_synthetic_for_tests(tmp_path / name, x, labels=labels, rows_per_chunk=128)


def _config(method: str, **reduce: object) -> Config:
    cfg = Config()
    cfg.reduce.method = method  # type: ignore[assignment]
    cfg.reduce.n_neighbors = 15
    cfg.reduce.pca_dims = 8
    for key, value in reduce.items():
        setattr(cfg.reduce, key, value)
    return cfg


def _cluster_separation(layout: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance between cluster centres over mean within-cluster spread (> 1: separated)."""
    centres = np.stack([layout[labels == k].mean(0) for k in np.unique(labels)])
    spread = np.mean([layout[labels == k].std(0).mean() for k in np.unique(labels)])
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    return float(gaps[np.triu_indices(len(centres), 1)].mean() / spread)


def test_seeded_umap_is_identical_run_to_run_and_records_how_it_was_made(tmp_path: Path) -> None:
    store = _store(tmp_path)
    status = store.group[schema.INPUTS]["status"]
    status[3] = status[400] = schema.STATUS_FIRST_SKIP  # skipped inputs are not laid out
    cfg = _config("umap", fit_samples=400, seed=7)
    first = reduce.run(cfg.reduce, StageContext(store))
    layout_a = derived.read_layout(store)
    second = reduce.run(cfg.reduce, StageContext(store))
    layout_b = derived.read_layout(store)
    np.testing.assert_array_equal(layout_a.embedding, layout_b.embedding)
    np.testing.assert_array_equal(layout_a.layout, layout_b.layout)
    assert first.layout_id == second.layout_id
    assert first.n_fit == 400 and first.n_placed == 598 - 400 and first.n_rows == 598
    np.testing.assert_array_equal(layout_a.rows, np.flatnonzero(store.valid_mask()))
    assert layout_a.fitted.sum() == 400
    assert layout_a.layout.min() == 0.0 and layout_a.layout.max() == 1.0
    attrs = layout_a.attrs
    assert attrs["seed"] == 7 and attrs["params"]["n_neighbors"] == 15 and attrs["params"]["min_dist"] == 0.05
    assert {"umap-learn", "numpy", "scikit-learn", "faiss-cpu"} <= set(attrs["versions"])
    labels = store.row_labels()[layout_a.rows]
    assert _cluster_separation(layout_a.layout, labels) > 2.0


def test_tsne_path(tmp_path: Path) -> None:
    store = _store(tmp_path, n=300)
    result = reduce.run(_config("tsne", fit_samples=200, tsne_perplexity=20.0).reduce, StageContext(store))
    layout = derived.read_layout(store)
    assert result.method == "tsne" and result.n_fit == 200 and result.n_placed == 100
    assert layout.attrs["method"] == "tsne"
    assert _cluster_separation(layout.layout, store.row_labels()[layout.rows]) > 2.0


def test_pca_path_is_linear_in_all_rows(tmp_path: Path) -> None:
    store = _store(tmp_path, n=300)
    reduce.run(_config("pca", fit_samples=300, pca_dims=None, metric="euclidean").reduce, StageContext(store))
    layout = derived.read_layout(store)
    x = np.asarray(store.activations().compute(), dtype=np.float64)
    centred = x - x.mean(0)
    top2 = np.linalg.svd(centred, full_matrices=False)[2][:2]
    expected = centred @ top2.T
    # Same axes up to sign: |correlation| of each embedding axis with its principal component.
    for axis in range(2):
        corr = np.corrcoef(layout.embedding[:, axis], expected[:, axis])[0, 1]
        assert abs(corr) > 0.999


def test_feature_map_preserves_cosines() -> None:
    x, labels = _clustered(400, c=32)
    fm = reduce.FeatureMap(metric="cosine", dims=16).fit(x.astype(np.float32))
    f = fm.transform(x.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    raw = x.astype(np.float64)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    # inner products of features approximate the raw cosines (uncentered projection)
    assert np.abs(raw @ raw.T - f @ f.T).mean() < 0.02 and fm.kept_energy_ > 0.9
    nearest = np.argsort(-(f @ f.T), axis=1)[:, 1]
    assert np.mean(labels[nearest] == labels) > 0.99
    full = reduce.FeatureMap(metric="cosine", dims=None).fit(x.astype(np.float32))
    np.testing.assert_allclose(full.transform(x.astype(np.float32)), raw, atol=1e-6)


@pytest.mark.parametrize("n_valid", [0, 15])
def test_empty_or_too_small_store_is_refused_with_what_to_do(tmp_path: Path, n_valid: int) -> None:
    store = _store(tmp_path, n=16)
    status = store.group[schema.INPUTS]["status"]
    status[n_valid:] = schema.STATUS_FIRST_SKIP
    with pytest.raises(AtlasError) as err:
        reduce.run(_config("umap").reduce, StageContext(store))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "s.zarr") in message
    assert f"has {n_valid} valid rows" in message and "n_neighbors + 1 = 16" in message
    assert "collect more images" in message and "lower reduce.n_neighbors" in message
