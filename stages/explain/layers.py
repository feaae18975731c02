"""How understanding evolves across layers (``atlas explain IMAGE --layers a,b,c``).

Olah et al. 2018 ("The Building Blocks of Interpretability", Distill), the "evolving
understanding" figure (GoogLeNet mixed3a -> 4a -> 4d -> 5a): one photo's semantic dictionary at
several layers side by side. Each spatial position's activation vector ``a_p`` is rendered by
feature visualization as a direction (the atlas objective of :class:`~stages.featurevis.AtlasDirection`,
no whitening: these layers have no store to estimate one), all positions of a layer in one batch;
its magnitude ``|a_p|`` is shown as the article does, by the icon's size (side proportional to
``|a_p| / max_p |a_p|`` of that layer). A layer that has an atlas (``model.layer`` when
``atlas explain`` runs with a store) may instead show each position as its nearest cell's icon,
as the semantic dictionary does.

Early layers have many positions (56x56 on MobileNetV2's ``features.3.conv.0``), so positions
are first pooled (:func:`pool_positions`): ``f x f`` blocks with ``f = ceil(side / layer_cells)``,
each block's mean activation vector rendered once. A 56x56 layer becomes 8x8 cells of 7x7
positions, 28x28 becomes 7x7 of 4x4, 14x14 becomes 7x7 of 2x2 (``layer_cells`` 8).

Plus the two oldest views interpretability lectures start from:

- the first convolution's filters as an RGB image grid (:func:`filter_grid`: the weights with the
  BatchNorm after the conv folded in, each filter min-max normalised to [0, 1] on its own);
- the photo's activation maps of the strongest channels (largest spatial mean) at a layer
  (:func:`strongest_maps`; ``explain.maps_layer``, default ``model.layer``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from stages.config import Config
from stages.explain.channels import strongest_channels
from stages.featurevis import AtlasDirection, FourierImage, layer_forward, render
from stages.featurevis.fold_bn import fold_batchnorm
from stages.model.layer_split import layer_shapes, suggest_layers
from stages.model.registry import LoadedModel
from stages.sections import ExplainSection
from store.errors import AtlasError

log = logging.getLogger(__name__)

# ReLU6 expansion outputs (``features.N.conv.0``) at each of MobileNetV2's four spatial sizes of the
# 224 px input: 56x56x144, 28x28x192, 14x14x576, 7x7x960 (docs/explain.md explains the choice).
DEFAULT_LAYERS = {
    "mobilenet_v2": ["features.3.conv.0", "features.6.conv.0", "features.12.conv.0", "features.17.conv.0"]
}
DEFAULT_KEYWORD = "default"


# ----------------------------------------------------------------------------- pure geometry / numbers


def pool_geometry(side_h: int, side_w: int, max_cells: int) -> tuple[int, int, int]:
    """``(f, rows, cols)``: block side ``f = ceil(max(side) / max_cells)`` and the pooled grid
    ``ceil(side / f)`` per axis (the last block of an axis is smaller when ``f`` does not divide it)."""
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1 (got {max_cells})")
    f = max(1, math.ceil(max(side_h, side_w) / max_cells))
    return f, math.ceil(side_h / f), math.ceil(side_w / f)


def pool_positions(acts: NDArray[np.floating], max_cells: int) -> tuple[NDArray[np.float32], int]:
    """``acts [H, W, C]`` -> (``[rows, cols, C]`` mean activation vector of each ``f x f`` block, ``f``).

    Non-overlapping blocks from the top-left corner; a block cut by the edge averages the positions
    it has.
    """
    acts = np.asarray(acts, np.float32)
    h, w, c = acts.shape
    f, rows, cols = pool_geometry(h, w, max_cells)
    out = np.empty((rows, cols, c), np.float32)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = acts[i * f : (i + 1) * f, j * f : (j + 1) * f].reshape(-1, c).mean(axis=0)
    return out, f


def magnitudes(pooled: NDArray[np.floating]) -> NDArray[np.float32]:
    """``[rows, cols]`` L2 norm of each cell's (pooled) activation vector."""
    return np.linalg.norm(np.asarray(pooled, np.float32), axis=-1).astype(np.float32)


