"""``atlas explain IMAGE``: one photo seen through the atlas, and through every method the field uses.

The image is resized to the model's input (``model.image_size``, no crop, as collect's whole-image
view and the reference do) and run to the atlas layer (:func:`stages.featurevis.layer_forward`).
Its ``[H*W, C]`` activations are then shown in the atlas's terms (:mod:`stages.explain.groups`):

- the semantic dictionary: each position as the icon of its nearest cell (cosine) at grid level
  ``explain.level``, with the icons the render stage made (``<store>.icons.zarr``);
- ``explain.groups`` NMF groups of the positions (Building Blocks, Olah et al. 2018): where each
  is, its channel direction rendered with the atlas's own engine and objective
  (:func:`stages.render.stage.render_batch`, ``explain.steps`` steps at ``explain.size`` px), its
  nearest atlas cell, and how much it adds to each explained class's logit
  (:func:`stages.explain.groups.group_attribution`);
- the attribution methods of :mod:`stages.explain.attribution` for the top ``explain.top_classes``
  predictions and the classes named in ``explain.classes``;
- the channel view (:mod:`stages.explain.channels`): the strongest channels, each with its
  activation map, feature visualization and top dataset patches from the store.

Writes ``explain.out`` (the dictionary + groups PNG) and, next to it, ``<stem>_attribution.png``
(every method), ``<stem>_<method>.png`` (one per method), ``<stem>_blocks.png``,
``<stem>_channels.png`` and ``<stem>_dictionary.png``; with ``explain.page`` also the HTML page
``<data.atlas>/explain/<slug>/index.html`` (:mod:`stages.explain.page`), listed in the viewer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from stages.classes.select import resolve_class
from stages.config import Config
from stages.context import StageContext
from stages.explain import attribution as A
from stages.explain import channels as channel_view
from stages.explain import layers as layers_view
from stages.explain import page as html_page
from stages.explain import plots
from stages.explain.cam import cam_layer
from stages.explain.figure import PALETTE, ExplainPanels, compose, dictionary_panel
from stages.explain.groups import Groups, group_attribution, group_strength, nearest_cells, nmf_groups
from stages.explain.methods import MethodMaps, MethodSettings, grad_cam_layer, method_maps
from stages.featurevis import layer_forward
from stages.images.decoding import decode_rgb
from stages.model.registry import LoadedModel, load_model
from stages.render.stage import render_batch
from stages.sections import ExplainSection
from store import derived
from store.errors import AtlasError
from store.icons import IconStore
from store.view import RowStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainResult:
    out: Path
    level: int
    grid: tuple[int, int]
    cell: NDArray[np.int64]  # [H*W] nearest cell per position (-1: zero activation)
    cosine: NDArray[np.float32]  # [H*W]
    groups: Groups
    group_labels: list[str]
    seconds: float
    classes: list[int] = field(default_factory=list)  # explained classes (top-k, then asked)
    probabilities: list[float] = field(default_factory=list)
    group_cells: NDArray[np.int64] | None = None  # [K] nearest cell of each group
    group_contributions: NDArray[np.float32] | None = None  # [K, classes]
    maps: MethodMaps | None = None
    channels: list[int] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    page: Path | None = None
    layers: layers_view.LayersResult | None = None  # explain.layers: the evolving-understanding view


def load_photo(path: str | Path, config: Config | ExplainSection) -> Image.Image:
    """The image as RGB at the model's input size; a one-line error when it cannot be read."""
    decoded = decode_rgb(path, config.collect.max_pixels)
    if decoded.image is None:  # not ``decoded.ok``: this spelling lets the type checker see the image below
        raise AtlasError(
            f"{path}: cannot read the image ({decoded.reason}{': ' + decoded.detail if decoded.detail else ''})"
        )
    size = config.model.image_size
    return decoded.image.resize((size, size), Image.Resampling.BILINEAR)


def layer_activations(model: LoadedModel, photo: Image.Image, device: torch.device) -> NDArray[np.float32]:
    """``[H, W, C]`` activations of the photo at the model's layer."""
    x = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
    with torch.no_grad(), layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        acts = forward(x)[model.layer][0].float()
    return acts.permute(1, 2, 0).cpu().numpy()


