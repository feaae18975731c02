"""``atlas cue-conflict``: does the model decide by texture or by shape, and where does texture win on the atlas?

1. Every stimulus (:mod:`stages.cue_conflict.stimuli`) goes through the model as it is (224 x 224,
   only the model's normalisation), in batches; one forward gives both the logits and the
   activation map at the atlas layer (the model is cut there: trunk, then head).
2. Shape bias by Geirhos et al.'s recipe (:mod:`stages.cue_conflict.shape_bias`), with counts per
   category and a 95% interval.
3. With an atlas (a store with layout and grid): each stimulus's interior positions are placed on
   it and read through the cells' top attributed classes (:mod:`stages.cue_conflict.on_atlas`).
4. ``cue_conflict.out`` (JSON) and, with ``cue_conflict.page``, an HTML page in the atlas folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from stages.context import StageContext
from stages.cue_conflict import on_atlas
from stages.cue_conflict.placement import AtlasPlacer, build_placer
from stages.cue_conflict.result import CueConflictResult, StimulusResult, write_report
from stages.cue_conflict.shape_bias import Categories, decide, load_categories, shape_bias
from stages.cue_conflict.stimuli import Stimulus, list_stimuli, load_pixels
from stages.model.registry import LoadedModel, load_model
from stages.sections import CueConflictSection
from store.errors import AtlasError
from store.view import RowStore

log = logging.getLogger(__name__)


def forward(
    model: LoadedModel, pixels: NDArray[np.float32], device: torch.device
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """``[B, 3, S, S]`` in [0, 1] -> (softmax probabilities ``[B, classes]``, layer activations ``[B, H, W, C]``)."""
    x = torch.from_numpy(pixels).to(device)
    with torch.no_grad():
        act, *cuts = model.trunk(model.normalize(x))
        logits = model.head(act, *cuts).float()
    probs = torch.softmax(logits, dim=1).double().cpu().numpy()
    return probs, act.float().permute(0, 2, 3, 1).cpu().numpy()


def interior(acts: NDArray[np.float32], border: int) -> NDArray[np.float32]:
    """``[H, W, C]`` -> ``[P, C]``: the positions the collect stage samples from (``collect.border`` cells off each side)."""
    h, w, _ = acts.shape
    b = border if h > 2 * border and w > 2 * border else 0
    return acts[b : h - b, b : w - b].reshape(-1, acts.shape[-1])


def _outcome(decision: str, shape: str, texture: str, conflict: bool) -> str | None:
    """``shape``/``texture``/``other`` for a cue-conflict stimulus, None for a control."""
    if not conflict:
        return None
    return "shape" if decision == shape else "texture" if decision == texture else "other"


def _classify(
    config: CueConflictSection,
    items: list[Stimulus],
    categories: Categories,
    model: LoadedModel,
    placer: AtlasPlacer | None,
    device: torch.device,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[StimulusResult], list[int], list[str]]:
    """Every stimulus's decision and (with a placer) the atlas cells its positions land in and their outcomes."""
    cfg = config.cue_conflict
    of_class = categories.of_class(len(model.class_names))
    results: list[StimulusResult] = []
    all_cells: list[int] = []
    all_outcomes: list[str] = []
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start : start + cfg.batch_size]
        probs, acts = forward(model, np.stack([load_pixels(s, model.image_size) for s in batch]), device)
        for s, p, a, decision in zip(batch, probs, acts, decide(probs, categories)):
            outcome = _outcome(decision, s.shape, s.texture, s.conflict)
            r = StimulusResult(s, decision, model.class_names[int(p.argmax())], outcome)
            if placer is not None and s.conflict:
                cells = placer.cells(interior(a, config.collect.border))
                r.cells = cells.tolist()
                r.positions = on_atlas.position_outcomes(
                    cells,
                    placer.level.top_idx,
                    of_class,
                    categories.index(s.shape),
                    categories.index(s.texture),
                    cfg.top_classes,
                )
                all_cells += r.cells
                all_outcomes += r.positions
            results.append(r)
        if progress is not None:
            progress(start + len(batch), len(items))  # (done, total)
    return results, all_cells, all_outcomes


def _placer(store: RowStore | None, model: LoadedModel, level: int) -> AtlasPlacer | None:
    """Where stimuli land on ``store``'s atlas at ``level`` (None without a store)."""
    if store is None:
        return None
    stored = store.model.layer
    if stored and stored != model.layer:
        raise AtlasError(
            f"store {store.path} maps layer {stored!r} but model.layer is {model.layer!r}; use the store's layer"
        )
    return build_placer(store, level)


def run(config: CueConflictSection, ctx: StageContext) -> CueConflictResult:
    """Shape bias of ``config.model`` on ``cue_conflict.stimuli``, and (given ``ctx.store``) where they land
    on its atlas.

    ``config.write``: the report (``cue_conflict.out``) and, with ``cue_conflict.page`` and a store, the
    page; the Python API passes False and gets the result only. ``ctx.device`` else ``cue_conflict.device``."""
    t0 = time.perf_counter()
    cfg, store = config.cue_conflict, ctx.store
    device = ctx.device_for(cfg.device)
    categories = load_categories()
    items = list_stimuli(cfg.stimuli, categories.names)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    if len(model.class_names) != 1000:
        raise AtlasError(
            f"cue-conflict needs an ImageNet-1k classifier; {model.name} has {len(model.class_names)} classes"
        )
    placer = _placer(store, model, cfg.level)
    results, all_cells, all_outcomes = _classify(config, items, categories, model, placer, device, ctx.done_of_total())
    bias = shape_bias(
        [r.decision for r in results], [r.stimulus.shape for r in results], [r.stimulus.texture for r in results]
    )
    atlas = counts = texture = None
    if placer is not None:
        leans = [on_atlas.stimulus_lean(r.positions) for r in results if r.stimulus.conflict]
        atlas = {
            "level": cfg.level,
            "top_classes": cfg.top_classes,
            "border": config.collect.border,
            "positions": on_atlas.share(all_outcomes).as_dict(),
            "stimuli": {k: leans.count(k) for k in ("shape", "texture", "tie")},
        }
        counts, texture = on_atlas.cell_texture_share(np.asarray(all_cells, np.int64), all_outcomes, len(placer.level))
    result = CueConflictResult(
        model=model.name,
        layer=model.layer,
        bias=bias,
        stimuli=results,
        atlas=atlas,
        cell_counts=counts,
        cell_texture=texture,
        level=cfg.level if placer else None,
        out=Path(cfg.out),
        page=None,
        seconds=0.0,
    )
    if config.write:
        write_report(result, Path(cfg.out))
    if config.write and cfg.page and store is not None:
        from stages.cue_conflict.page import write_page

        result.page = write_page(config, store, result)
    result.seconds = time.perf_counter() - t0
    log.info("cue-conflict: %d stimuli, shape bias %s, %.1f s", len(results), bias.overall.bias, result.seconds)
    return result
