"""The experiments the atlas is an instrument for, from a notebook (docs/experiments.md).

- :func:`shape_bias`: texture vs shape (Geirhos et al., ICLR 2019) by the published recipe, and,
  given an atlas, where the cue-conflict stimuli land on it (``atlas cue-conflict``).
- :func:`evolving_understanding`: one photo's positions rendered at several layers (Olah et al.
  2018), the first layer's filters and the strongest channels' maps (``atlas explain --layers``).
- :func:`patch_attack`: patches read off a class-comparison atlas, pasted on photos of class A, and
  how often they flip the model to B against noise controls (``atlas patches``).

Each calls the stage code (:mod:`stages.cue_conflict`, :mod:`stages.explain.layers`) with the typed
config's defaults, so the API and the CLI compute the same thing; nothing is written unless asked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.api.common import ModelLike, _validated
from pipeline.api.in_memory import _model
from pipeline.api.stored import Atlas, open_atlas
from stages.config import Config, CueConflictConfig, ExplainConfig, PatchesConfig
from stages.context import StageContext
from stages.sections import CueConflictSection, ExplainSection, PatchesSection
from store.errors import AtlasError

log = logging.getLogger(__name__)
_CUE = CueConflictConfig()
_EXPLAIN = ExplainConfig()


def shape_bias(
    model: ModelLike | None = None,
    *,
    stimuli: str | Path = _CUE.stimuli,
    atlas: str | Path | Atlas | None = None,
    level: int = _CUE.level,
    top_classes: int = _CUE.top_classes,
    batch_size: int = _CUE.batch_size,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Shape bias of ``model`` on the cue-conflict ``stimuli`` (the report ``atlas cue-conflict`` writes).

    ``model``: a LoadedModel or torchvision name (default: the atlas's own model, else ``mobilenet_v2``).
    ``atlas``: a store path or :class:`Atlas`; its layout and grid ``level`` place every stimulus's
    positions (the ``"atlas"`` part of the report). Returns counts, rates and 95% intervals, overall,
    per shape and per texture category, and each stimulus's decision.
    """
    from stages.cue_conflict import stage
    from stages.cue_conflict.result import report

    opened = open_atlas(atlas) if isinstance(atlas, (str, Path)) else atlas
    if opened is not None and not isinstance(opened, Atlas):
        raise AtlasError(f"shape_bias: atlas must be a store path or an Atlas (got {type(atlas).__name__})")
    if model is None:
        loaded = opened.load_model(device) if opened is not None else _model("mobilenet_v2", None, device, "shape_bias")
    else:
        loaded = _model(model, None, device, "shape_bias")
    cfg = Config(
        cue_conflict=_validated(
            CueConflictConfig,
            {
                "stimuli": str(stimuli),
                "level": level,
                "top_classes": top_classes,
                "batch_size": batch_size,
                "page": False,
            },
            "shape_bias",
        )
    )
    store = opened.store if opened is not None else None
    ctx = StageContext(store, device=loaded.device, model=loaded)
    result = stage.run(CueConflictSection.of(cfg, write=False), ctx)
    return report(result)


def evolving_understanding(
    image: str | Path,
    layers: list[str] | tuple[str, ...] = ("default",),
    *,
    model: ModelLike = "mobilenet_v2",
    out: str | Path = "explain_layers.png",
    steps: int = _EXPLAIN.layer_steps,
    cells: int = _EXPLAIN.layer_cells,
    device: torch.device | None = None,
) -> dict[str, Path]:
    """``atlas explain IMAGE --layers ...`` without a store: figure name -> PNG path, written next to ``out``.

    ``layers``: layer names, or ``("default",)`` for four depths of the model (docs/explain.md).
    """
    from stages.explain.stage import run_layers

    loaded = _model(model, None, device, "evolving_understanding")
    explain = _validated(
        ExplainConfig,
        {"layers": list(layers), "layer_steps": steps, "layer_cells": cells, "out": str(out), "page": False},
        "evolving_understanding",
    )
    cfg = Config(explain=explain)
    cfg.model = cfg.model.model_copy(
        update={"name": loaded.name, "layer": loaded.layer, "image_size": loaded.image_size}
    )
    result = run_layers(ExplainSection.of(cfg, image=image), StageContext(device=loaded.device, model=loaded))
    return dict(result.figures)


def patch_attack(
    atlas: str | Path | Atlas, a: str, b: str, *, device: torch.device | None = None, **settings: Any
) -> list[dict[str, Any]]:
    """``atlas patches A B`` on a stored atlas whose comparison of ``a`` and ``b`` exists: one report per
    direction (A -> B, and B -> A unless ``photos=`` names a folder of A's photos), with counts, rates and
    95% intervals for each patch and each control. ``settings``: any ``patches`` parameter (``photos``,
    ``keep``, ``sizes``, ``rank_photos``, ``out``, ...; docs/experiments.md). The JSON report (``out``) and
    the figures are written beside it; no page.
    """
    from stages.patches.stage import direction_report, run

    opened = open_atlas(atlas) if isinstance(atlas, (str, Path)) else atlas
    if not isinstance(opened, Atlas):
        raise AtlasError(f"patch_attack: atlas must be a store path or an Atlas (got {type(atlas).__name__})")
    loaded = opened.load_model(device)
    section = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}, "page": False}
    cfg = Config(patches=_validated(PatchesConfig, section, "patch_attack"))
    cfg.data = cfg.data.model_copy(update={"store": str(opened.path)})
    cfg.compare = cfg.compare.model_copy(update={"pairs": [(a, b)]})
    ctx = StageContext(opened.store, device=loaded.device, model=loaded)
    result = run(PatchesSection.of(cfg, pair=[a, b]), ctx)
    return [direction_report(d) for d in result.directions]
