"""Fidelity: does each rendered icon still evoke its cell when fed back through the model?

For every icon of every rendered level:

(a) cos-sim of the icon's centre activation (position (H//2, W//2), the position the atlas
    objective optimised, docs/method.md §5) with the cell's raw direction;
(b) whether the icon's top-5 predicted classes overlap the cell's top-5 attributed classes
    (``CellLevel.top_idx``; cells with no positively attributed class count as no overlap and
    are left out of the overlap fraction).

Both are measured twice. **Primary: the icon at its own size** (80 px by default), which is how
it was rendered and optimised: the reference rendered icons at icon size and the centre cell of
the layer at that size is exactly what the objective saw. **Secondary: resized to the model's
input size** (``model.image_size``, bilinear), how a user would show the icon to the classifier
as a photo. The upsampled icon covers many layer positions, so its centre activation is a
different, stricter test, and its logits pool over a full-size feature map.

(c) as a **ceiling** for (b), the same overlap for the cell's own members: the 5 classes the
    model most often predicts (top-1) for the members' photos against the cell's top-5
    attributed classes. When the attribution labels rarely match what the members' own photos are
    classified as (one position's ``h . grad logit`` at a mid layer is a local contribution, not the
    photo's class), no icon can be expected to match them more often than its members do.

Per-icon results are stored next to the icons (``level_<N>/fidelity/`` of the icons group, see
:mod:`store.icons`); the report gives the distribution.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from stages.config import Config
from stages.featurevis import layer_forward, spatial
from stages.featurevis.forward import Forward
from stages.model.registry import LoadedModel, load_model
from store import derived
from store.errors import AtlasError
from store.icons import FidelityArrays, IconStore
from store.view import RowStore

log = logging.getLogger(__name__)

TOP = 5  # top-5 predictions vs top-5 attributed classes
_BATCH = 64
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class FidelityReport:
    """Distribution of the per-icon results over all rendered levels."""

    icons: int
    levels: dict[int, int]
    cossim_quantiles: dict[str, float]  # icon at its own size
    frac_cossim_ge_half: float
    frac_overlap: float  # over cells with at least one attributed class
    cells_with_classes: int
    cossim_resized_quantiles: dict[str, float] = field(default_factory=dict)
    frac_cossim_resized_ge_half: float = float("nan")
    frac_overlap_resized: float = float("nan")
    frac_members_overlap: float = float("nan")  # the ceiling (c), over the same cells
    seconds: float = 0.0


@dataclass(frozen=True)
class IconResponse:
    """What the model makes of a batch of icons."""

    cossim: NDArray[np.float32]  # [B]
    top_pred: NDArray[np.int32]  # [B, TOP]


def respond(forward: Forward, layer: str, images: torch.Tensor, directions: torch.Tensor) -> IconResponse:
    """Centre cos-sim with ``directions`` and top-5 classes for ``images`` ``[B, 3, H, W]`` in [0, 1].

    ``forward`` must come from ``layer_forward(..., with_logits=True)``.
    """
    with torch.no_grad():
        out = forward(images)
        acts = spatial(out[layer].float())  # a token layer as its patch grid
        h = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
        cos = F.cosine_similarity(h, directions.to(h.device).float(), dim=1, eps=1e-8)
        top = out["logits"].float().topk(TOP, dim=1).indices
    return IconResponse(cos.cpu().numpy().astype(np.float32), top.cpu().numpy().astype(np.int32))


def overlaps(top_pred: NDArray[np.integer], top_idx: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Row-wise: does any predicted class appear among the cell's attributed classes (-1 = none)?"""
    cell = np.where(top_idx >= 0, top_idx, -2)  # -2 never matches a class index
    return (top_pred[:, :, None] == cell[:, None, :]).any(axis=(1, 2))


def members_overlap(cells: derived.CellLevel, row_top1: NDArray[np.integer]) -> NDArray[np.bool_]:
    """Per cell: do the ``TOP`` classes most often predicted (top-1) for its members meet its top classes?

    ``row_top1[r]`` is the top-1 predicted class of store row ``r`` (ties between equally common
    classes go to the smaller class index).
    """
    common = np.full((len(cells), TOP), -1, np.int64)
    for k in range(len(cells)):
        values, counts = np.unique(row_top1[cells.members(k)], return_counts=True)
        pick = values[np.argsort(-counts, kind="stable")[:TOP]]
        common[k, : len(pick)] = pick
    common = np.where(common >= 0, common, -3)  # -3 never matches a class or the -1 padding
    return overlaps(common, cells.top_idx[:, :TOP])