def filter_grid(weight: NDArray[np.floating] | torch.Tensor) -> NDArray[np.float32]:
    """First-layer filters ``[K, 3, kh, kw]`` -> ``[K, kh, kw, 3]`` RGB in [0, 1], each filter min-max
    normalised on its own (a constant filter is mid-grey)."""
    w = np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight, np.float32)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"expected RGB filters [K, 3, kh, kw] (got {list(w.shape)})")
    w = w.transpose(0, 2, 3, 1)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.where(span > 0, (w - lo) / np.where(span > 0, span, 1.0), 0.5).astype(np.float32)


def tile(images: NDArray[np.floating], cols: int, scale: int, gap: int = 2) -> NDArray[np.uint8]:
    """``[K, h, w, 3]`` in [0, 1] -> one uint8 image: ``cols`` per row, each enlarged ``scale`` times
    (nearest), ``gap`` white pixels between them."""
    k, h, w, _ = images.shape
    rows = math.ceil(k / cols)
    sh, sw = h * scale, w * scale
    out = np.full((rows * sh + (rows + 1) * gap, cols * sw + (cols + 1) * gap, 3), 255, np.uint8)
    big = np.repeat(np.repeat(np.clip(images, 0, 1), scale, axis=1), scale, axis=2)
    for n in range(k):
        r, c = divmod(n, cols)
        y, x = gap + r * (sh + gap), gap + c * (sw + gap)
        out[y : y + sh, x : x + sw] = np.round(big[n] * 255).astype(np.uint8)
    return out


