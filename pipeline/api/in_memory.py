"""An atlas without a store (lucid's recipe, Carter et al., 2019): activations in, layout, cells and
directions out (:func:`activation_atlas`); directions in, icons out (:func:`render_directions`); one
unit in, an image out (:func:`feature_vis`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from pipeline.api.common import (
    _GRID,
    _REDUCE,
    _RENDER,
    ModelLike,
    _engine_errors,
    _layer_channels,
    _matrix,
    _same_device,
    _validated,
)
from pipeline.api.results import AtlasResult, Level
from stages.config import GridConfig, ModelConfig, ReduceConfig, RenderConfig
from stages.featurevis import FourierImage, Objective, layer_forward, render
from stages.featurevis.fold_bn import fold_batchnorm
from stages.model.registry import LoadedModel, load_model
from store.derived import Layout
from store.errors import AtlasError

log = logging.getLogger(__name__)


# ===================================================================================== in memory
def activation_atlas(
    activations: ArrayLike,
    attributions: ArrayLike | None = None,
    grid: int | Sequence[int] = 20,
    *,
    class_names: Sequence[str] | None = None,
    embedding: ArrayLike | None = None,
    method: Literal["umap", "tsne", "pca"] = _REDUCE.method,
    n_neighbors: int = _REDUCE.n_neighbors,
    min_dist: float = _REDUCE.min_dist,
    metric: Literal["cosine", "euclidean"] = _REDUCE.metric,
    min_count: int = _GRID.min_count,
    top_classes: int = _GRID.top_classes,
    ridge: float = _GRID.ridge,
    seed: int = _REDUCE.seed,
) -> AtlasResult:
    """An activation atlas of an in-memory ``[samples, channels]`` array: layout, cells, directions.

    Lucid's recipe without a store: lay the activations out in 2-D (the reduce stage: UMAP with
    n_neighbors 50, min_dist 0.05, cosine by default, as in Carter et al. 2019; ``method="pca"`` is
    instant), normalise the layout to [0, 1]^2 (1st-99th percentile clip, 10% margin), bin it into
    ``grid`` x ``grid`` cells (one level per size in a list), keep the cells holding more than
    ``min_count`` samples (the recipe's threshold 5) and average each kept cell's raw activations
    into its direction (the grid stage). ``attributions`` (``[samples, classes]``, e.g. activation x
    gradient of each logit) label the cells with their ``top_classes`` largest mean attributions;
    ``embedding`` (``[samples, 2]``, any scale) replaces the reduction with your own positions.
    The result also holds the whitening ``S`` of the activations (``ridge`` relative to the mean
    eigenvalue, ``grid.ridge``) for :func:`render_directions`.
    """
    from stages.grid.stage import level_in_memory

    x, attr, names = _atlas_inputs(activations, attributions, class_names)
    n = x.shape[0]
    grid_cfg = _validated(
        GridConfig,
        {"levels": _grid_sizes(grid), "min_count": min_count, "top_classes": top_classes, "ridge": ridge},
        "activation_atlas",
    )
    reduce_cfg = _validated(
        ReduceConfig,
        {"method": method, "n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric, "seed": seed},
        "activation_atlas",
    )
    layout = _atlas_layout(x, embedding, reduce_cfg)
    levels = {g: Level.from_cells(level_in_memory(layout.layout, x, attr, g, grid_cfg, names)) for g in grid_cfg.levels}
    s = _atlas_whitening(x, grid_cfg.ridge, ridge)
    groups = None
    if attr is not None:
        groups = np.where(attr.max(axis=1) > 0, attr.argmax(axis=1), -1).astype(np.int64)
    for g, lv in levels.items():
        log.info(
            "level %d: %d cells kept (count > %d) holding %d of %d rows", g, len(lv), min_count, int(lv.count.sum()), n
        )
    return AtlasResult(layout=layout, cell_levels=levels, whitening=s, class_names=names, groups=groups)


def _atlas_inputs(
    activations: ArrayLike, attributions: ArrayLike | None, class_names: Sequence[str] | None
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, list[str]]:
    """``[samples, channels]`` activations, their ``[samples, classes]`` attributions and the class names, checked."""
    x = _matrix(activations, "activations", "[samples, channels]")
    n = x.shape[0]
    if n < 2:
        raise AtlasError(f"activations: {n} row(s); an atlas needs at least 2 samples")
    attr = None
    if attributions is not None:
        attr = _matrix(attributions, "attributions", f"[samples={n}, classes]")
        if attr.shape[0] != n:
            raise AtlasError(f"attributions: {attr.shape[0]} rows for {n} activation rows; pass one row per sample")
    names = (
        list(class_names)
        if class_names is not None
        else [f"class_{k}" for k in range(attr.shape[1] if attr is not None else 0)]
    )
    if attr is not None and len(names) != attr.shape[1]:
        raise AtlasError(
            f"class_names: {len(names)} names for {attr.shape[1]} attribution columns; pass one per column"
        )
    return x, attr, names


def _grid_sizes(grid: int | Sequence[int]) -> list[int]:
    """``grid`` as a list of cells per side; a one-line error for anything else."""
    sizes = [grid] if isinstance(grid, (int, np.integer)) else list(grid)
    if not sizes or any(not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g < 1 for g in sizes):
        raise AtlasError(
            f"grid={grid!r}: pass cells per side as a positive integer or a list of them, e.g. 20 or [10, 20]"
        )
    return [int(g) for g in sizes]


def _atlas_layout(x: NDArray[np.float32], embedding: ArrayLike | None, reduce_cfg: ReduceConfig) -> Layout:
    """The normalised 2-D layout: the given ``embedding``, else the reduce stage's on ``x``."""
    from stages.reduce.layout_math import normalize_layout
    from stages.reduce.stage import layout_in_memory

    n = x.shape[0]
    if embedding is not None:
        points = _matrix(embedding, "embedding", f"[samples={n}, 2]", np.float64)
        if points.shape != (n, 2):
            raise AtlasError(f"embedding: shape {list(points.shape)}, expected [samples={n}, 2]; one 2-D point per row")
        return Layout(
            rows=np.arange(n, dtype=np.int64),
            layout=normalize_layout(points, _clip(reduce_cfg), reduce_cfg.margin),
            embedding=points.astype(np.float32),
            fitted=np.ones(n, bool),
            attrs={"method": "given embedding"},
        )
    method, n_neighbors = reduce_cfg.method, reduce_cfg.n_neighbors
    if method in ("umap", "tsne") and n <= n_neighbors:
        raise AtlasError(
            f"n_neighbors={n_neighbors}: {method} needs more samples than neighbours and there are {n}; "
            f"pass n_neighbors < {n} (e.g. {max(2, min(15, n - 1))}) or method='pca'"
        )
    if method == "tsne" and n <= reduce_cfg.tsne_perplexity:
        raise AtlasError(
            f"method='tsne': {n} samples, t-SNE needs more than its perplexity "
            f"({reduce_cfg.tsne_perplexity:g}); use method='pca' or 'umap'"
        )
    return layout_in_memory(x, reduce_cfg)


def _clip(cfg: ReduceConfig) -> tuple[float, float]:
    lo, hi = cfg.clip_percentiles
    return lo, hi


def _atlas_whitening(x: NDArray[np.float32], ridge: float, given: float) -> NDArray[np.float64]:
    """The whitening ``S`` of the activations' second moment (``ridge`` relative to its mean eigenvalue;
    ``given``: the caller's value, named in the error)."""
    from stages.grid.whitening import SecondMoment, whitening_matrix

    moment = SecondMoment(x.shape[1])
    moment.add(x)
    try:
        return whitening_matrix(moment.moment(), ridge)
    except ValueError:
        raise AtlasError(
            f"ridge={given}: the activations' second moment is singular (a channel is never active); pass ridge > 0"
        ) from None


def load_classifier(
    name: str,
    layer: str | None = None,
    *,
    weights: str | None = None,
    image_size: int | None = None,
    device: torch.device | None = None,
) -> LoadedModel:
    """A torchvision classifier cut at ``layer`` (default: the pipeline's ``model.layer``), on ``device``.

    ``weights`` is a torchvision weights name (default ``model.weights``, IMAGENET1K_V1) read from
    torchvision's local cache, or a path to a state-dict file; nothing is downloaded.
    """
    defaults = ModelConfig()
    cfg = _validated(
        ModelConfig,
        {
            "name": name,
            "layer": layer or defaults.layer,
            "weights": weights or defaults.weights,
            "image_size": image_size or defaults.image_size,
        },
        "load_classifier",
    )
    return load_model(cfg, device if device is not None else torch.device("cpu"))


def render_directions(
    model: ModelLike,
    layer: str | None,
    directions: ArrayLike,
    *,
    steps: int = _RENDER.steps,
    size: int = _RENDER.size,
    whitening: ArrayLike | None = None,
    cos_power: float = _RENDER.cos_power,
    cosine: Literal["raw", "lucid"] = _RENDER.cosine,
    attempts: int = _RENDER.attempts,
    lr: float = _RENDER.lr,
    batch_size: int = _RENDER.batch_size,
    seed: int = _RENDER.seed,
    device: torch.device | None = None,
) -> NDArray[np.uint8]:
    """One icon per direction, ``uint8 [K, size, size, 3]``: the render stage's feature visualization.

    Each image maximises the atlas objective ``dot * cos^cos_power`` of ``layer``'s centre activation
    with its direction (whitened ``v S`` when ``whitening`` is given, e.g. ``AtlasResult.whitening``
    or ``Atlas.whitening``), from a Fourier-parameterised image under lucid's transformation
    robustness, Adam at ``lr``, best of ``attempts`` (docs/method.md §5-§6; production 80 px, 1024
    steps, 4 attempts). ``layer`` ``None`` is the model's own layer. Deterministic for a ``seed`` on
    the CPU.
    """
    from stages.render.stage import batch_seed, render_batch

    loaded = _model(model, layer, device, "render_directions")
    layer = layer or loaded.layer
    r = _validated(
        RenderConfig,
        {
            "steps": steps,
            "size": size,
            "cos_power": cos_power,
            "cosine": cosine,
            "attempts": attempts,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
        },
        "render_directions",
    )
    v, s = _directions_and_whitening(directions, whitening, _layer_channels(loaded, layer, "render_directions"), layer)
    module = fold_batchnorm(loaded.module, layer, loaded.normalize)  # same values, faster (as the stage)
    seeds = [batch_seed(r.seed, 0, 0, k) for k in range(-(-len(v) // r.batch_size))]
    with _engine_errors("render_directions"), layer_forward(module, layer, normalize=loaded.normalize) as forward:
        white = torch.as_tensor(s) if s is not None else None
        images, objective = render_batch(
            forward, layer, torch.as_tensor(v), white, r, loaded.device, seeds=seeds, cap=r.batch_size
        )
    mean = float(np.mean(objective))
    log.info(
        "rendered %d directions at %s (%d px, %d steps): mean objective %.4g", len(v), layer, r.size, r.steps, mean
    )
    return images


def _directions_and_whitening(
    directions: ArrayLike, whitening: ArrayLike | None, channels: int, layer: str
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """``[K, C]`` directions and the ``[C, C]`` whitening (or None) for a layer of ``channels``; one-line errors."""
    v = np.asarray(directions, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != channels or v.shape[0] == 0 or not np.isfinite(v).all():
        raise AtlasError(
            f"directions: expected finite [K, {channels}] for layer {layer!r} (got {list(v.shape)}); "
            "pass one row per icon with the layer's channel count"
        )
    s = None
    if whitening is not None:
        s = np.asarray(whitening, dtype=np.float32)
        if s.shape != (channels, channels):
            raise AtlasError(
                f"whitening: expected [{channels}, {channels}] for layer {layer!r} (got {list(s.shape)}); "
                "pass AtlasResult.whitening or Atlas.whitening of the same layer"
            )
    return v, s


def feature_vis(
    model: ModelLike,
    target: str | Objective,
    *,
    layer: str | None = None,
    steps: int = _RENDER.steps,
    size: int = _RENDER.size,
    lr: float = _RENDER.lr,
    seed: int = _RENDER.seed,
    device: torch.device | None = None,
) -> Image.Image:
    """A feature visualization of one unit, as a ``size`` x ``size`` PIL image.

    ``target`` is what ``atlas render-unit`` takes, on ``layer`` (default: the model's):
    ``"channel:N"`` (lucid ``objectives.channel``), ``"neuron:N[:y:x]"``, ``"class:NAME|INDEX"`` (the
    logit) or ``"direction:PATH.npy"``; or any :class:`stages.featurevis.Objective` reading ``layer``
    and/or the logits (e.g. ``Channel(layer, 3) + Channel(layer, 7)``). Same engine and settings as
    the render stage: Fourier image, transformation robustness, Adam ``lr``.
    """
    from stages.render.targets import parse_target

    loaded = _model(model, layer, device, "feature_vis")
    layer = layer or loaded.layer
    r = _validated(RenderConfig, {"steps": steps, "size": size, "lr": lr, "seed": seed}, "feature_vis")
    if isinstance(target, str):
        shape = loaded.layer_shape if layer == loaded.layer else (_layer_channels(loaded, layer, "feature_vis"), 1, 1)
        objective, needs_logits = parse_target(target, dataclasses.replace(loaded, layer=layer, layer_shape=shape))
    elif isinstance(target, Objective):
        objective, needs_logits = target, True
    else:
        raise AtlasError(
            f"target: expected 'channel:N', 'neuron:N[:y:x]', 'class:NAME', 'direction:PATH.npy' or an "
            f"Objective (got {type(target).__name__})"
        )
    _layer_channels(loaded, layer, "feature_vis")
    with (
        _engine_errors("feature_vis"),
        layer_forward(loaded.module, layer, normalize=loaded.normalize, with_logits=needs_logits) as forward,
    ):
        result = render(
            forward,
            objective,
            FourierImage(1, (r.size, r.size)),
            steps=r.steps,
            lr=r.lr,
            device=loaded.device,
            seed=r.seed,
        )
    log.info(
        "feature_vis %s at %s: objective %.4g in %.1f s", target, layer, float(result.objective[0]), result.seconds
    )
    return Image.fromarray(result.images[0])


def _model(model: ModelLike, layer: str | None, device: torch.device | None, where: str) -> LoadedModel:
    """``model`` as a LoadedModel on ``device``: loaded by name (local weights) or checked as given."""
    if isinstance(model, str):
        return load_classifier(model, layer, device=device)
    if not isinstance(model, LoadedModel):
        raise AtlasError(
            f"{where}: model must be a LoadedModel (load_classifier, Atlas.load_model) or a torchvision "
            f"name such as 'mobilenet_v2' (got {type(model).__name__})"
        )
    if device is not None and not _same_device(torch.device(device), model.device):
        raise AtlasError(
            f"{where}: device={device} but the model is on {model.device}; pass device=None "
            f"or load the model with device={device}"
        )
    return model
