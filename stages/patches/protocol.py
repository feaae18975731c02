"""The patch protocol of Carter et al. (2019), on any batched ``classify(images) -> probabilities`` (pure).

Given photos of class A and candidate patches that should push toward class B:

1. **Photos.** Only photos the model classifies as A beforehand (top-1 = A on the clean photo) count.
2. **Split.** ``rank_count`` of them (seeded) rank the candidates; the others are the test photos,
   on which every reported number is measured. No candidate is chosen by its effect on a test photo.
3. **Rank.** Proxy score of a candidate: the mean B-minus-A logit gain, ``(log P(B) - log P(A))`` of the
   patched photo minus that of the clean photo (the softmax's log-ratio is the logits' difference),
   over the ranking photos and the four corners at the static size. The ``keep`` best are measured.
4. **Measure.** Every kept patch (and every control) is pasted at each corner at each size ``r``.
   *Static*: one placement for every photo (``static``, a parameter); the photo counts as flipped when
   its top-1 becomes B. *Dynamic*: the best placement per photo (a placement that flips it, the one
   with the highest P(B) among those; else the highest P(B)); flipped when any placement flips it.
5. **Controls.** The same on uniform-noise patches and on dataset patches of cells not on B's side.
   A patch *works* only when the lower end of its dynamic rate's 95% Wilson interval is above the
   noise control's dynamic rate (pooled over the noise patches).

Images are ``[N, S, S, 3]`` float32 in [0, 1]; ``classify`` takes such a batch (at most ``batch_size``)
and returns ``[B, classes]`` probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stages.cue_conflict.shape_bias import wilson_interval
from stages.patches.geometry import CORNERS, Placement, paste, patch_side, resize_patch

Classify = Callable[[NDArray[np.float32]], NDArray[np.floating]]
Progress = Callable[[int], None]
TINY = 1e-45  # floor of a probability before its log (float32 softmax underflows to 0 below ~1e-45)


@dataclass(frozen=True)
class Patch:
    """A candidate or control picture: ``image`` ``[h, w, 3]`` in [0, 1]."""

    name: str
    kind: str  # dataset | icon | noise | random_cell
    image: NDArray[np.float32]
    resample: str = "lanczos"  # nearest for noise (no smoothing)
    cell: int | None = None  # the comparison atlas's kept-cell number
    source: str | None = None  # the photo a dataset crop was cut from
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "rate": self.rate, "interval95": [lo, hi]}


def placements(sizes: Sequence[float], corners: Sequence[str] = CORNERS) -> list[Placement]:
    """Every (corner, r), sizes outer: the dynamic search space."""
    return [Placement(c, float(r)) for r in sizes for c in corners]


def classify_all(
    classify: Classify, images: NDArray[np.float32], batch_size: int, progress: Progress | None = None
) -> NDArray[np.float64]:
    """``classify`` over ``images`` in batches of at most ``batch_size``."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(np.asarray(classify(images[start : start + batch_size]), np.float64))
        if progress is not None:
            progress(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, 0))


@dataclass
class Patched:
    """One patch on some photos at some placements: ``[N, P]`` top-1, P(A), P(B)."""

    top1: NDArray[np.int64]
    pa: NDArray[np.float64]
    pb: NDArray[np.float64]


def patched(
    classify: Classify,
    photos: NDArray[np.float32],
    patch: Patch,
    where: Sequence[Placement],
    a: int,
    b: int,
    batch_size: int,
    progress: Progress | None = None,
) -> Patched:
    """Paste ``patch`` on every photo at every placement, classify in batches (streamed: memory is one batch)."""
    n, size = len(photos), photos.shape[1]
    out = Patched(np.zeros((n, len(where)), np.int64), np.zeros((n, len(where))), np.zeros((n, len(where))))
    sized: dict[int, NDArray[np.float32]] = {}
    buf: list[NDArray[np.float32]] = []
    keys: list[tuple[int, int]] = []

    def flush() -> None:
        if not buf:
            return
        probs = np.asarray(classify(np.stack(buf)), np.float64)
        for (i, j), p in zip(keys, probs):
            out.top1[i, j], out.pa[i, j], out.pb[i, j] = int(p.argmax()), p[a], p[b]
        if progress is not None:
            progress(len(buf))
        buf.clear()
        keys.clear()

    for j, place in enumerate(where):
        side = patch_side(place.r, size)
        if side not in sized:
            sized[side] = resize_patch(patch.image, side, patch.resample)
        for i in range(n):
            buf.append(paste(photos[i], sized[side], place.corner))
            keys.append((i, j))
            if len(buf) >= batch_size:
                flush()
    flush()
    return out


