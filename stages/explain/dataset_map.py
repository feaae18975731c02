"""The dataset map: whole photos laid out by what the model thinks of them, as a photo atlas.

Karpathy's "t-SNE visualization of CNN codes" embeds each image by the network's penultimate
representation (the vector the last linear layer reads: MobileNetV2's pooled 1280-d features,
ResNet's pooled ``fc`` input, VGG's fc7), lays the codes out with t-SNE and snaps the layout to a
grid so every image gets its own square. Here:

1. every photo of ``data.source`` (or ``dataset_map.views_per_image`` views of it, collect's
   deterministic crops) is resized to the model input and run through the model in batches; a
   forward pre-hook on the last ``nn.Linear`` (removed when the block ends) captures its input,
   and the softmax gives the predicted classes;
2. the codes are laid out by the reduce stage's own in-memory path
   (:func:`stages.reduce.stage.layout_in_memory`: cosine feature map, t-SNE or UMAP, the
   percentile normalisation to [0, 1]);
3. :func:`snap_to_grid` gives each image one cell of an ``n x n`` grid (``n = ceil(sqrt(N x
   grid_slack))``) by minimum-cost assignment of layout points to cell centres (scipy's
   ``linear_sum_assignment``, the Hungarian method; Karpathy's grid maps used the same idea
   via Jonker-Volgenant), so the grid holds every image exactly once;
4. the grid is exported by the tiles stage's :func:`stages.tiles.export.export_atlas` as atlas
   ``dataset`` (kind ``dataset``) of the same viewer: one level, each cell's icon the photo, its
   ``classes`` the top-5 predictions with their probabilities (the hover tooltip).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from stages.config import Config, ReduceConfig
from stages.images.crops import render_view, view_box
from stages.images.decoding import decode_rgb
from stages.images.sources import open_image_source
from stages.model.registry import LoadedModel, load_model
from store.errors import AtlasError

if TYPE_CHECKING:
    from stages.tiles.source import AtlasSource
    from store import derived
    from store.icons import IconLevel

log = logging.getLogger(__name__)

ATLAS_ID = "dataset"
ATLAS_KIND = "dataset"


# --------------------------------------------------------------------------------- grid (pure)
def grid_side(n_images: int, slack: float = 1.0) -> int:
    """Cells per side of a square grid with at least ``n_images x slack`` cells."""
    if n_images < 1:
        raise ValueError("no images to place")
    return max(1, math.ceil(math.sqrt(n_images * slack - 1e-9)))


def snap_to_grid(points: NDArray[np.floating], n: int) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """``(i, j)`` cell of each point of ``points [N, 2]`` (in [0, 1], y down) on an ``n x n`` grid:
    the assignment of points to distinct cells that minimises the total squared distance to the
    cells' centres. Every point gets exactly one cell and no cell gets two."""
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(points, np.float64)
    if len(p) > n * n:
        raise ValueError(f"{len(p)} points do not fit a {n}x{n} grid")
    centres = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="xy"), axis=-1).reshape(-1, 2) + 0.5) / n
    cost = ((p[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    cell = np.empty(len(p), np.int64)
    cell[rows] = cols
    return (cell % n).astype(np.int32), (cell // n).astype(np.int32)


# --------------------------------------------------------------------------------- codes
@contextmanager
def penultimate(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Capture the input of the module's last ``nn.Linear`` on every forward (its "CNN code")."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise AtlasError(f"{type(module).__name__} has no linear layer; the dataset map needs its penultimate features")
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = linears[-1].register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@dataclass(frozen=True)
class Item:
    """One photo (or one view of it) on the map."""

    path: str
    view: int
    box: tuple[int, int, int, int]


@dataclass
class Codes:
    items: list[Item]
    codes: NDArray[np.float32]  # [N, D]
    top_idx: NDArray[np.int32]  # [N, 5]
    top_prob: NDArray[np.float32]  # [N, 5]
    thumbnails: NDArray[np.uint8]  # [N, S, S, 3]
    skipped: list[str]


def image_codes(
    model: LoadedModel,
    paths: list[str],
    views: int,
    view_scale: tuple[float, float],
    seed: int,
    icon_px: int,
    batch_size: int,
    max_pixels: int,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> Codes:
    """Codes, top-5 predictions and thumbnails of every view of every readable photo (in order)."""
    size = model.image_size
    items: list[Item] = []
    codes, top_idx, top_prob, skipped = [], [], [], []
    thumbs: list[NDArray[np.uint8]] = []
    pending: list[tuple[Item, Image.Image]] = []

    def flush() -> None:
        if not pending:
            return
        x = torch.stack([torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1) for _, im in pending])
        with torch.no_grad(), penultimate(model.module) as captured:
            logits = model.module(model.normalize(x.to(device))).float()
        probs = torch.softmax(logits, dim=1).cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        codes.append(torch.cat(captured).numpy())
        top_idx.append(top.indices.numpy().astype(np.int32))
        top_prob.append(top.values.numpy().astype(np.float32))
        thumbs.extend(np.asarray(im.resize((icon_px, icon_px), Image.Resampling.LANCZOS)) for _, im in pending)
        items.extend(item for item, _ in pending)
        pending.clear()

    for k, path in enumerate(paths):
        decoded = decode_rgb(path, max_pixels)
        if decoded.image is None:
            skipped.append(f"{path}: {decoded.reason}")
            log.warning("dataset map: %s cannot be read (%s); left out", path, decoded.reason)
            continue
        photo = decoded.image
        for v in range(views):
            box = view_box(photo.width, photo.height, k, v, views, view_scale, seed)
            x0, y0, x1, y1 = (int(b) for b in box)
            pending.append((Item(path, v, (x0, y0, x1, y1)), render_view(photo, box, size)))
            if len(pending) >= batch_size:
                flush()
        if progress is not None:
            progress(k + 1, len(paths))
    flush()
    if not items:
        raise AtlasError("dataset map: none of the photos could be read; check data.source")
    return Codes(
        items=items,
        codes=np.concatenate(codes),
        top_idx=np.concatenate(top_idx),
        top_prob=np.concatenate(top_prob),
        thumbnails=np.stack(thumbs),
        skipped=skipped,
    )


def layout_config(config: Config, n: int) -> ReduceConfig:
    """The reduce settings of the map: the main ``reduce`` section with the map's method, its
    perplexity / neighbours capped for small photo sets, every code fitted (no placement)."""
    d = config.dataset_map
    if n < 4:
        raise AtlasError(f"dataset map: {n} images are too few to lay out; need at least 4")
    return config.reduce.model_copy(
        update={
            "method": d.method,
            "metric": "cosine",
            "fit_samples": max(n, 100),
            "tsne_perplexity": min(d.perplexity, (n - 1) / 3),
            "n_neighbors": min(d.n_neighbors, n - 1),
            "min_dist": d.min_dist,
            "seed": d.seed,
        }
    )


@dataclass(frozen=True)
class DatasetMapResult:
    images: int
    items: int
    grid: int
    export: Path
    skipped: list[str]
    seconds: float


def _source_model(config: Config, model: LoadedModel) -> dict[str, str]:
    """The ``model`` of atlases.json: the main atlas's (its store's) if there is one, so the index keeps it."""
    import json

    index = Path(config.data.atlas) / "atlases.json"
    if index.exists():
        try:
            recorded = json.loads(index.read_text()).get("model")
        except json.JSONDecodeError:
            recorded = None
        if recorded and recorded.get("name") == model.name:
            return recorded
    return {"name": model.name, "layer": model.layer}


def _dataset_codes(
    config: Config,
    device: torch.device,
    model: LoadedModel | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[str], LoadedModel, Codes]:
    """The photos of ``data.source`` (at most ``dataset_map.max_images``), the model and their codes:
    the map needs several photos, so too few is a one-line error before any model is loaded."""
    d = config.dataset_map
    source = open_image_source(config.data.source)
    paths = [r.path for r in source.records][: d.max_images or None]
    if len(paths) < 2:
        raise AtlasError(f"data.source {config.data.source}: {len(paths)} images; the dataset map needs several")
    model = model if model is not None else load_model(config.model, device)
    codes = image_codes(
        model,
        paths,
        d.views_per_image,
        config.collect.view_scale,
        d.seed,
        d.icon_px,
        d.batch_size,
        config.collect.max_pixels,
        device,
        progress,
    )
    return paths, model, codes


def _grid_levels(
    codes: Codes, n: int, i: NDArray[np.int32], j: NDArray[np.int32], names: list[str]
) -> tuple[derived.CellLevel, IconLevel]:
    """The one cell level and icon level of the map: each grid cell holds exactly one item, so every
    count is 1, each cell's members are just itself and its icon is the photo (no optimized icon,
    hence the NaN objective and cosine similarity)."""
    from store import derived
    from store.icons import IconLevel

    n_items = len(codes.items)
    level = derived.CellLevel(
        n=n,
        i=i,
        j=j,
        count=np.ones(n_items, np.int64),
        direction=np.zeros((n_items, 1), np.float32),
        attribution=None,
        top_idx=codes.top_idx,
        top_val=codes.top_prob,
        member_offsets=np.arange(n_items + 1, dtype=np.int64),
        member_rows=np.arange(n_items, dtype=np.int64),
        class_names=names,
    )
    icons = IconLevel(
        n=n,
        icons=codes.thumbnails,
        objective=np.full(n_items, np.nan, np.float32),
        cossim=np.full(n_items, np.nan, np.float32),
        done=np.ones(1, bool),
    )
    return level, icons


def _atlas_source(
    config: Config,
    model: LoadedModel,
    paths: list[str],
    codes: Codes,
    layout: NDArray[np.floating],
    grid: tuple[int, NDArray[np.int32], NDArray[np.int32]],
) -> AtlasSource:
    """The map as the tiles stage's atlas source: one level, the layout as its minimap, and a
    fingerprint of the items, parameters, model and grid so a re-export of the same map is a no-op."""
    from stages.tiles.source import AtlasSource, MiniMap
    from store.records import fingerprint

    d = config.dataset_map
    n, i, j = grid
    n_items = len(codes.items)
    names = model.class_names
    level, icons = _grid_levels(codes, n, i, j, names)
    minimap = MiniMap(
        x=layout[:, 0].astype(np.float32), y=layout[:, 1].astype(np.float32), label=codes.top_idx[:, 0].astype(np.int32)
    )
    what = "t-SNE" if d.method == "tsne" else "UMAP"
    return AtlasSource(
        id=ATLAS_ID,
        kind=ATLAS_KIND,
        title=f"dataset map: {len(paths)} photos by {model.name}'s pooled features ({what})",
        levels=[n],
        cell_level=lambda _n: level,
        icon_level=lambda _n: icons,
        minimap=lambda _k, _s: minimap,
        class_names=names,
        model=_source_model(config, model),
        icon_px=d.icon_px,
        store=None,
        index={"images": len(paths), "items": n_items, "method": d.method},
        fingerprint=fingerprint(
            {
                "items": [(it.path, it.view) for it in codes.items],
                "params": d.model_dump(),
                "model": [model.name, model.weights_sha256],
                "grid": [i.tolist(), j.tolist()],
            }
        ),
    )


def run(
    config: Config,
    device: torch.device,
    *,
    model: LoadedModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetMapResult:
    """Build the dataset map of ``data.source`` and export it into ``data.atlas`` (see the module docstring)."""
    from stages.reduce.stage import layout_in_memory
    from stages.tiles.export import export_atlas

    t0 = time.perf_counter()
    d = config.dataset_map
    paths, model, codes = _dataset_codes(config, device, model, progress)
    n_items = len(codes.items)
    layout = layout_in_memory(codes.codes, layout_config(config, n_items)).layout
    n = grid_side(n_items, d.grid_slack)
    i, j = snap_to_grid(layout, n)
    atlas = _atlas_source(config, model, paths, codes, layout, (n, i, j))
    tiles = config.tiles.model_copy(update={"examples": 0, "density_scaling": False})
    result = export_atlas(atlas, config.data.atlas, tiles)
    seconds = time.perf_counter() - t0
    log.info(
        "dataset map: %d items of %d photos on a %dx%d grid, exported to %s in %.1f s",
        n_items,
        len(paths),
        n,
        n,
        result.atlas_dir,
        seconds,
    )
    return DatasetMapResult(
        images=len(paths) - len(codes.skipped),
        items=n_items,
        grid=n,
        export=result.atlas_dir,
        skipped=codes.skipped,
        seconds=seconds,
    )
