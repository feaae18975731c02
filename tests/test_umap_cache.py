"""UMAP without a compile in every process: numba's disk cache for umap-learn, exact neighbours by faiss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.config import ReduceConfig
from stages.reduce import numba_cache
from stages.reduce.reducers import EXACT_KNN_BELOW, UMAP_ALL_PAIRS_BELOW, umap_knn

REPO = Path(__file__).resolve().parents[1]

# One of umap-learn's functions that is declared without cache=True (so only prepare_umap makes it cache).
_PROBE = """
import json
import numba
from stages.reduce.numba_cache import prepare_umap
umap = prepare_umap()
import numpy as np
from umap.umap_ import smooth_knn_dist
distances = np.sort(np.random.default_rng(0).random((40, 6)).astype(np.float32), axis=1)
sigmas, rhos = smooth_knn_dist(distances, 6.0)
stats = smooth_knn_dist.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "sigma": float(sigmas.sum()), "folder": numba.config.CACHE_DIR}))
"""


def _probe() -> dict:
    """The probe in a fresh process, with the cache where the pipeline puts it (the user's cache folder:
    a throw-away one would make pynndescent compile its whole import in the first process, ~1 min)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_umap_code_from_the_cache_instead_of_compiling() -> None:
    first, second = _probe(), _probe()
    assert first["hits"] + first["misses"] == 1  # compiled (and written) or loaded by an earlier run
    folder = Path(os.environ["NUMBA_CACHE_DIR"]) if os.environ.get("NUMBA_CACHE_DIR") else numba_cache.cache_dir()
    assert Path(first["folder"]) == folder
    assert any(folder.rglob("*smooth_knn_dist*.nbi")), f"no cache index for smooth_knn_dist in {folder}"
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, not compiled
    assert second["sigma"] == first["sigma"]  # the same machine code: the same numbers


def test_cache_folder_is_the_users_own_or_numbas_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache.cache_dir() == tmp_path / "mine"  # the user's choice wins
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert numba_cache.cache_dir() == tmp_path / "xdg" / "activation-atlas" / "numba"
        # an unwritable user cache (a read-only home, say): a private folder under the temp dir instead
        blocker = tmp_path / "not_a_folder"
        blocker.write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "xdg"))
        (tmp_path / "tmp").mkdir()
        monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
        fallback = numba_cache.cache_dir()
        assert fallback is not None and fallback.is_dir() and fallback.is_relative_to(tmp_path / "tmp")


def _unit_rows(n: int, dims: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_neighbour_graph_is_the_brute_force_one() -> None:
    n, k = UMAP_ALL_PAIRS_BELOW + 500, 10
    x = _unit_rows(n, 16, seed=1)
    indices, distances, index = umap_knn(x, k, ReduceConfig())
    assert index is None and indices.shape == distances.shape == (n, k) and indices.dtype == np.int64
    rows = np.random.default_rng(2).choice(n, 64, replace=False)
    cosine = 1.0 - x[rows] @ x.T
    expected = np.argsort(cosine, axis=1)[:, :k]
    assert np.array_equal(np.sort(indices[rows], axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(distances[rows], np.take_along_axis(cosine, expected, 1), atol=1e-5)
    assert np.array_equal(indices[rows, 0], rows)  # each row is its own nearest neighbour
    again = umap_knn(x, k, ReduceConfig())
    assert np.array_equal(again[0], indices) and np.array_equal(again[1], distances)  # deterministic
    euclid, dist_e, _ = umap_knn(x, k, ReduceConfig(metric="euclidean"))
    np.testing.assert_allclose(
        dist_e[rows], np.sqrt(np.maximum(np.take_along_axis(2 * cosine, expected, 1), 0)), atol=1e-3
    )


def test_umap_builds_its_own_graph_when_told_or_when_small() -> None:
    x = _unit_rows(UMAP_ALL_PAIRS_BELOW - 1, 8, seed=3)
    assert umap_knn(x, 10, ReduceConfig()) is None  # umap-learn is exact on small data by itself
    y = _unit_rows(UMAP_ALL_PAIRS_BELOW + 10, 8, seed=4)
    assert umap_knn(y, 10, ReduceConfig(knn="nndescent")) is None
    assert umap_knn(y, 10, ReduceConfig(knn="auto")) is not None
    assert EXACT_KNN_BELOW > UMAP_ALL_PAIRS_BELOW


def test_the_cli_loads_torch_only_for_commands_that_need_a_model() -> None:
    """`atlas reduce` in a fresh process: no torch import (~3 s), yet feature-visualization errors
    still end as one line once that engine is loaded (pipeline/cli.py, _user_errors)."""
    code = "import sys, pipeline.cli, pipeline.commands.stages, stages.reduce.stage\nprint('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stdout + done.stderr[-1000:]
    from pipeline import cli
    from stages.featurevis.errors import FeatureVisError

    assert FeatureVisError in cli._user_errors()
