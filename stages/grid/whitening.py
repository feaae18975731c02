"""Whitening of cell directions (docs/method.md §5).

lucid's whitened atlas notebooks render the direction ``v' = v S`` with ``S`` the inverse of the
*uncentered* second moment ``A^T A / n`` of the collected activations. lucid inverted it with no
regularisation; channels that are (almost) never active make that matrix (nearly) singular, so
we add a ridge: ``S = (M + ridge * mean_eigenvalue(M) * I)^-1`` with ``mean_eigenvalue(M) =
trace(M) / C``. Making the ridge relative keeps one ``grid.ridge`` value (default 1e-3)
meaningful for any layer's activation scale; it caps the condition number of ``S`` near
``1 + 1/ridge`` times ``C`` at worst and changes well-conditioned directions by ~0.1%.

The second moment is accumulated chunk by chunk in float64 (:class:`SecondMoment`), so the grid
stage computes it in the same pass over the store in which it computes the cell means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass
class SecondMoment:
    """Running uncentered second moment ``sum_r a_r a_r^T`` over chunks of rows, in float64."""

    channels: int
    total: NDArray[np.float64] = field(init=False)
    n: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.total = np.zeros((self.channels, self.channels), dtype=np.float64)

    def add(self, block: NDArray[np.floating]) -> None:
        """Add the rows of one chunk (any float dtype; cast to float64 so sums cannot overflow)."""
        rows = np.asarray(block)
        if rows.ndim != 2 or rows.shape[1] != self.channels:
            raise ValueError(f"block must be [rows, {self.channels}] (got shape {rows.shape})")
        if rows.shape[0] == 0:
            return
        rows64 = rows.astype(np.float64, copy=False)
        self.total += rows64.T @ rows64
        self.n += rows.shape[0]

    def moment(self) -> NDArray[np.float64]:
        """``A^T A / n`` (symmetrised against rounding)."""
        if self.n == 0:
            raise ValueError("no rows were added; the second moment of nothing is undefined")
        m = self.total / self.n
        return (m + m.T) / 2.0


def absolute_ridge(moment: NDArray[np.floating], ridge: float) -> float:
    """The ridge added to the diagonal: ``ridge`` times the mean eigenvalue ``trace(M) / C``."""
    m = np.asarray(moment, dtype=np.float64)
    return float(ridge * np.trace(m) / m.shape[0])


def whitening_matrix(moment: NDArray[np.floating], ridge: float = 1e-3) -> NDArray[np.float64]:
    """``S = (M + absolute_ridge(M, ridge) * I)^-1`` for a symmetric PSD second moment ``M``.

    Computed through the eigendecomposition so ``S`` is exactly symmetric; a matrix that is
    still singular after the ridge (ridge 0 and a dead channel) raises ``ValueError``.
    """
    m = np.asarray(moment, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"second moment must be square (got shape {m.shape})")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0 (got {ridge})")
    eigvals, eigvecs = np.linalg.eigh((m + m.T) / 2.0)
    shifted = eigvals + absolute_ridge(m, ridge)
    scale = max(float(np.abs(shifted).max()), np.finfo(np.float64).tiny)
    if shifted.min() <= scale * 1e-12:
        raise ValueError("second moment is singular (a channel is never active); use a ridge > 0 (grid.ridge)")
    s = (eigvecs / shifted) @ eigvecs.T
    return (s + s.T) / 2.0


def whiten(directions: NDArray[np.floating], s: NDArray[np.floating]) -> NDArray[np.float32]:
    """``v' = v S`` for each row ``v`` of ``directions`` (the render stage's objective input)."""
    return (np.asarray(directions, dtype=np.float64) @ np.asarray(s, dtype=np.float64)).astype(np.float32)
