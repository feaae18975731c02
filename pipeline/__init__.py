"""The running floor: the ``atlas`` CLI, the cluster runner, the viewer server and the notebook API.

``from pipeline import open_atlas, activation_atlas, render_directions, feature_vis, ...`` is the
Python API of :mod:`pipeline.api` (docs/api.md). It is imported on first use, so that ``atlas --help``
and the other commands do not pay for torch when they do not need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.api import (
        Atlas,
        AtlasError,
        AtlasResult,
        Cell,
        Layout,
        Level,
        activation_atlas,
        compose_level,
        evolving_understanding,
        feature_vis,
        load_classifier,
        open_atlas,
        patch_attack,
        render_directions,
        shape_bias,
    )

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pipeline.api"), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