def level_icons(store: RowStore, level: int) -> tuple[derived.CellLevel, NDArray[np.uint8]]:
    """The level's cells and their icons; refuse a level whose icons are not all rendered."""
    cells = derived.read_level(store, level, with_attribution=False)
    icons = IconStore.open(store.derived_path("icons"))
    if level not in icons.levels or not icons.complete(level):
        done = ", ".join(str(n) for n in icons.levels if icons.complete(n)) or "none"
        raise AtlasError(
            f"explain.level {level}: its icons are not completely rendered (complete levels: {done}); "
            f"run `atlas render --levels '[{level}]'` or pass --level with a complete one"
        )
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


def render_groups(
    model: LoadedModel,
    store: RowStore,
    components: NDArray[np.float32],
    config: ExplainSection,
    device: torch.device,
) -> NDArray[np.uint8]:
    """Each NMF direction rendered like an atlas cell (same objective, whitening and engine)."""
    e = config.explain
    r = config.render.model_copy(update={"size": e.size, "steps": e.steps, "attempts": 1})
    whitening = torch.as_tensor(derived.read_whitening(store).matrix, dtype=torch.float32) if r.whiten else None
    with layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        images, _ = render_batch(
            forward, model.layer, torch.as_tensor(components), whitening, r, device, seeds=[e.seed], cap=len(components)
        )
    return images


def model_input(photo: Image.Image, device: torch.device) -> torch.Tensor:
    """``[3, H, W]`` float in [0, 1] on ``device``."""
    return torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1).to(device)


def explained_classes(logits: torch.Tensor, names: list[str], top: int, asked: list[str | int]) -> list[int]:
    """The top ``top`` predictions, then each class of ``asked`` not among them (names or indices)."""
    chosen = logits.topk(min(top, logits.shape[0])).indices.tolist()
    for name in asked:
        index = resolve_class(name, names, "explain.classes")
        if index not in chosen:
            chosen.append(index)
    return chosen


def layer_logit_gradients(model: LoadedModel, x: torch.Tensor, classes: list[int]) -> NDArray[np.float32]:
    """``[Q, H*W, C]``: d logit_q / d activation at every position of the atlas layer.

    Through the registry's head (``head(activation, *cuts)``): the residual inputs that reach around
    the layer are held constant, the same partial derivative collect's attribution takes.
    """
    with torch.no_grad():
        act, *cuts = model.trunk(model.normalize(x[None]))
    q = len(classes)
    a = act.detach().repeat(q, 1, 1, 1).requires_grad_(True)
    cuts_q = [c.detach().repeat(q, *([1] * (c.ndim - 1))) for c in cuts]
    target = torch.as_tensor(classes, dtype=torch.long, device=a.device)
    with torch.enable_grad():
        logits = model.head(a, *cuts_q)
        (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), a)
    g = grad.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    return g.reshape(q, -1, g.shape[-1])


def figure_paths(target: Path, methods: list[str]) -> dict[str, Path]:
    """Where each figure goes: ``explain.out`` and ``<stem>_<name>.png`` beside it."""
    stem = target.with_suffix("")
    paths = {
        "dictionary_groups": target,
        "attribution": Path(f"{stem}_attribution.png"),
        "blocks": Path(f"{stem}_blocks.png"),
        "channels": Path(f"{stem}_channels.png"),
        "dictionary": Path(f"{stem}_dictionary.png"),
    }
    paths.update({f"method:{m}": Path(f"{stem}_{m}.png") for m in methods})
    return paths


def _cell_label(cells: derived.CellLevel, names: list[list[str]], cell: int, cosine: float) -> str:
    if cell < 0:
        return "no cell"
    top = f", '{names[cell][0]}'" if names[cell] else ""
    return f"cell {cell} ({int(cells.i[cell])}, {int(cells.j[cell])}), cos {cosine:.2f}{top}"


@dataclass
class _Seen:
    """The photo at the atlas layer: activations, predictions, nearest cells, NMF groups, method maps."""

    acts: NDArray[np.float32]  # [H, W, C]
    probs: torch.Tensor
    classes: list[int]
    cell: NDArray[np.int64]
    cosine: NDArray[np.float32]
    groups: Groups
    labels: list[str]
    group_cell: NDArray[np.int64]
    group_cos: NDArray[np.float32]
    contributions: NDArray[np.float32]
    rendered: NDArray[np.uint8]
    maps: MethodMaps
    notes: dict[str, str]


