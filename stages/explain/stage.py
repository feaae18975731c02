"""``atlas explain IMAGE``: one photo seen through the atlas, as one PNG.

The image is resized to the model's input (``model.image_size``, no crop, as collect's whole-image
view and the reference do) and run to the atlas layer (:func:`stages.featurevis.layer_forward`).
Its ``[H*W, C]`` activations are then shown two ways (:mod:`stages.explain.groups`):

- the semantic dictionary: each position as the icon of its nearest cell (cosine) at grid level
  ``explain.level``, with the icons the render stage made (``<store>.icons.zarr``);
- ``explain.groups`` NMF groups of the positions, as a colour overlay on the photo, and each
  group's channel direction rendered with the atlas's own engine and objective
  (:func:`stages.render.stage.render_batch`: whitened with the store's ``S`` when ``render.whiten``,
  ``explain.steps`` steps at ``explain.size`` px: tiny settings, so this runs in seconds on a CPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from stages.config import Config, RenderConfig
from stages.images.decoding import decode_rgb
from store.errors import AtlasError
from stages.model.registry import LoadedModel, load_model
from stages.explain.figure import ExplainPanels, compose
from stages.explain.groups import Groups, group_strength, nearest_cells, nmf_groups
from stages.featurevis import layer_forward
from stages.render.stage import render_batch
from store import derived
from store.atlas_store import AtlasStore
from store.icons import IconStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainResult:
    out: Path
    level: int
    grid: tuple[int, int]
    cell: NDArray[np.int64]         # [H*W] nearest cell per position (-1: zero activation)
    cosine: NDArray[np.float32]     # [H*W]
    groups: Groups
    group_labels: list[str]
    seconds: float


def load_photo(path: str | Path, config: Config) -> Image.Image:
    """The image as RGB at the model's input size; a one-line error when it cannot be read."""
    decoded = decode_rgb(path, config.collect.max_pixels)
    if not decoded.ok:
        raise AtlasError(f"{path}: cannot read the image ({decoded.reason}{': ' + decoded.detail if decoded.detail else ''})")
    size = config.model.image_size
    return decoded.image.resize((size, size), Image.Resampling.BILINEAR)


def layer_activations(model: LoadedModel, photo: Image.Image, device: torch.device) -> NDArray[np.float32]:
    """``[H, W, C]`` activations of the photo at the model's layer."""
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
    with torch.no_grad(), layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        acts = forward(x)[model.layer][0].float()
    return acts.permute(1, 2, 0).cpu().numpy()


def level_icons(store: AtlasStore, level: int) -> tuple[derived.CellLevel, NDArray[np.uint8]]:
    """The level's cells and their icons; refuse a level whose icons are not all rendered."""
    cells = derived.read_level(store, level, with_attribution=False)
    icons = IconStore.open(store.derived_path("icons"))
    if level not in icons.levels or not icons.complete(level):
        done = ", ".join(str(n) for n in icons.levels if icons.complete(n)) or "none"
        raise AtlasError(f"explain.level {level}: its icons are not completely rendered (complete levels: {done}); "
                         f"run `atlas render --levels '[{level}]'` or pass --level with a complete one")
    return cells, icons.read_level(level).icons


def group_labels(groups: Groups, cells: derived.CellLevel) -> list[str]:
    """``group 1: 23%, near 'tabby'``: its share of the positions and the top class of the cell nearest it."""
    nearest, _ = nearest_cells(groups.components, cells.direction)
    names = cells.top_names()
    out = []
    for k in range(len(groups.components)):
        share = float((groups.assignment == k).mean())
        top = names[nearest[k]][0] if nearest[k] >= 0 and names[nearest[k]] else "-"
        out.append(f"group {k + 1}: {share:.0%}, near '{top}'")
    return out


def render_groups(model: LoadedModel, store: AtlasStore, components: NDArray[np.float32], config: Config,
                  device: torch.device) -> NDArray[np.uint8]:
    """Each NMF direction rendered like an atlas cell (same objective, whitening and engine)."""
    e = config.explain
    r = RenderConfig.model_validate({**config.render.model_dump(), "size": e.size, "steps": e.steps, "attempts": 1})
    whitening = torch.as_tensor(derived.read_whitening(store).matrix, dtype=torch.float32) if r.whiten else None
    with layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        images, _ = render_batch(forward, model.layer, torch.as_tensor(components), whitening, r, device,
                                 seeds=[e.seed], cap=len(components))
    return images


def run(config: Config, image: str | Path, store: AtlasStore, device: torch.device, *,
        model: LoadedModel | None = None, out: str | Path | None = None) -> ExplainResult:
    """Explain ``image`` with ``store``'s atlas; write the PNG to ``out`` (default ``explain.out``)."""
    t0 = time.perf_counter()
    e = config.explain
    photo = load_photo(image, config)
    cells, icons = level_icons(store, e.level)
    model = model if model is not None else load_model(config.model, device)
    stored = (store.attrs.get("model") or {}).get("layer")
    if stored and stored != model.layer:
        raise AtlasError(f"store {store.path} maps layer {stored!r} but model.layer is {model.layer!r}; use the store's layer")
    acts = layer_activations(model, photo, device)
    h, w, c = acts.shape
    flat = acts.reshape(h * w, c)
    if e.groups > min(h * w, c):
        raise AtlasError(f"explain.groups {e.groups}: the layer has only {h * w} positions; choose at most {min(h * w, c)}")
    cell, cosine = nearest_cells(flat, cells.direction)
    groups = nmf_groups(flat, e.groups, seed=e.seed, max_iter=e.nmf_max_iter)
    if groups.clipped_fraction > 0:
        log.warning("layer %s has negative activations (%.1f%% of the mass); NMF groups explain the clipped, "
                    "non-negative part only", model.layer, 100 * groups.clipped_fraction)
    labels = group_labels(groups, cells)
    rendered = render_groups(model, store, groups.components, config, device)
    panels = ExplainPanels(
        photo=photo.resize((e.image_px, e.image_px), Image.Resampling.BICUBIC), grid=(h, w), cell=cell, icons=icons,
        level=e.level, assignment=groups.assignment, strength=group_strength(groups.weights, groups.assignment),
        group_images=rendered, group_labels=labels)
    target = Path(out if out is not None else e.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    compose(panels, e.icon_px).save(target)
    seconds = time.perf_counter() - t0
    log.info("explained %s: %d x %d positions, median cosine to the nearest cell %.3f, %d groups; %s in %.1f s",
             image, h, w, float(np.median(cosine)), e.groups, target, seconds)
    return ExplainResult(out=target, level=e.level, grid=(h, w), cell=cell, cosine=cosine, groups=groups,
                         group_labels=labels, seconds=seconds)
