"""What ``atlas cue-conflict`` found, and its JSON report (counts, rates, intervals, every stimulus)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from stages.cue_conflict import on_atlas
from stages.cue_conflict.shape_bias import ShapeBias
from stages.cue_conflict.stimuli import Stimulus


@dataclass
class StimulusResult:
    stimulus: Stimulus
    decision: str
    top1: str
    outcome: str | None  # shape / texture / other; None: no conflict
    positions: list[str] = field(default_factory=list)  # on the atlas: one outcome per interior position
    cells: list[int] = field(default_factory=list)


@dataclass
class CueConflictResult:
    model: str
    layer: str
    bias: ShapeBias
    stimuli: list[StimulusResult]
    atlas: dict[str, object] | None
    cell_counts: NDArray[np.int64] | None
    cell_texture: NDArray[np.float64] | None
    level: int | None
    out: Path
    page: Path | None
    seconds: float


def report(result: CueConflictResult) -> dict[str, object]:
    """The JSON report: counts, rates and intervals, per category, and every stimulus's decision."""
    b = result.bias
    return {
        "model": result.model,
        "layer": result.layer,
        "recipe": "Geirhos et al. 2019: mean probability per category, "
        "decision = best category, same-category stimuli left out, shape / (shape + texture)",
        "shape_bias": b.overall.as_dict(),
        "by_shape_category": {k: v.as_dict() for k, v in b.by_shape.items()},
        "by_texture_category": {k: v.as_dict() for k, v in b.by_texture.items()},
        "atlas": result.atlas,
        "stimuli": [
            {
                "file": r.stimulus.path.name,
                "shape": r.stimulus.shape,
                "texture": r.stimulus.texture,
                "decision": r.decision,
                "top1": r.top1,
                "outcome": r.outcome,
                **({"atlas_positions": dict(on_atlas.share(r.positions).counts)} if r.positions else {}),
            }
            for r in result.stimuli
        ],
    }


def write_report(result: CueConflictResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report(result), indent=1) + "\n")
    tmp.replace(path)