def _check_store_layer(store: RowStore, model: LoadedModel) -> None:
    stored = store.model.layer
    if stored and stored != model.layer:
        raise AtlasError(
            f"store {store.path} maps layer {stored!r} but model.layer is {model.layer!r}; use the store's layer"
        )


def _see(
    config: ExplainSection,
    photo: Image.Image,
    store: RowStore,
    model: LoadedModel,
    cells: derived.CellLevel,
    device: torch.device,
) -> _Seen:
    """Everything explain computes about the photo before drawing it."""
    e = config.explain
    acts = layer_activations(model, photo, device)
    h, w, c = acts.shape
    flat = acts.reshape(h * w, c)
    if e.groups > min(h * w, c):
        raise AtlasError(
            f"explain.groups {e.groups}: the layer has only {h * w} positions; choose at most {min(h * w, c)}"
        )
    x = model_input(photo, device)
    net = A.Net(model.module, model.normalize)
    with torch.no_grad():
        logits = net(x[None]).float()[0]
    probs = torch.softmax(logits, dim=0).cpu()
    classes = explained_classes(logits.cpu(), model.class_names, e.top_classes, e.classes)

    cell, cosine = nearest_cells(flat, cells.direction)
    groups = nmf_groups(flat, e.groups, seed=e.seed, max_iter=e.nmf_max_iter)
    if groups.clipped_fraction > 0:
        log.warning(
            "layer %s has negative activations (%.1f%% of the mass); NMF groups explain the clipped, "
            "non-negative part only",
            model.layer,
            100 * groups.clipped_fraction,
        )
    labels = group_labels(groups, cells)
    group_cell, group_cos = nearest_cells(groups.components, cells.direction)
    contributions = group_attribution(groups.weights, groups.components, layer_logit_gradients(model, x, classes))
    rendered = render_groups(model, store, groups.components, config, device)

    cam = cam_layer(model.module)
    settings = MethodSettings(
        batch_size=e.batch_size,
        window=e.occlusion_window,
        stride=e.occlusion_stride,
        baseline=e.occlusion_baseline,
        grad_cam_layer=grad_cam_layer(e.grad_cam_layer, cam, model.layer),
    )
    maps = method_maps(net, x, classes, list(e.methods), settings, cam)
    for method, why in maps.skipped.items():
        log.warning("explain: %s skipped: %s", method, why)
    notes = {"grad_cam": f"at {settings.grad_cam_layer}"}
    if maps.maps.get("cam") is not None and cam.spec is not None:
        notes["cam"] = f"at {cam.spec.layer}"
    return _Seen(
        acts, probs, classes, cell, cosine, groups, labels, group_cell, group_cos, contributions, rendered, maps, notes
    )


def _draw(
    config: ExplainSection,
    photo: Image.Image,
    seen: _Seen,
    model: LoadedModel,
    cells: derived.CellLevel,
    icons: NDArray[np.uint8],
    target: Path,
) -> dict[str, Path]:
    """The dictionary + groups PNG (``target``) and, next to it, the dictionary, attribution and blocks figures."""
    e = config.explain
    h, w, _ = seen.acts.shape
    paths = figure_paths(target, list(e.methods))
    panels = ExplainPanels(
        photo=photo.resize((e.image_px, e.image_px), Image.Resampling.BICUBIC),
        grid=(h, w),
        cell=seen.cell,
        icons=icons,
        level=e.level,
        assignment=seen.groups.assignment,
        strength=group_strength(seen.groups.weights, seen.groups.assignment),
        group_images=seen.rendered,
        group_labels=seen.labels,
    )
    compose(panels, e.icon_px).save(target)
    dictionary_panel(seen.cell, icons, (h, w), e.icon_px).save(paths["dictionary"])
    figures = {"dictionary_groups": target, "dictionary": paths["dictionary"]}

    photo_np = np.asarray(photo)
    columns = [plots.ClassColumn(k, model.class_names[k], float(seen.probs[k])) for k in seen.classes]
    np_maps = {m: v.numpy() for m, v in seen.maps.maps.items()}
    np_pictures = {m: v.numpy() for m, v in seen.maps.pictures.items()}
    skipped = seen.maps.skipped
    figures["attribution"] = plots.attribution_figure(
        photo_np, columns, np_maps, np_pictures, list(e.methods), skipped, paths["attribution"], seen.notes
    )
    for m in e.methods:
        figures[f"method:{m}"] = plots.attribution_figure(
            photo_np, columns, np_maps, np_pictures, [m], skipped, paths[f"method:{m}"], seen.notes
        )
    names = cells.top_names()
    groups, group_cell = seen.groups, seen.group_cell
    rows = [
        plots.BlockRow(
            extent=groups.weights[:, k].reshape(h, w),
            rendered=seen.rendered[k],
            cell_icon=icons[group_cell[k]] if group_cell[k] >= 0 else np.full_like(icons[0], 255),
            cell_label=_cell_label(cells, names, int(group_cell[k]), float(seen.group_cos[k])),
            share=float((groups.assignment == k).mean()),
            contributions=seen.contributions[k],
        )
        for k in range(len(groups.components))
    ]
    figures["blocks"] = plots.blocks_figure(photo_np, rows, columns, e.level, paths["blocks"])
    return figures


