"""The Python API for notebooks: open a finished atlas, or make one in memory from arrays.

Two ways in (docs/api.md has runnable examples of both):

- :func:`open_atlas` reads what the pipeline wrote (``atlas run`` / ``dvc repro``): the layout, the
  zoom levels and their cells, the rendered icons, each cell's dataset-example patches, and the
  class atlases and comparisons built next to the store. Read-only; nothing is recomputed.
- :func:`activation_atlas`, :func:`render_directions` and :func:`feature_vis` need no store at
  all, the way lucid's activation-atlas recipe is used (Carter et al., 2019): activations in, a
  layout, cells and directions out; directions in, icons out; a unit in, an image out.

Every computation is the stage code's (docs/method.md): the reduce stage's layout
(:func:`stages.reduce.stage.layout_in_memory`), the grid stage's binning and cell means
(:func:`stages.grid.stage.level_in_memory`) and whitening, the render stage's batched renderer
(:func:`stages.render.stage.render_batch`), ``atlas render-unit``'s target parser, the tiles stage's
canvas composition and density scaling, and its dataset-example crops. Nothing here implements an
algorithm a second time; this module only checks what the caller passed, calls those, and turns
the results into PIL images and matplotlib figures.

Modules: :mod:`.results` (Level, Cell, AtlasResult, compose_level), :mod:`.stored` (open_atlas,
Atlas), :mod:`.in_memory` (activation_atlas, load_classifier, render_directions, feature_vis),
:mod:`.common` (config defaults, argument checks, the notebook figure), :mod:`.experiments`
(shape_bias, evolving_understanding, patch_attack: the experiments of docs/experiments.md).

Conventions: a level of ``n`` cells per side has its kept cells in the grid's order; cell ``k`` sits
at column ``i[k]`` (layout x) and row ``j[k]`` (layout y, 0 at the top of a composed level). Models
are a :class:`~stages.model.registry.LoadedModel` or a torchvision name, loaded with weights from the
local torchvision cache only (nothing is downloaded). ``device`` is always an explicit parameter;
``None`` means the model's own device (CPU for a model loaded by name). Every mistake in what is
passed in raises :class:`~store.errors.AtlasError` with one line that names the parameter and says
what to do. The module logs (``logging``); it never prints.
"""

from __future__ import annotations

from pipeline.api.experiments import evolving_understanding, patch_attack, shape_bias
from pipeline.api.in_memory import activation_atlas, feature_vis, load_classifier, render_directions
from pipeline.api.results import AtlasResult, Cell, Level, compose_level
from pipeline.api.stored import Atlas, open_atlas
from store.derived import Layout
from store.errors import AtlasError

__all__ = [
    "Atlas",
    "AtlasError",
    "AtlasResult",
    "Cell",
    "Layout",
    "Level",
    "activation_atlas",
    "compose_level",
    "evolving_understanding",
    "feature_vis",
    "load_classifier",
    "open_atlas",
    "patch_attack",
    "render_directions",
    "shape_bias",
]
