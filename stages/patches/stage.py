"""``atlas patches [A B]``: patches found on a comparison atlas, pasted on photos of A (Carter et al. 2019).

Per direction (photos of A, patches toward B), on the comparison atlas of A and B:

1. The photos of A (:mod:`stages.patches.photos`) as the model's inputs.
2. Candidates (:mod:`stages.patches.candidates`): the cells farthest toward B, each with its
   dataset-example crops and its icon; controls: uniform-noise patches and crops of random cells
   not on B's side.
3. The protocol (:mod:`stages.patches.protocol`) on the model, batched: keep the photos classified A,
   rank the candidates on photos kept apart, measure the best ``keep`` and the controls on the rest.
4. ``patches.out`` (JSON, every direction), a figure per direction beside it, and with
   ``patches.page`` an HTML page per direction in the atlas folder, listed in ``atlases.json``
   (kind ``experiment``, ``atlas``: the comparison atlas it was read from).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from stages.classes.select import resolve_class
from stages.config import PatchesConfig
from stages.context import StageContext
from stages.model.registry import LoadedModel, load_model
from stages.patches import candidates as cands
from stages.patches.geometry import CORNERS, Placement
from stages.patches.photos import folder_photos, load_photos, same_file, store_photos
from stages.patches.protocol import (
    Patch,
    ProtocolResult,
    Rate,
    pooled,
    pooled_pb,
    run_protocol,
    uniform_noise,
    works,
)
from stages.sections import PatchesSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError

log = logging.getLogger(__name__)

PUBLISHED = (
    "Carter et al. 2019 (InceptionV1, ~800 correctly classified ImageNet training photos per class, "
    "10 patches per pair): dynamic 57.5% overall (snorkel -> scuba diver 85.0%, frying pan -> wok 44.9%, "
    "grey whale -> great white shark 40.5%), static 37.2%; noise patch 11-18% dynamic, ~4% static"
)


@dataclass
class Direction:
    a: tuple[int, str]
    b: tuple[int, str]
    atlas_id: str
    photo_paths: list[str]
    photos_from: str
    result: ProtocolResult
    figure: Path | None = None
    page: Path | None = None
    seconds: float = 0.0


@dataclass
class PatchesResult:
    directions: list[Direction]
    out: Path
    seconds: float


def model_classifier(model: LoadedModel, device: torch.device) -> Callable[[NDArray[np.float32]], NDArray[np.float64]]:
    """``[B, S, S, 3]`` in [0, 1] -> softmax probabilities ``[B, classes]`` of the whole classifier."""
    module = model.module.eval()

    def classify(images: NDArray[np.float32]) -> NDArray[np.float64]:
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))).to(device)
        with torch.no_grad():
            logits = module(model.normalize(x).contiguous(memory_format=torch.channels_last)).float()
        return torch.softmax(logits, dim=1).double().cpu().numpy()

    return classify


def directions(config: PatchesSection, pair: list[str] | None, class_names: list[str]) -> list[tuple[int, int]]:
    """``[(A, B)]``: the pair given, else both directions of every ``compare.pairs`` pair."""
    if pair:
        if len(pair) != 2:
            raise AtlasError(
                f"name two classes, A (the photos) and B (the patches' target), e.g. `atlas patches lemon "
                f"orange`; got {len(pair)}: {' '.join(pair)}"
            )
        a, b = (resolve_class(p, class_names, "class") for p in pair)
        if a == b:
            raise AtlasError(f"A and B are the same class ({class_names[a]}); name two classes")
        return [(a, b)]
    if not config.compare.pairs:
        raise AtlasError("compare.pairs is empty; name the two classes, e.g. `atlas patches lemon orange`")
    out = []
    for x, y in config.compare.pairs:
        a, b = resolve_class(x, class_names, "compare.pairs"), resolve_class(y, class_names, "compare.pairs")
        out += [(a, b), (b, a)]
    if config.patches.photos is not None and len(out) > 1:
        raise AtlasError(
            f"--photos {config.patches.photos} holds photos of one class; name the pair, e.g. "
            f"`atlas patches {class_names[out[0][0]]} {class_names[out[0][1]]} --photos DIR`"
        )
    return out


def controls_of(comp: cands.Comparison, config: PatchesSection) -> list[Patch]:
    """``patches.controls`` uniform-noise patches and random-cell crops (a few spare)."""
    cfg = config.patches
    noise = [
        Patch(f"uniform noise {k + 1}", "noise", uniform_noise(cfg.crop_px, cfg.seed + 1000 + k), resample="nearest")
        for k in range(cfg.controls)
    ]
    return noise + cands.random_cell_controls(comp, cfg.controls, cfg.crop_px, cfg.field, cfg.seed)


def _photo_lists(config: PatchesSection, store: AtlasStore, todo: list[tuple[int, int]]) -> list[tuple[list[str], str]]:
    """Each direction's photos of A (``patches.photos``, else the store's) and where they came from."""
    cfg, names = config.patches, store.class_names
    photo_lists = []
    for a, _ in todo:
        if cfg.photos is not None:
            photo_lists.append((folder_photos(cfg.photos), f"--photos {cfg.photos}"))
        else:
            found = store_photos(store, a)
            if not found:
                raise AtlasError(
                    f"no photo of the store {store.path} is labelled or predicted {names[a]!r}; "
                    f"pass a folder of photos of it with --photos DIR"
                )
            photo_lists.append((found, f"the store's photos labelled or predicted {names[a]!r}"))
    return photo_lists


def _measure(
    cfg: PatchesConfig,
    classify: Callable,
    arrays: Any,
    ab: tuple[int, int],
    candidates: list[Patch],
    controls: list[Patch],
    photo_ids: list[Any],
    progress: Callable[[int], None] | None,
) -> Any:
    """The protocol (rank, then measure every kept candidate and control at every placement) for A -> B."""
    return run_protocol(
        classify,
        arrays,
        ab[0],
        ab[1],
        candidates,
        controls,
        photo_ids=photo_ids,
        rank_count=cfg.rank_photos,
        keep=cfg.keep,
        sizes=cfg.sizes,
        static=Placement(cfg.static_corner, cfg.static_size),
        controls_per_kind=cfg.controls,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=progress,
    )


def _direction(
    config: PatchesSection,
    store: AtlasStore,
    ab: tuple[int, int],
    comp: cands.Comparison,
    photos: tuple[list[str], str],
    model: LoadedModel,
    classify: Callable,
    ctx: StageContext,
) -> Direction:
    """One direction A -> B: candidates and controls measured on the photos, its figure and page."""
    cfg, names, (a, b), (paths, origin) = config.patches, store.class_names, ab, photos
    t1 = time.perf_counter()
    paths, arrays = load_photos(paths, model.image_size)
    if len(arrays) == 0:
        raise AtlasError(f"{origin}: none of the photos can be opened")
    candidates = cands.candidates(comp, cfg.cells, cfg.examples, cfg.crop_px, cfg.field)
    if not candidates:
        raise AtlasError(f"comparison atlas {comp.atlas_id}: no cell lies on {names[b]!r}'s side")
    controls = controls_of(comp, config)
    n_where = len(set(cfg.sizes) | {cfg.static_size}) * len(CORNERS)
    if ctx.on_atlas is not None:
        ctx.on_atlas(
            f"{names[a]} -> {names[b]}",
            len(arrays)
            + len(candidates) * min(cfg.rank_photos, len(arrays)) * 4
            + (min(cfg.keep, len(candidates)) + 2 * cfg.controls) * len(arrays) * n_where,
        )
    try:
        result = _measure(cfg, classify, arrays, ab, candidates, controls, [same_file(p) for p in paths], ctx.progress)
    except ValueError as exc:
        raise AtlasError(f"{origin}: {exc} ({names[a]!r})") from None
    d = Direction(
        a=(a, names[a]),
        b=(b, names[b]),
        atlas_id=comp.atlas_id,
        photo_paths=paths,
        photos_from=origin,
        result=result,
        seconds=time.perf_counter() - t1,
    )
    d.figure = figure_path(Path(cfg.out), d)
    from stages.patches.figure import draw_figure

    draw_figure(d, arrays, comp, d.figure)
    if cfg.page:
        from stages.patches.page import write_page

        d.page = write_page(
            config, store, d, comp, slug=direction_slug(d), report=direction_report(d), published=PUBLISHED
        )
    return d


def run(config: PatchesSection, ctx: StageContext) -> PatchesResult:
    """Every direction of ``config.pair`` (else of ``compare.pairs``) on ``ctx.store``'s comparison atlases.

    ``ctx.on_atlas("A -> B", images)`` once per direction when its image count is known, ``ctx.progress(n)``
    as images are classified; ``ctx.device`` else ``patches.device``.
    """
    t0 = time.perf_counter()
    cfg, store = config.patches, ctx.require_collect_store("patches")
    device = ctx.device_for(cfg.device)
    names = store.class_names
    todo = directions(config, config.pair, names)
    comparisons = [cands.open_comparison(store, a, b, config.compare.pairs) for a, b in todo]  # all checked first
    photo_lists = _photo_lists(config, store, todo)
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    if model.class_names != names:
        raise AtlasError(f"model {model.name} has other classes than the store {store.path}; use the store's model")
    classify = model_classifier(model, device)
    out = [
        _direction(config, store, ab, comp, photos, model, classify, ctx)
        for ab, comp, photos in zip(todo, comparisons, photo_lists)
    ]
    result_all = PatchesResult(directions=out, out=Path(cfg.out), seconds=time.perf_counter() - t0)
    write_report(result_all, config)
    return result_all


def direction_slug(d: Direction, names: list[str] | None = None) -> str:
    return f"{_slug(d.a)}-to-{_slug(d.b)}"


def _slug(c: tuple[int, str]) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "_", c[1].lower()).strip("_") or str(c[0])


def figure_path(out: Path, d: Direction) -> Path:
    return out.with_name(f"{out.stem}_{direction_slug(d)}.png")


# ------------------------------------------------------------------------------------- report
def patch_entry(o: Any, noise_rate: float | None) -> dict[str, Any]:
    p = o.patch
    s = o.summary()
    entry = {
        "name": p.name,
        "kind": p.kind,
        "cell": p.cell,
        **{k: v for k, v in p.meta.items() if k != "row"},
        "rank_score": o.rank_score,
        **s,
    }
    entry["works"] = (
        works(Rate(s["dynamic"]["k"], s["dynamic"]["n"]), noise_rate) if p.kind in ("dataset", "icon") else None
    )
    return entry


def control_summary(outcomes: list[Any]) -> dict[str, Any] | None:
    if not outcomes:
        return None
    return {
        "patches": len(outcomes),
        "dynamic": pooled(outcomes, "dynamic").as_dict(),
        "static": pooled(outcomes, "static").as_dict(),
        "p_b_after_dynamic": pooled_pb(outcomes, "dynamic"),
        "p_b_after_static": pooled_pb(outcomes, "static"),
    }


def direction_report(d: Direction) -> dict[str, Any]:
    r = d.result
    noise = r.noise_rate()
    patches = [patch_entry(o, noise) for o in r.outcomes]
    test_pb = r.clean[r.test, r.b]
    return {
        "a": {"index": d.a[0], "name": d.a[1]},
        "b": {"index": d.b[0], "name": d.b[1]},
        "comparison_atlas": d.atlas_id,
        "photos": {
            "from": d.photos_from,
            "given": r.photos,
            "classified_a": len(r.kept),
            "rank": [d.photo_paths[i] for i in r.rank],
            "test": [d.photo_paths[i] for i in r.test],
            "dropped": [d.photo_paths[i] for i in range(r.photos) if i not in set(r.kept.tolist())],
        },
        "protocol": {
            "sizes": sorted({p.r for p in r.where}),
            "corners": list(CORNERS),
            "static": {"corner": r.static.corner, "r": r.static.r},
            "rank_proxy": "mean over the ranking photos and the 4 corners at the static size of "
            "(logit_B - logit_A) patched minus clean",
            "works": "the lower end of the patch's dynamic 95% Wilson interval is above the noise control's "
            "pooled dynamic rate",
            "pooled": "overall and control rates count patch x photo pairs (not independent)",
        },
        "overall": {
            "patches": len(r.outcomes),
            "dynamic": pooled(r.outcomes, "dynamic").as_dict(),
            "static": pooled(r.outcomes, "static").as_dict(),
            "p_b_before": float(test_pb.mean()) if len(test_pb) else None,
            "p_b_after_dynamic": pooled_pb(r.outcomes, "dynamic"),
            "p_b_after_static": pooled_pb(r.outcomes, "static"),
            "works": sum(bool(p["works"]) for p in patches),
        },
        "patches": patches,
        "controls": {
            "noise": control_summary([o for o in r.controls if o.patch.kind == "noise"]),
            "random_cell": control_summary([o for o in r.controls if o.patch.kind == "random_cell"]),
            "each": [patch_entry(o, noise) for o in r.controls],
        },
        "candidates": [
            {
                "name": c.name,
                "kind": c.kind,
                "cell": c.cell,
                "toward_b": c.meta.get("toward_b"),
                "rank_score": None if np.isnan(r.scores[k]) else float(r.scores[k]),
                "selected": k in r.selected,
            }
            for k, c in enumerate(r.candidates)
        ],
        "figure": str(d.figure) if d.figure else None,
        "page": str(d.page) if d.page else None,
        "seconds": round(d.seconds, 1),
    }


def write_report(result: PatchesResult, config: PatchesSection) -> None:
    data = {
        "experiment": "human-designed adversarial patches found on a class-comparison atlas (Carter et al. 2019)",
        "model": config.model.name,
        "layer": config.model.layer,
        "published": PUBLISHED,
        "directions": [direction_report(d) for d in result.directions],
        "seconds": round(result.seconds, 1),
    }
    path = result.out
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
