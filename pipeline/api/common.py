"""What the notebook API's modules share: the config defaults, the checks of what a caller passed
(one-line :class:`~store.errors.AtlasError` naming the parameter), and the notebook figure."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from pydantic import BaseModel, ValidationError

from stages.config import GridConfig, ReduceConfig, RenderConfig, TilesConfig
from stages.featurevis import FeatureVisError, layer_forward
from stages.featurevis.forward import find_module
from stages.model.registry import LoadedModel
from store.errors import AtlasError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipeline.api.results import Level


# The defaults of the typed config (stages/config.py), so the API and the pipeline never disagree:
# reduce = UMAP, n_neighbors 50, min_dist 0.05, cosine (Carter et al., 2019; lucid's recipe);
# grid = cells with more than 5 samples kept (lucid's ``bin_laid_out_activations`` threshold);
# render = the render stage's icon size, steps, Adam lr and ``dot * cos^4`` objective.
_REDUCE = ReduceConfig()
_GRID = GridConfig()
_RENDER = RenderConfig()
_TILES = TilesConfig()

ModelLike = LoadedModel | str
ColorBy = Literal["top_class", "label"]
_Config = TypeVar("_Config", bound=BaseModel)


# ===================================================================================== helpers
class _Figure:
    """Namespace for the figure class (matplotlib is imported only when a figure is drawn)."""

    cls: type[Figure] | None = None

    @classmethod
    def make(cls, **kwargs: Any) -> Figure:
        if cls.cls is None:
            from matplotlib.figure import Figure

            class NotebookFigure(Figure):
                """A matplotlib figure that shows itself in Jupyter with no pyplot and no global state."""

                def _repr_png_(self) -> bytes:
                    buffer = io.BytesIO()
                    self.savefig(buffer, format="png")
                    return buffer.getvalue()

            cls.cls = NotebookFigure
        figure: Figure = cls.cls(**kwargs)
        return figure


def _layout_figure(
    xy: NDArray[np.floating], groups: NDArray[np.int64], names: list[str], level: Level | None, title: str, legend: str
) -> Figure:
    """The ``atlas plot-layout`` drawing (colours, grid, legend) on a notebook figure, y down."""
    from stages.grid.layout_plot import draw_layout

    if level is not None:
        title += f"; level {level.n}: {len(level)} cells kept"
    fig = _Figure.make(figsize=(7.5, 6), dpi=100)
    drawn: Figure = draw_layout(fig, xy, groups, names, level, title, legend, y_down=True)
    return drawn


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _matrix(values: ArrayLike, name: str, expected: str, dtype: type = np.float32) -> NDArray[Any]:
    """A finite 2-D float array (``dtype``), or a one-line error naming ``name``."""
    try:
        x: NDArray[Any] = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise AtlasError(f"{name}: expected a numeric {expected} array (got {type(values).__name__})") from None
    if x.ndim != 2 or x.shape[1] == 0:
        hint = "; flatten the positions first, e.g. acts.transpose(0, 2, 3, 1).reshape(-1, C)" if x.ndim == 4 else ""
        raise AtlasError(f"{name}: expected a 2-D {expected} array (got shape {list(x.shape)}){hint}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise AtlasError(
            f"{name}: {int(bad.sum())} rows hold NaN or inf (first: row {int(np.flatnonzero(bad)[0])}); "
            "drop or fix them first"
        )
    return x


def _validated(model: type[_Config], values: dict[str, Any], where: str) -> _Config:
    """``model.model_validate(values)`` with the first problem as one line naming the parameter."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "(arguments)"
        message = first["msg"].removeprefix("Value error, ")
        raise AtlasError(f"{where}: {name}={values.get(name, first.get('input'))!r}: {message}") from None


def _check_colour(background: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(background)
    except (ValueError, AttributeError):
        raise AtlasError(
            f"background={background!r}: not a colour Pillow knows; pass e.g. '#ffffff' or 'white'"
        ) from None


def _same_device(asked: torch.device, have: torch.device) -> bool:
    """``cuda`` matches ``cuda:0`` when 0 is the current device; otherwise type and index must agree."""
    if asked.type != have.type:
        return False
    if asked.index is None or have.index is None:
        current = torch.cuda.current_device() if asked.type == "cuda" and torch.cuda.is_available() else 0
        return (asked.index if asked.index is not None else current) == (
            have.index if have.index is not None else current
        )
    return asked.index == have.index


def _layer_channels(model: LoadedModel, layer: str, where: str) -> int:
    """Channels of ``layer``'s output (the model's own layer: known; another: one small forward)."""
    if layer == model.layer:
        return int(model.layer_shape[0])
    try:
        find_module(model.module, layer)
    except FeatureVisError:
        raise AtlasError(
            f"{where}: layer={layer!r} is not a module of {model.name}; `atlas layers {model.name}` "
            f"lists them (this model's atlas layer is {model.layer!r})"
        ) from None
    with torch.no_grad(), layer_forward(model.module, layer, normalize=model.normalize) as forward:
        acts = forward(torch.full((1, 3, model.image_size, model.image_size), 0.5, device=model.device))[layer]
    if acts.ndim != 4:
        raise AtlasError(
            f"{where}: layer={layer!r} outputs shape {list(acts.shape[1:])}, not [C, H, W]; "
            "choose a convolutional layer (`atlas layers`)"
        )
    return int(acts.shape[1])


@contextmanager
def _engine_errors(where: str) -> Iterator[None]:
    """Turn the feature-visualization engine's errors into the project's one-line AtlasError."""
    try:
        yield
    except FeatureVisError as error:
        raise AtlasError(f"{where}: {error}") from None