def strongest_maps(acts: NDArray[np.floating], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """``acts [H, W, C]`` -> (the ``k`` channels with the largest spatial mean, strongest first;
    their maps ``[k, H, W]``)."""
    channels = strongest_channels(acts, k)
    return channels, np.ascontiguousarray(np.asarray(acts, np.float32)[:, :, channels].transpose(2, 0, 1))


def layer_panel(
    icons: NDArray[np.uint8], norms: NDArray[np.floating], px: int, background: int = 255
) -> NDArray[np.uint8]:
    """The cells' icons ``[rows*cols, S, S, 3]`` on a ``px`` square, each centred in its cell with
    side ``cell * |a| / max |a|`` (the article's magnitude-as-size); a zero cell is left empty."""
    rows, cols = norms.shape
    cell = px // max(rows, cols)
    out = np.full((rows * cell, cols * cell, 3), background, np.uint8)
    top = float(np.max(norms)) or 1.0
    for n in range(rows * cols):
        i, j = divmod(n, cols)
        side = int(round(cell * float(norms[i, j]) / top))
        if side < 1:
            continue
        icon = np.asarray(Image.fromarray(icons[n]).resize((side, side), Image.Resampling.LANCZOS))
        y, x = i * cell + (cell - side) // 2, j * cell + (cell - side) // 2
        out[y : y + side, x : x + side] = icon
    return out


# ----------------------------------------------------------------------------- layer names


def conv_layers(model: LoadedModel) -> dict[str, tuple[int, int, int]]:
    """Every module with a ``[C, H, W]`` output at the model's input size, in forward order."""
    return {
        name: (int(shape[0]), int(shape[1]), int(shape[2]))
        for name, _, shape in layer_shapes(model.module, model.image_size)
        if len(shape) == 3
    }


def resolve_layers(
    names: list[str] | None, model: LoadedModel, valid: dict[str, tuple[int, int, int]], param: str = "explain.layers"
) -> list[str]:
    """The layers to show, in the order given: ``default`` expands to the model's default set; an
    empty list or an unknown name is a one-line error naming ``param`` and the closest names."""
    if names is None:
        return []
    if not names:
        example = ",".join(DEFAULT_LAYERS.get(model.name, list(valid)[-3:]))
        raise AtlasError(
            f"{param} is empty; name at least one layer, e.g. --layers {example} (or --layers {DEFAULT_KEYWORD})"
        )
    out: list[str] = []
    for name in (str(n).strip() for n in names):
        if name == DEFAULT_KEYWORD:
            if model.name not in DEFAULT_LAYERS:
                raise AtlasError(
                    f"{param}: no default layers for {model.name}; name them (`atlas layers "
                    f"{model.name}` lists them), e.g. --layers {','.join(list(valid)[-3:])}"
                )
            out.extend(n for n in DEFAULT_LAYERS[model.name] if n not in out)
        elif name not in valid:
            raise AtlasError(
                f"{param}: {name!r} is not a convolutional layer of {model.name}; {suggest_layers(name, list(valid))}"
            )
        elif name not in out:
            out.append(name)
    return out


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class LayerView:
    layer: str
    shape: tuple[int, int, int]  # C, H, W of the layer
    block: int  # f: positions pooled per cell side
    norms: NDArray[np.float32]  # [rows, cols]
    icons: NDArray[np.uint8]  # [rows*cols, S, S, 3]
    source: str  # "rendered" or "atlas level N"
    panel: NDArray[np.uint8]  # the drawn panel


def render_vectors(
    module: torch.nn.Module,
    normalize,
    layer: str,
    vectors: NDArray[np.float32],
    size: int,
    steps: int,
    config: Config | ExplainSection,
    device: torch.device,
) -> NDArray[np.uint8]:
    """Each activation vector rendered as a direction at ``layer`` (one batch); zero vectors stay white."""
    vectors = np.asarray(vectors, np.float32)
    live = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    out = np.full((len(vectors), size, size, 3), 255, np.uint8)
    if len(live) == 0:
        return out
    r = config.render
    with layer_forward(module, layer, normalize=normalize) as forward:
        result = render(
            forward,
            AtlasDirection(
                layer, torch.as_tensor(vectors[live]), whitening=None, cos_power=r.cos_power, cosine=r.cosine
            ),
            FourierImage(len(live), (size, size)),
            steps=steps,
            lr=r.lr,
            device=device,
            seed=config.explain.seed,
        )
    out[live] = result.images
    return out


def layer_views(
    model: LoadedModel,
    acts: dict[str, NDArray[np.float32]],
    layers: list[str],
    config: Config | ExplainSection,
    device: torch.device,
    atlas: tuple[str, NDArray[np.float32], NDArray[np.uint8], int] | None = None,
    render_module: torch.nn.Module | None = None,
) -> list[LayerView]:
    """One :class:`LayerView` per layer from its ``[H, W, C]`` activations on the photo.

    ``atlas``: ``(layer, cell directions [N, C], cell icons [N, S, S, 3], level)``: that layer's
    cells are drawn as their nearest atlas cell's icon (cosine) instead of rendered.
    """
    from stages.explain.groups import nearest_cells

    e = config.explain
    module = render_module if render_module is not None else model.module
    views = []
    for layer in layers:
        a = acts[layer]
        pooled, f = pool_positions(a, e.layer_cells)
        rows, cols, c = pooled.shape
        flat = pooled.reshape(-1, c)
        if atlas is not None and atlas[0] == layer:
            cell, _ = nearest_cells(flat, atlas[1])
            blank = np.full_like(atlas[2][0], 255)
            icons = np.stack([atlas[2][k] if k >= 0 else blank for k in cell])
            source = f"atlas level {atlas[3]}"
        else:
            icons = render_vectors(module, model.normalize, layer, flat, e.layer_icon_px, e.layer_steps, config, device)
            source = "rendered"
        norms = magnitudes(pooled)
        views.append(
            LayerView(
                layer=layer,
                shape=(c, a.shape[0], a.shape[1]),
                block=f,
                norms=norms,
                icons=icons,
                source=source,
                panel=layer_panel(icons, norms, e.layer_panel_px),
            )
        )
    return views


# ----------------------------------------------------------------------------- figures


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor="white")
    return out