def _draw_channels(
    config: ExplainSection,
    photo: Image.Image,
    acts: NDArray[np.float32],
    store: RowStore,
    model: LoadedModel,
    device: torch.device,
    path: Path,
) -> list[int]:
    """The channel view (``explain.channels`` strongest channels) written to ``path``; those channels."""
    e = config.explain
    strongest: list[int] = channel_view.strongest_channels(acts, e.channels).tolist()
    chan_images = channel_view.render_channels(
        model.module, model.normalize, model.layer, strongest, e.size, e.steps, config.render.lr, e.seed, device
    )
    patches: list[list[np.ndarray]] = [[] for _ in strongest]
    if e.channel_patches:
        top_rows = channel_view.top_rows_per_channel(store, np.asarray(strongest), e.channel_patches)
        patches = channel_view.channel_patches(store, top_rows, e.patch_px, config.tiles.example_field)
    chan_rows = [
        plots.ChannelRow(
            channel=ch,
            mean=float(acts[:, :, ch].mean()),
            activation=acts[:, :, ch],
            rendered=chan_images[k],
            patches=patches[k],
        )
        for k, ch in enumerate(strongest)
    ]
    plots.channels_figure(np.asarray(photo), chan_rows, model.layer, e.channel_patches, path)
    return strongest


