"""stages/grid/whitening.py: chunked second moment, ridge relative to the mean eigenvalue."""

from __future__ import annotations

import numpy as np
import pytest

from stages.grid.whitening import SecondMoment, absolute_ridge, whiten, whitening_matrix


def _relu_data(n: int = 400, c: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, c)) @ rng.normal(size=(c, c)), 0).astype(np.float32)


def test_chunked_moment_equals_direct() -> None:
    a = _relu_data()
    moment = SecondMoment(a.shape[1])
    for start in range(0, len(a), 37):
        moment.add(a[start : start + 37])
    a64 = a.astype(np.float64)
    assert moment.n == len(a)
    np.testing.assert_allclose(moment.moment(), a64.T @ a64 / len(a), rtol=1e-12)


def test_whitening_equals_numpy_inverse_with_ridge() -> None:
    a = _relu_data().astype(np.float64)
    m = a.T @ a / len(a)
    ridge = 1e-3
    ridge_abs = ridge * np.trace(m) / m.shape[0]  # relative to the mean eigenvalue
    assert absolute_ridge(m, ridge) == pytest.approx(ridge_abs)
    assert absolute_ridge(m, ridge) == pytest.approx(ridge * np.linalg.eigvalsh(m).mean())
    expected = np.linalg.inv(m + ridge_abs * np.eye(m.shape[0]))
    s = whitening_matrix(m, ridge)
    np.testing.assert_allclose(s, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(s, s.T)


def test_float16_blocks_do_not_overflow() -> None:
    a = np.full((2000, 3), 300.0, dtype=np.float16)  # 300^2 * 2000 is far beyond float16's 65504
    moment = SecondMoment(3)
    moment.add(a)
    np.testing.assert_allclose(moment.moment(), np.full((3, 3), 90000.0))


def test_dead_channel_needs_a_ridge() -> None:
    a = _relu_data()
    a[:, 3] = 0.0  # a channel that never fires makes A^T A singular
    m = a.astype(np.float64).T @ a / len(a)
    with pytest.raises(ValueError, match="ridge"):
        whitening_matrix(m, 0.0)
    s = whitening_matrix(m, 1e-3)
    assert np.isfinite(s).all()


def test_whiten_is_right_multiplication() -> None:
    s = np.diag([1.0, 2.0, 4.0])
    np.testing.assert_allclose(whiten(np.array([[1.0, 1.0, 1.0]]), s), [[1.0, 2.0, 4.0]])


def test_empty_moment_and_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        SecondMoment(4).moment()
    with pytest.raises(ValueError, match="block"):
        SecondMoment(4).add(np.zeros((3, 5)))