def layers_figure(photo: NDArray[np.uint8], views: list[LayerView], title: str, out: Path) -> Path:
    """The photo, then each layer's grid of rendered cells (icon side = magnitude)."""
    n = 1 + len(views)
    fig = _figure(3.3 * n, 3.95)
    grid = fig.add_gridspec(1, n, left=0.005, right=0.995, top=0.80, bottom=0.08, wspace=0.04)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(photo)
    ax.set_title("photo", fontsize=10)
    _off(ax)
    for k, v in enumerate(views):
        ax = fig.add_subplot(grid[0, 1 + k])
        ax.imshow(v.panel)
        c, h, w = v.shape
        rows, cols = v.norms.shape
        pooled = (
            f"{rows}\u00d7{cols} cells of {v.block}\u00d7{v.block}" if v.block > 1 else f"{rows}\u00d7{cols} positions"
        )
        ax.set_title(f"{v.layer}\n{h}\u00d7{w}\u00d7{c} \u2192 {pooled}", fontsize=9.5)
        ax.set_xlabel(f"{v.source}; side \u221d |a|, max {float(v.norms.max()):.3g}", fontsize=8.5)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#ccc")
    fig.suptitle(title, fontsize=11, y=0.985, va="top")
    return _save(fig, out)


def filters_figure(images: NDArray[np.float32], layer: str, out: Path, cols: int = 8, px: int = 48) -> Path:
    """The first layer's filters as RGB tiles."""
    k, kh, kw, _ = images.shape
    scale = max(1, px // max(kh, kw))
    grid = tile(images, min(cols, k), scale, gap=max(2, scale // 6))
    height = grid.shape[0] / 100 + 0.7
    fig = _figure(max(5.2, grid.shape[1] / 100 + 0.3), height)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.62 / height))
    ax.imshow(grid, interpolation="nearest")
    _off(ax)
    fig.suptitle(
        f"first layer {layer}: {k} filters {kh}\u00d7{kw}\u00d73 as RGB\n(BatchNorm folded in; each filter "
        "min-max normalised on its own)",
        fontsize=9.5,
        y=0.99,
        va="top",
    )
    return _save(fig, out)


def maps_figure(
    photo: NDArray[np.uint8],
    channels: NDArray[np.int64],
    maps: NDArray[np.float32],
    layer: str,
    shape: tuple[int, int, int],
    out: Path,
    cols: int = 8,
) -> Path:
    """The photo, then the strongest channels' activation maps (each on its own colour scale)."""
    k = len(channels)
    rows = max(1, math.ceil(k / cols))
    cols = min(cols, max(k, 1))
    fig = _figure(1.55 * (cols + rows) + 0.2, 1.62 * rows + 0.55)
    grid = fig.add_gridspec(
        rows,
        rows + cols,
        left=0.005,
        right=0.995,
        top=1 - 0.5 / (1.62 * rows + 0.55),
        bottom=0.005,
        wspace=0.05,
        hspace=0.22,
    )
    ax = fig.add_subplot(grid[:, :rows])
    ax.imshow(photo)
    _off(ax)
    for n in range(k):
        r, c = divmod(n, cols)
        ax = fig.add_subplot(grid[r, rows + c])
        m = maps[n]
        lo = min(0.0, float(m.min()))
        ax.imshow(m, cmap="magma", vmin=lo, vmax=max(float(m.max()), lo + 1e-6), interpolation="nearest")
        ax.set_title(f"ch {int(channels[n])}: mean {float(m.mean()):.2f}", fontsize=8)
        _off(ax)
    c_, h, w = shape
    fig.suptitle(
        f"activation maps of the {k} strongest channels (largest mean) of {layer} ({h}\u00d7{w}\u00d7{c_}); "
        "each map on its own scale, black = 0",
        fontsize=10,
        y=0.995,
        va="top",
    )
    return _save(fig, out)


# ----------------------------------------------------------------------------- the view


def first_conv(module: torch.nn.Module) -> str:
    """The name of the first ``Conv2d`` with 3 input channels (the layer that sees the pixels)."""
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels == 3:
            return name
    raise AtlasError(f"{type(module).__name__} has no Conv2d with 3 input channels; no filter grid to draw")


def figure_paths(target: Path) -> dict[str, Path]:
    stem = Path(target).with_suffix("")
    return {
        "layers": Path(f"{stem}_layers.png"),
        "filters": Path(f"{stem}_filters.png"),
        "activation_maps": Path(f"{stem}_activation_maps.png"),
    }


@dataclass(frozen=True)
class LayersResult:
    layers: list[str]
    views: list[LayerView]
    filters_layer: str
    maps_layer: str
    maps_channels: list[int]
    figures: dict[str, Path]
    predictions: list[tuple[str, float]]
    seconds: float
    notes: list[str] = field(default_factory=list)


def check_layers(
    config: Config | ExplainSection, model: LoadedModel
) -> tuple[list[str], str, dict[str, tuple[int, int, int]]]:
    """The resolved ``explain.layers`` and ``explain.maps_layer`` (one-line errors before any work)."""
    valid = conv_layers(model)
    layers = resolve_layers(config.explain.layers, model, valid)
    maps_layer = config.explain.maps_layer or model.layer
    if maps_layer not in valid:
        raise AtlasError(
            f"explain.maps_layer: {maps_layer!r} is not a convolutional layer of {model.name}; "
            f"{suggest_layers(maps_layer, list(valid))}"
        )
    return layers, maps_layer, valid


def run(
    config: Config | ExplainSection,
    photo: Image.Image,
    model: LoadedModel,
    device: torch.device,
    target: str | Path,
    image_name: str = "",
    atlas: tuple[str, NDArray[np.float32], NDArray[np.uint8], int] | None = None,
    checked: tuple[list[str], str, dict[str, tuple[int, int, int]]] | None = None,
) -> LayersResult:
    """The three figures next to ``target`` (``<stem>_layers.png``, ``_filters.png``, ``_activation_maps.png``)."""
    t0 = time.perf_counter()
    e = config.explain
    layers, maps_layer, valid = checked if checked is not None else check_layers(config, model)
    paths = figure_paths(Path(target))
    wanted = list(dict.fromkeys(layers + [maps_layer]))
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
    with torch.no_grad(), layer_forward(model.module, wanted, normalize=model.normalize, with_logits=True) as forward:
        out = forward(x)
    acts = {name: out[name][0].float().permute(1, 2, 0).cpu().numpy() for name in wanted}
    probs = torch.softmax(out["logits"][0].float(), dim=0).cpu()
    top = probs.topk(3)
    predictions = [(model.class_names[int(i)], float(p)) for p, i in zip(top.values, top.indices)]

    figures: dict[str, Path] = {}
    photo_np = np.asarray(photo)
    filters_layer = first_conv(model.module)
    deepest = max(wanted, key=list(valid).index)
    folded = fold_batchnorm(model.module, deepest, model.normalize)  # same values, faster render steps
    views: list[LayerView] = []
    if layers:
        views = layer_views(model, acts, layers, config, device, atlas=atlas, render_module=folded)
        said = ", ".join(f"{n} {p:.0%}" for n, p in predictions)
        figures["layers"] = layers_figure(
            photo_np,
            views,
            f"{image_name or 'the photo'} through {model.name} "
            f"(top: {said}); each cell = its mean activation vector, rendered",
            paths["layers"],
        )
    # the filters as the network applies them: the folded copy's conv holds conv x BN scale (checked at the
    # deepest layer; the original weights when nothing could be folded)
    weight = dict(folded.named_modules())[filters_layer].weight
    figures["filters"] = filters_figure(filter_grid(weight), filters_layer, paths["filters"])
    channels, maps = strongest_maps(acts[maps_layer], e.maps_channels)
    figures["activation_maps"] = maps_figure(
        photo_np, channels, maps, maps_layer, valid[maps_layer], paths["activation_maps"]
    )
    seconds = time.perf_counter() - t0
    log.info("explain --layers: %s in %.1f s", ", ".join(layers), seconds)
    return LayersResult(
        layers=layers,
        views=views,
        filters_layer=filters_layer,
        maps_layer=maps_layer,
        maps_channels=channels.tolist(),
        figures=figures,
        predictions=predictions,
        seconds=seconds,
    )