def run(config: ExplainSection, ctx: StageContext) -> ExplainResult:
    """Explain ``config.image`` with ``ctx.store``'s atlas; write the figures (``explain.out``) and,
    with ``explain.page``, the HTML page inside ``data.atlas``. ``ctx.device`` else ``explain.device``."""
    t0 = time.perf_counter()
    e, image, store = config.explain, config.image, ctx.require_store("explain")
    device = ctx.device_for(e.device)
    photo = load_photo(image, config)
    cells, icons = level_icons(store, e.level)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    _check_store_layer(store, model)
    checked = layers_view.check_layers(config, model) if e.layers is not None else None  # bad names fail first
    seen = _see(config, photo, store, model, cells, device)
    h, w, _ = seen.acts.shape
    target = Path(e.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    figures = _draw(config, photo, seen, model, cells, icons, target)
    strongest: list[int] = []
    if e.channels:
        path = figure_paths(target, list(e.methods))["channels"]
        strongest = _draw_channels(config, photo, seen.acts, store, model, device, path)
        figures["channels"] = path
    evolving = None
    if checked is not None:
        # the atlas layer is drawn with its nearest cells' icons, like the semantic dictionary
        atlas = (model.layer, cells.direction, icons, e.level)
        evolving = layers_view.run(
            config, photo, model, device, target, image_name=Path(image).name, atlas=atlas, checked=checked
        )
        figures.update(evolving.figures)
    page = None
    if e.page:
        page = write_explain_page(config, image, store, model, cells, seen, figures, (h, w), e.icon_px)
    seconds = time.perf_counter() - t0
    cosine, n_methods = float(np.median(seen.cosine)), len(seen.maps.maps)
    log.info(
        "explained %s: %d x %d positions, median cosine to the nearest cell %.3f, %d groups, %d methods; %s in %.1f s",
        *(image, h, w, cosine, e.groups, n_methods, target, seconds),
    )
    return ExplainResult(
        out=target,
        level=e.level,
        grid=(h, w),
        cell=seen.cell,
        cosine=seen.cosine,
        groups=seen.groups,
        group_labels=seen.labels,
        seconds=seconds,
        classes=seen.classes,
        probabilities=[float(seen.probs[k]) for k in seen.classes],
        group_cells=seen.group_cell,
        group_contributions=seen.contributions,
        maps=seen.maps,
        channels=strongest,
        figures=figures,
        page=page,
        layers=evolving,
    )


_CAPTIONS = {
    "attribution": "Attribution methods for the top predictions (rows: methods; columns: classes).",
    "blocks": "Building blocks: each NMF group's extent, rendered direction, nearest atlas cell and "
    "contribution to each class logit.",
    "channels": "Channel view: the strongest channels, their activation, feature visualization and top "
    "dataset patches.",
    "dictionary_groups": "The photo, its semantic dictionary, the NMF groups and their rendered directions.",
    "layers": "How understanding evolves across layers (Olah et al. 2018): each layer's positions (pooled to at "
    "most explain.layer_cells per side) as their rendered activation vectors, icon side proportional "
    "to the activation norm; the atlas layer shows its nearest cells' icons.",
    "filters": "The first convolution's filters (BatchNorm folded in), each normalised on its own.",
    "activation_maps": "Activation maps of the strongest channels (largest mean) at explain.maps_layer.",
}


def _page_content(
    image: str | Path,
    model: LoadedModel,
    cells: derived.CellLevel,
    seen: _Seen,
    figures: dict[str, Path],
    grid: tuple[int, int],
) -> html_page.PageContent:
    """What the explain page shows: predictions, the dictionary, the groups and the figures with captions."""
    names, labels, classes, probs, maps = cells.top_names(), seen.labels, seen.classes, seen.probs, seen.maps
    cell, cosine, group_cell, group_cos = seen.cell, seen.cosine, seen.group_cell, seen.group_cos
    return html_page.PageContent(
        image_name=Path(image).name,
        model=model.name,
        layer=model.layer,
        level=cells.n,
        grid=grid,
        predictions=[(model.class_names[k], float(probs[k])) for k in classes],
        cell=cell,
        cosine=cosine,
        cell_names=[n[0] if n else "" for n in names],
        cell_ij=list(zip(cells.i.tolist(), cells.j.tolist())),
        groups=[
            html_page.GroupEntry(labels[k], int(group_cell[k]), float(group_cos[k]), PALETTE[k % len(PALETTE)])
            for k in range(len(labels))
        ],
        figures={
            _CAPTIONS.get(k, k.replace("method:", "Method: ")): v
            for k, v in figures.items()
            if k not in ("dictionary",) and not k.startswith("method:")
        },
        dictionary_png=figures["dictionary"],
        notes=[f"{m} not drawn: {why}" for m, why in maps.skipped.items()],
    )


def write_explain_page(
    config: ExplainSection,
    image: str | Path,
    store: RowStore,
    model: LoadedModel,
    cells: derived.CellLevel,
    seen: _Seen,
    figures: dict[str, Path],
    grid: tuple[int, int],
    icon_px: int,
) -> Path | None:
    """The HTML page in ``<data.atlas>/explain/<slug>/`` and its entry in ``atlases.json``; ``None``
    (with a warning) when ``data.atlas`` holds no exported atlas to link to."""
    from stages.tiles.export import update_index
    from stages.tiles.source import page_entry

    atlas = Path(config.data.atlas)
    if not (atlas / "atlases.json").exists():
        log.warning("explain.page: %s holds no exported atlas (run `atlas tiles`); no HTML page written", atlas)
        return None
    slug = html_page.page_slug(image)
    folder_id = f"{html_page.EXPLAIN_FOLDER}/{slug}"
    content = _page_content(image, model, cells, seen, figures, grid)
    page = html_page.write_page(atlas / folder_id, content, mosaic_px=grid[1] * icon_px)
    entry = page_entry(
        folder_id,
        "explain",
        f"explained: {Path(image).name}",
        icon_px=icon_px,
        model=store.model.entry(),
        index={"page": f"{folder_id}/index.html"},
    )
    update_index(atlas, entry)
    log.info("explain page: %s", page)
    return page


def run_layers(config: ExplainSection, ctx: StageContext) -> layers_view.LayersResult:
    """``atlas explain IMAGE --layers ...`` when ``data.store`` holds no store: the layer figures only."""
    device = ctx.device_for(config.explain.device)
    photo = load_photo(config.image, config)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    return layers_view.run(config, photo, model, device, config.explain.out, image_name=Path(config.image).name)