def _level_fidelity(
    forward: Forward, model: LoadedModel, icons: NDArray[np.uint8], cells: derived.CellLevel, device: torch.device
) -> FidelityArrays:
    native, resized = [], []
    for start in range(0, len(icons), _BATCH):
        x = torch.as_tensor(icons[start : start + _BATCH], device=device).permute(0, 3, 1, 2).float() / 255.0
        v = torch.as_tensor(cells.direction[start : start + _BATCH])
        native.append(respond(forward, model.layer, x, v))
        big = F.interpolate(x, size=(model.image_size, model.image_size), mode="bilinear", align_corners=False)
        resized.append(respond(forward, model.layer, big, v))
    cos = np.concatenate([r.cossim for r in native]) if native else np.zeros(0, np.float32)
    top = np.concatenate([r.top_pred for r in native]) if native else np.zeros((0, TOP), np.int32)
    cos_big = np.concatenate([r.cossim for r in resized]) if resized else np.zeros(0, np.float32)
    top_big = np.concatenate([r.top_pred for r in resized]) if resized else np.zeros((0, TOP), np.int32)
    cell_top = cells.top_idx[:, :TOP]
    return FidelityArrays(
        cossim=cos,
        overlap=overlaps(top, cell_top),
        top_pred=top,
        cossim_resized=cos_big,
        overlap_resized=overlaps(top_big, cell_top),
    )


def _quantiles(values: NDArray[np.floating]) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in _QUANTILES} if values.size else {}


def run(config: Config, store: RowStore, device: torch.device, *, model: LoadedModel | None = None) -> FidelityReport:
    """Measure every rendered level's icons, store per-icon results, return the distribution."""
    t0 = time.perf_counter()
    icons = IconStore.open(store.derived_path("icons"), mode="r+")
    model = model if model is not None else load_model(config.model, device)
    cells = {n: derived.read_level(store, n, with_attribution=False) for n in icons.levels}
    if not derived.icons_current(icons.record, store, cells):
        raise AtlasError(f"icons {icons.path} were rendered from another grid; run `atlas render` again")
    per_level: dict[int, FidelityArrays] = {}
    with layer_forward(model.module, model.layer, normalize=model.normalize, with_logits=True) as forward:
        for n in icons.levels:
            if not icons.complete(n):
                raise AtlasError(f"icons {icons.path} level {n} are not all rendered; run `atlas render` to finish")
            per_level[n] = _level_fidelity(forward, model, icons.read_level(n).icons, cells[n], device)
            icons.write_fidelity(n, per_level[n], {"top": TOP, "resized_to": model.image_size})
    report = _report(per_level, cells, time.perf_counter() - t0)
    if store.has_row_array("top_pred_idx"):
        row_top1 = store.row_values("top_pred_idx")[:, 0]
        ceiling = np.concatenate([members_overlap(cells[n], row_top1) for n in per_level])
        has = np.concatenate([(cells[n].top_idx[:, :TOP] >= 0).any(axis=1) for n in per_level])
        report = replace(report, frac_members_overlap=float(ceiling[has].mean()) if has.any() else float("nan"))
    log.info(
        "fidelity of %d icons: cos-sim median %.3f, %.0f%% >= 0.5, top-%d overlap %.0f%% (resized to %d px: "
        "median %.3f, overlap %.0f%%)",
        report.icons,
        report.cossim_quantiles.get("q50", float("nan")),
        100 * report.frac_cossim_ge_half,
        TOP,
        100 * report.frac_overlap,
        model.image_size,
        report.cossim_resized_quantiles.get("q50", float("nan")),
        100 * report.frac_overlap_resized,
    )
    return report


def _report(
    per_level: dict[int, FidelityArrays], cells: dict[int, derived.CellLevel], seconds: float
) -> FidelityReport:
    def cat(name: str) -> NDArray:
        parts = [getattr(f, name) for f in per_level.values()]
        return np.concatenate(parts) if parts else np.zeros(0)

    has_classes = (
        np.concatenate([(cells[n].top_idx[:, :TOP] >= 0).any(axis=1) for n in per_level])
        if per_level
        else np.zeros(0, bool)
    )
    cos, cos_big = cat("cossim"), cat("cossim_resized")
    overlap, overlap_big = cat("overlap").astype(bool), cat("overlap_resized").astype(bool)

    def frac(mask: NDArray[np.bool_], among: NDArray[np.bool_] | None = None) -> float:
        chosen = mask if among is None else mask[among]
        return float(chosen.mean()) if chosen.size else float("nan")

    return FidelityReport(
        icons=int(cos.size),
        levels={n: int(f.cossim.size) for n, f in per_level.items()},
        cossim_quantiles=_quantiles(cos),
        frac_cossim_ge_half=frac(cos >= 0.5),
        frac_overlap=frac(overlap, has_classes),
        cells_with_classes=int(has_classes.sum()),
        cossim_resized_quantiles=_quantiles(cos_big),
        frac_cossim_resized_ge_half=frac(cos_big >= 0.5),
        frac_overlap_resized=frac(overlap_big, has_classes),
        seconds=seconds,
    )
