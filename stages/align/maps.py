"""Linear maps between two activation spaces sampled at the same image locations (pure math).

Carter et al. (2019) align the atlases of two models (or two layers) by translating each
layer's activations into the other's space with a linear map fitted by least squares on
activations recorded at the same inputs and positions (lucid's ``push_activations``: the
uncentred regression ``A (A^T A)^-1 A^T B``), then laying out each model's own activations next
to its translation of the other's (docs/method.md §11). Here the map is ridge-regularised
(scikit-learn's ``Ridge``, no intercept as in lucid), because a few thousand rows of a 960-1152
channel layer make ``A^T A`` ill-conditioned. The penalty is chosen among ``ridge`` candidates,
each relative to the mean eigenvalue of ``A^T A`` (the grid's whitening uses the same convention,
so a value means the same at any activation scale), by grouped cross-validation on the fit rows
(scikit-learn's ``GridSearchCV`` with ``GroupKFold`` over photos), never on the held-out rows.

What a map is worth is measured on rows it was not fitted on: the rows of a held-out share of
the *images* (the views and positions of one photo are never split between fit and test, so the
score is not inflated by near-duplicate rows), scored with R^2 over all output channels
(variance-weighted: the fraction of the target layer's variance the translation explains).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class LinearMap:
    """``y ~ x @ coef`` fitted on ``fit`` rows; ``r2`` on the held-out rows."""

    coef: NDArray[np.float64]  # [C_in, C_out]
    alpha: float  # the absolute ridge penalty used
    ridge: float  # the same, relative to the mean eigenvalue of X^T X (the candidate chosen)
    r2_test: float
    r2_fit: float

    def __call__(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        return (np.asarray(x, np.float64) @ self.coef).astype(np.float32)


@dataclass(frozen=True)
class AlignedMaps:
    """Both directions, the split they were fitted and scored on, and each side's scale."""

    a_to_b: LinearMap
    b_to_a: LinearMap
    scale_a: float  # RMS row norm of side a's activations (each side is divided by its own)
    scale_b: float
    n_fit: int
    n_test: int


def rms_norm(x: NDArray[np.floating]) -> float:
    """Root-mean-square row norm (1.0 for an all-zero matrix)."""
    value = float(np.sqrt(np.mean(np.sum(np.square(np.asarray(x, np.float64)), axis=1)))) if len(x) else 0.0
    return value if value > 0 else 1.0


def held_out_split(groups: NDArray[np.integer], test_fraction: float, seed: int) -> NDArray[np.bool_]:
    """[n] True for the test rows: whole groups (images) drawn at random (seeded), about ``test_fraction`` of them."""
    unique = np.unique(groups)
    n_test = int(round(test_fraction * len(unique)))
    n_test = min(max(n_test, 1), len(unique) - 1) if len(unique) > 1 else 0
    test_groups = np.random.default_rng(seed).choice(unique, size=n_test, replace=False) if n_test else unique[:0]
    return np.isin(groups, test_groups)


def fit_map(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    test: NDArray[np.bool_],
    ridge: list[float],
    groups: NDArray[np.integer] | None = None,
    folds: int = 3,
) -> LinearMap:
    """Ridge regression ``y ~ x`` (no intercept) on the rows outside ``test``; R^2 on both parts.

    With several ``ridge`` candidates the penalty is picked by ``folds``-fold cross-validation of the
    fit rows grouped by ``groups`` (variance-weighted R^2).
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import make_scorer, r2_score
    from sklearn.model_selection import GridSearchCV, GroupKFold

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    fit = ~test
    mean_eigenvalue = float(np.sum(np.square(x[fit]))) / max(1, x.shape[1])  # trace(X^T X) / C
    alphas = sorted({float(r) * mean_eigenvalue for r in ridge})
    fit_groups = groups[fit] if groups is not None else np.arange(int(fit.sum()))
    n_folds = min(folds, len(np.unique(fit_groups)))
    if len(alphas) > 1 and n_folds >= 2:
        search = GridSearchCV(
            Ridge(fit_intercept=False),
            {"alpha": alphas},
            cv=GroupKFold(n_splits=n_folds),
            scoring=make_scorer(r2_score, multioutput="variance_weighted"),
            refit=True,
        )
        model = search.fit(x[fit], y[fit], groups=fit_groups).best_estimator_
    else:
        model = Ridge(alpha=alphas[0], fit_intercept=False).fit(x[fit], y[fit])
    coef = np.asarray(model.coef_, np.float64).T  # sklearn: [C_out, C_in]

    def r2(rows: NDArray[np.bool_]) -> float:
        if rows.sum() < 2:
            return float("nan")
        return float(r2_score(y[rows], x[rows] @ coef, multioutput="variance_weighted"))

    return LinearMap(
        coef=coef,
        alpha=float(model.alpha),
        ridge=float(model.alpha) / mean_eigenvalue if mean_eigenvalue > 0 else float("nan"),
        r2_test=r2(test),
        r2_fit=r2(fit),
    )


def fit_aligned_maps(
    a: NDArray[np.floating],
    b: NDArray[np.floating],
    groups: NDArray[np.integer],
    test_fraction: float,
    ridge: list[float],
    seed: int,
) -> AlignedMaps:
    """Maps a -> b and b -> a between row-aligned activations (row r of both: one image location).

    Each side is first divided by its RMS row norm, so the maps (and the joint layout built from
    them) do not depend on the two layers' arbitrary activation scales.
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"row-aligned activations needed: {a.shape[0]} rows vs {b.shape[0]}")
    scale_a, scale_b = rms_norm(a), rms_norm(b)
    an, bn = np.asarray(a, np.float64) / scale_a, np.asarray(b, np.float64) / scale_b
    test = held_out_split(groups, test_fraction, seed)
    return AlignedMaps(
        a_to_b=fit_map(an, bn, test, ridge, groups),
        b_to_a=fit_map(bn, an, test, ridge, groups),
        scale_a=scale_a,
        scale_b=scale_b,
        n_fit=int((~test).sum()),
        n_test=int(test.sum()),
    )


def joint_rows(
    a: NDArray[np.floating], b: NDArray[np.floating], maps: AlignedMaps
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The two row groups laid out together: ``[a, a -> b]`` for side a and ``[b -> a, b]`` for side b.

    Both live in the same ``C_a + C_b`` space (lucid's ``_combine_activations``, BIDIRECTIONAL), so
    one UMAP places a location of side a near the same location of side b when the maps agree.
    """
    an = np.asarray(a, np.float32) / maps.scale_a
    bn = np.asarray(b, np.float32) / maps.scale_b
    rows_a = np.concatenate([an, maps.a_to_b(an)], axis=1)
    rows_b = np.concatenate([maps.b_to_a(bn), bn], axis=1)
    return rows_a, rows_b
