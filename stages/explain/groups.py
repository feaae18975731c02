"""Pure math of ``atlas explain``: nearest atlas cells per position, and NMF groups of positions.

Two views of one image's activations ``[H*W, C]`` at the atlas layer:

- the **semantic dictionary** (Carter et al., 2019, "using the atlas to explain an image"; Olah
  et al., 2018, "The Building Blocks of Interpretability"): every spatial position is shown as the
  icon of the atlas cell whose direction is nearest by cosine. Searched exactly with faiss
  (``IndexFlatIP`` over the L2-normalised cell directions, so the inner product is the cosine);
- **neuron groups** (Building Blocks): scikit-learn's NMF factorises the activations into ``K``
  spatial factors ``W [H*W, K]`` and ``K`` channel directions ``components [K, C]``; each position
  is assigned to its strongest factor, and each direction can be rendered like an atlas cell.

NMF needs non-negative data. The default layer (``features.13.conv.0``, after ReLU6) is
non-negative already; for a layer with negative values (a linear bottleneck, a pre-activation),
the negatives are clipped to 0 before the factorisation, i.e. the groups explain only the
positive part of the activations; how much was clipped is returned so the caller can say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


def unit_rows(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (they have no direction)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def nearest_cells(
    activations: NDArray[np.floating], directions: NDArray[np.floating]
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """``(cell [P], cosine [P])``: each position's nearest cell direction by cosine (exact, faiss).

    A position with an all-zero activation has cosine 0 with every cell; it gets cell -1.
    """
    import faiss

    cells = unit_rows(directions)
    queries = unit_rows(activations)
    index = faiss.IndexFlatIP(cells.shape[1])
    index.add(cells)
    cosine, nearest = index.search(queries, 1)
    cell = nearest[:, 0].astype(np.int64)
    cell[~queries.any(axis=1)] = -1
    return cell, cosine[:, 0].astype(np.float32)


@dataclass(frozen=True)
class Groups:
    """NMF of one image's ``[P, C]`` activations into ``K`` groups."""

    weights: NDArray[np.float32]  # [P, K] >= 0: how strongly each position expresses each group
    components: NDArray[np.float32]  # [K, C] >= 0: each group's channel direction
    assignment: NDArray[np.int64]  # [P]: the group of each position (its largest weight), -1: none
    clipped_fraction: float  # share of the activation mass that was negative and set to 0
    reconstruction_error: float  # sklearn's Frobenius norm of (A - W H)


def nmf_groups(activations: NDArray[np.floating], k: int, seed: int = 0, max_iter: int = 500) -> Groups:
    """Factorise ``activations [P, C]`` into ``k`` non-negative groups (scikit-learn NMF).

    ``init='nndsvda'`` (deterministic SVD-based start, zeros filled with the mean) and a fixed
    ``random_state`` make the groups the same run to run.
    """
    from sklearn.decomposition import NMF

    a = np.asarray(activations, dtype=np.float64)
    if a.ndim != 2 or not 1 <= k <= min(a.shape):
        raise ValueError(f"need 1 <= groups <= min(positions, channels) = {min(a.shape)} (got {k})")
    negative = np.clip(-a, 0, None).sum()
    total = np.abs(a).sum()
    a = np.clip(a, 0, None)
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter)
    weights = model.fit_transform(a)
    return Groups(
        weights=weights.astype(np.float32),
        components=model.components_.astype(np.float32),
        assignment=group_assignment(weights),
        clipped_fraction=float(negative / total) if total > 0 else 0.0,
        reconstruction_error=float(model.reconstruction_err_),
    )


def group_assignment(weights: NDArray[np.floating]) -> NDArray[np.int64]:
    """Each position's group: the argmax of its weights; -1 where every weight is 0.

    The groups and "none" (-1) partition the positions: every position gets exactly one label.
    """
    w = np.asarray(weights)
    out = w.argmax(axis=1).astype(np.int64)
    out[~(w > 0).any(axis=1)] = -1
    return out


def group_strength(weights: NDArray[np.floating], assignment: NDArray[np.integer]) -> NDArray[np.float32]:
    """[P] in [0, 1]: each position's weight in its own group over that group's largest weight
    (the overlay's opacity); 0 for unassigned positions."""
    w = np.asarray(weights, dtype=np.float64)
    top = w.max(axis=0)
    out = np.zeros(len(w), np.float64)
    hit = assignment >= 0
    rows = np.flatnonzero(hit)
    groups = np.asarray(assignment)[hit]
    out[hit] = w[rows, groups] / np.where(top[groups] > 0, top[groups], 1.0)
    return out.astype(np.float32)


def group_attribution(
    weights: NDArray[np.floating], components: NDArray[np.floating], gradients: NDArray[np.floating]
) -> NDArray[np.float32]:
    """``[K, Q]``: how much each NMF group adds to each of ``Q`` class logits (Building Blocks).

    Olah et al. (2018) attribute a class to a *group* rather than a position: the group's part of
    the activations, ``W[p, g] H[g]`` at each position ``p``, dotted with the logit's gradient
    there, summed over positions -- ``attr[g, q] = sum_p W[p, g] <H[g], d logit_q / d a_p>``. It is
    the linear (gradient x activation) attribution of ``a ~ W H`` split by group, so the groups'
    values add up to the attribution of the reconstructed activations (docs/method.md §2 uses
    the same ``h . grad_h logit`` at one position). ``gradients`` is ``[Q, P, C]``.
    """
    w = np.asarray(weights, np.float64)
    h = np.asarray(components, np.float64)
    g = np.asarray(gradients, np.float64)
    if g.ndim != 3 or g.shape[1:] != (w.shape[0], h.shape[1]):
        raise ValueError(f"gradients must be [Q, P={w.shape[0]}, C={h.shape[1]}] (got {list(g.shape)})")
    along = np.einsum("kc,qpc->kqp", h, g)  # <H[g], grad at p> for every group, class, position
    return np.einsum("pk,kqp->kq", w, along).astype(np.float32)
