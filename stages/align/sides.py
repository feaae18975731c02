"""The two sides of an aligned atlas: their settings, their collect stores, and the check that they line up.

Each side is an ordinary collect store (``<align.folder>/stores/<model>@<layer>-<hash>.zarr``, shared by every
aligned atlas that uses the same model and layer) collected with ``collect.image_margin`` on: the
image locations are drawn in image coordinates from (seed, input, position) alone and mapped to
the side's own grid, so store row r of both sides is the same location of the same view of the
same photo, whatever the two layers' resolutions. :func:`require_same_inputs` refuses two stores
for which that is not true.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from stages.config import AlignModel, AlignPair, ModelConfig
from stages.sections import AlignSection, CollectSection
from store.errors import AtlasError
from store.view import RowStore

SIDES = ("a", "b")
DEFAULT_WEIGHTS = ("IMAGENET1K_V1", "DEFAULT")
#: sampling keys that decide which inputs and image locations a store's rows are
_INPUT_KEYS = ("views_per_image", "view_scale", "positions_per_image", "seed", "max_pixels", "image_margin")


def slug(text: str) -> str:
    """A file-name-safe form of a model or layer name."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", text.split(":")[-1]).strip("-") or "model"


def side_label(side: AlignModel) -> str:
    """``model@layer`` (a factory path shortened to the factory's name), plus the weights when not the default."""
    label = f"{slug(side.name)}@{side.layer}"
    if side.weights not in DEFAULT_WEIGHTS:
        label += f"@{slug(Path(side.weights).name)}"
    return label


def side_key(side: AlignModel) -> str:
    """Everything that makes a side's store: two sides with the same key share one store (and one model)."""
    return json.dumps([side.name, side.weights, side.layer, side.image_size])


def pair_name(pair: AlignPair) -> str:
    """The aligned atlas's folder name: ``align.pairs[k].name`` or ``<a>--<b>``."""
    name = pair.name or f"{side_label(pair.a)}--{side_label(pair.b)}"
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name) or name.startswith("."):
        raise AtlasError(f"align pair name {name!r} must be a plain folder name (letters, digits, . _ - @)")
    return name


def store_path(config: AlignSection, side: AlignModel) -> Path:
    """Where the side's collect store lives: one per model, weights, layer and input size (a short hash of
    them keeps two factories of the same name, or two weights files, apart)."""
    digest = hashlib.sha256(side_key(side).encode()).hexdigest()[:8]
    return Path(config.align.folder) / "stores" / f"{side_label(side)}-{digest}.zarr"


def side_config(config: AlignSection, side: AlignModel) -> CollectSection:
    """What collects this side: its model, its store, the shared sampling (and the configuration it records)."""
    a = config.align
    collect = config.collect.model_copy(
        update={
            "views_per_image": a.views_per_image,
            "positions_per_image": a.positions_per_image,
            "image_margin": a.image_margin,
        }
    )
    model = ModelConfig(name=side.name, weights=side.weights, layer=side.layer, image_size=side.image_size)
    data = config.data.model_copy(update={"store": str(store_path(config, side))})
    record = None
    if config.record is not None:  # the whole configuration, with this side's sections, as the store's params
        sides = {"data": data, "model": model, "collect": collect}
        record = {k: sides[k].model_dump(mode="json") if k in sides else v for k, v in config.record.items()}
    return CollectSection(data=data, model=model, collect=collect, record=record)


def _inputs(store: RowStore) -> dict[str, Any]:
    sampling = store.sampling
    return {
        "photos": store.dataset.fingerprint,
        "n_images": store.dataset.n_images,
        "image_size": store.model.image_size,
        **{k: getattr(sampling, k) for k in _INPUT_KEYS},
    }


def require_same_inputs(a: RowStore, b: RowStore) -> None:
    """Refuse two stores whose rows are not the same image locations, naming the first difference."""
    for store in (a, b):
        if store.sampling.image_margin is None:
            raise AtlasError(
                f"store {store.path} sampled its layer's own cells, not image locations; collect both "
                "sides with collect.image_margin set (atlas align does)"
            )
    ia, ib = _inputs(a), _inputs(b)
    for key in ia:
        if ia[key] != ib[key]:
            what = "photos (data.source)" if key in ("photos", "n_images") else key
            raise AtlasError(
                f"stores {a.path} and {b.path} have different inputs: {what} {ia[key]!r} vs "
                f"{ib[key]!r}; collect both from the same photos with the same sampling"
            )
    if a.n_rows != b.n_rows:
        raise AtlasError(f"stores {a.path} and {b.path} have {a.n_rows} and {b.n_rows} rows; collect both again")