def log_ratio(pb: NDArray[np.floating], pa: NDArray[np.floating]) -> NDArray[np.float64]:
    """``log P(B) - log P(A)`` = logit_B - logit_A."""
    return np.log(np.maximum(np.asarray(pb, np.float64), TINY)) - np.log(np.maximum(np.asarray(pa, np.float64), TINY))


def split_photos(n: int, rank_count: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(rank, test)``: disjoint, sorted indices of ``n`` photos, ``rank_count`` of them (seeded) for ranking."""
    if n < 2:
        raise ValueError(f"need at least 2 photos (1 to rank candidates, 1 to measure), got {n}")
    if not 1 <= rank_count < n:
        raise ValueError(f"rank_count must be in 1..{n - 1} for {n} photos, got {rank_count}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:rank_count]).astype(np.int64), np.sort(perm[rank_count:]).astype(np.int64)


def rank_scores(
    classify: Classify,
    photos: NDArray[np.float32],
    clean: NDArray[np.float64],
    candidates: Sequence[Patch],
    r: float,
    a: int,
    b: int,
    batch_size: int,
    progress: Progress | None = None,
) -> NDArray[np.float64]:
    """Mean B-minus-A logit gain of each candidate over ``photos`` (the ranking photos) and the four corners at ``r``."""
    base = log_ratio(clean[:, b], clean[:, a])[:, None]
    where = placements([r])
    scores = np.zeros(len(candidates))
    for k, patch in enumerate(candidates):
        p = patched(classify, photos, patch, where, a, b, batch_size, progress)
        scores[k] = float(np.mean(log_ratio(p.pb, p.pa) - base))
    return scores


def select(scores: Sequence[float] | NDArray[np.floating], keep: int) -> list[int]:
    """Indices of the ``keep`` best scores, best first (ties: the earlier candidate)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return [int(i) for i in order[:keep]]


@dataclass
class Outcome:
    """One patch measured on the test photos at every placement."""

    patch: Patch
    where: list[Placement]
    static: int  # index of the static placement in ``where``
    result: Patched
    clean_pb: NDArray[np.float64]  # [N] P(B) before
    b: int
    rank_score: float | None = None

    @property
    def n(self) -> int:
        return len(self.clean_pb)

    def flips(self) -> NDArray[np.bool_]:
        return self.result.top1 == self.b

    def best(self) -> NDArray[np.int64]:
        """Per photo: the flipping placement with the highest P(B), else the highest-P(B) placement."""
        pb = self.result.pb
        return np.argmax(np.where(self.flips(), pb + 2.0, pb), axis=1).astype(np.int64)

    def dynamic(self) -> NDArray[np.bool_]:
        return np.asarray(self.flips().any(axis=1), dtype=np.bool_)

    def static_flips(self) -> NDArray[np.bool_]:
        return np.asarray(self.flips()[:, self.static], dtype=np.bool_)  # one column: an array, never a scalar

    def dynamic_pb(self) -> NDArray[np.float64]:
        return self.result.pb[np.arange(self.n), self.best()]

    def summary(self) -> dict[str, Any]:
        best = self.best()
        return {
            "dynamic": Rate(int(self.dynamic().sum()), self.n).as_dict(),
            "static": Rate(int(self.static_flips().sum()), self.n).as_dict(),
            "p_b_before": float(self.clean_pb.mean()) if self.n else None,
            "p_b_after_dynamic": float(self.dynamic_pb().mean()) if self.n else None,
            "p_b_after_static": float(self.result.pb[:, self.static].mean()) if self.n else None,
            "best_placements": [self.where[int(j)].label() for j in best],
            "flipped_dynamic": self.dynamic().tolist(),  # per test photo, in the report's test order
            "flipped_static": self.static_flips().tolist(),
            "p_b_after_dynamic_each": [round(float(v), 4) for v in self.dynamic_pb()],
        }


def pooled(outcomes: Sequence[Outcome], which: str) -> Rate:
    """``dynamic`` or ``static`` flips summed over several patches on the same photos (patch x photo pairs)."""
    k = sum(int((o.dynamic() if which == "dynamic" else o.static_flips()).sum()) for o in outcomes)
    return Rate(k, sum(o.n for o in outcomes))


def pooled_pb(outcomes: Sequence[Outcome], which: str) -> float | None:
    vals = [o.dynamic_pb() if which == "dynamic" else o.result.pb[:, o.static] for o in outcomes]
    return float(np.concatenate(vals).mean()) if vals and sum(len(v) for v in vals) else None


def works(rate: Rate, noise_rate: float | None) -> bool:
    """The patch beats the noise control: its dynamic rate's Wilson lower bound is above the noise's rate."""
    return rate.n > 0 and rate.interval[0] > (noise_rate or 0.0)


@dataclass
class ProtocolResult:
    a: int
    b: int
    photos: int  # photos given
    kept: NDArray[np.int64]  # given photos classified as A (indices)
    rank: NDArray[np.int64]  # indices into the given photos
    test: NDArray[np.int64]
    clean: NDArray[np.float64]  # [photos, classes] clean probabilities of every given photo
    candidates: list[Patch]
    scores: NDArray[np.float64]  # rank score per candidate (nan: left out, cut from a test photo)
    selected: list[int]
    outcomes: list[Outcome]
    controls: list[Outcome]
    where: list[Placement]
    static: Placement

    def noise_rate(self, which: str = "dynamic") -> float | None:
        return pooled([o for o in self.controls if o.patch.kind == "noise"], which).rate


def _kept_rank_test(
    clean: NDArray[np.float64], a: int, rank_count: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The photos classified ``a`` beforehand, split into those that rank the candidates and those measured."""
    kept = np.flatnonzero(clean.argmax(axis=1) == a).astype(np.int64)
    if len(kept) < 2:
        raise ValueError(
            f"{len(kept)} of {len(clean)} photos are classified as class {a} beforehand; "
            "the protocol needs at least 2 (1 to rank the candidates, 1 to measure)"
        )
    r_local, t_local = split_photos(len(kept), min(rank_count, len(kept) - 1), seed)
    return kept, kept[r_local], kept[t_local]


def _controls_used(controls: Sequence[Patch], test_ids: set[str], per_kind: int) -> list[Patch]:
    """The first ``per_kind`` controls of each kind not cut from a test photo."""
    picked: list[Patch] = []
    for kind in ("noise", "random_cell"):
        picked += [c for c in controls if c.kind == kind and (c.source is None or c.source not in test_ids)][:per_kind]
    return picked


def run_protocol(
    classify: Classify,
    photos: NDArray[np.float32],
    a: int,
    b: int,
    candidates: Sequence[Patch],
    controls: Sequence[Patch],
    *,
    photo_ids: Sequence[str] | None = None,
    rank_count: int,
    keep: int,
    sizes: Sequence[float],
    static: Placement,
    controls_per_kind: int,
    batch_size: int,
    seed: int,
    progress: Progress | None = None,
) -> ProtocolResult:
    """Steps 1-5 of the module docstring. ``photo_ids`` name the photos so that a candidate or control cut
    from a test photo (``Patch.source``) is left out; controls beyond ``controls_per_kind`` of a kind are unused."""
    clean = classify_all(classify, photos, batch_size, progress)
    kept, rank, test = _kept_rank_test(clean, a, rank_count, seed)
    ids = list(photo_ids) if photo_ids is not None else [str(i) for i in range(len(photos))]
    test_ids = {ids[i] for i in test}
    usable = [k for k, p in enumerate(candidates) if p.source is None or p.source not in test_ids]
    scores = np.full(len(candidates), np.nan)
    scores[usable] = rank_scores(
        classify, photos[rank], clean[rank], [candidates[k] for k in usable], static.r, a, b, batch_size, progress
    )
    chosen = [usable[i] for i in select(scores[usable], keep)]
    where = placements(sizes)
    if static not in where:
        where.append(static)
    s = where.index(static)
    test_photos, clean_pb = photos[test], clean[test, b]

    def measure(patch: Patch, score: float | None = None) -> Outcome:
        after = patched(classify, test_photos, patch, where, a, b, batch_size, progress)
        return Outcome(patch, where, s, after, clean_pb, b, score)

    outcomes = [measure(candidates[k], float(scores[k])) for k in chosen]
    picked = _controls_used(controls, test_ids, controls_per_kind)
    return ProtocolResult(
        a=a,
        b=b,
        photos=len(photos),
        kept=kept,
        rank=rank,
        test=test,
        clean=clean,
        candidates=list(candidates),
        scores=scores,
        selected=chosen,
        outcomes=outcomes,
        controls=[measure(c) for c in picked],
        where=where,
        static=static,
    )


def work_count(result: ProtocolResult) -> int:
    noise = result.noise_rate()
    return sum(works(Rate(int(o.dynamic().sum()), o.n), noise) for o in result.outcomes)


def uniform_noise(side: int, seed: int) -> NDArray[np.float32]:
    """A ``[side, side, 3]`` uniform-noise picture in [0, 1]."""
    return np.random.default_rng(seed).random((side, side, 3), dtype=np.float32)
