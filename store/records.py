"""Typed, frozen views of what the store and its groups record in their zarr attributes.

zarr keeps every group's metadata as untyped JSON; before these records every stage read the
keys it needed for itself (``attrs.get("model") or {}``), each with its own defaults and none
with an error for a malformed value. Here each record is parsed and validated once, when the
store or group is opened (:meth:`store.atlas_store.AtlasStore.open`, :func:`store.derived.read_layout`,
:meth:`store.icons.IconStore.open`, ...), and a missing or malformed key is one
:class:`~store.errors.AtlasError` line naming the group's path and the key. Nothing outside
``store/`` reads ``.attrs`` (``tests/test_layering.py`` holds that).

Only *reading* goes through these records: what is written stays exactly as it was (the JSON
layout on disk is unchanged, so old stores keep opening). Where a value is recorded twice on disk
(``views_per_image`` and ``positions_per_image``: at the top of the collect store, the row
geometry, and again inside ``sampling``, the identity a rerun must match), it is read from one
place only: the top-level geometry, which every store has, synthetic ones included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from store.errors import AtlasError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

#: what a store without the key (made by a test, or before the option existed) was sampled with
DEFAULT_VIEW_SCALE = (1.0, 1.0)
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit, collect.max_pixels' default


class Fields:
    """Typed reads of one JSON record; a missing or malformed value is one line naming ``where`` and the key.

    ``where`` names the group (``store data/store.zarr``), ``prefix`` the record inside it
    (``model.``), so the error reads ``store data/store.zarr: attribute model.layer ...``.
    """

    def __init__(self, raw: object, where: str, prefix: str = "") -> None:
        if not isinstance(raw, Mapping):
            raise AtlasError(
                f"{where}: attribute {prefix.rstrip('.') or '(root)'} is {type(raw).__name__}, expected a JSON object; "
                "the group's zarr.json is damaged: rerun the stage that wrote it (or restore it from a backup)"
            )
        self.raw: Mapping[str, Any] = raw
        self.where = where
        self.prefix = prefix

    def bad(self, key: str, expected: str) -> AtlasError:
        found = self.raw.get(key)
        what = "is missing" if key not in self.raw else f"is {found!r}"
        return AtlasError(
            f"{self.where}: attribute {self.prefix}{key} {what}, expected {expected}; the group's zarr.json is "
            "damaged or from another tool: rerun the stage that wrote it (or restore it from a backup)"
        )

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def sub(self, key: str, default_empty: bool = False) -> Fields:
        """The nested record ``key`` (an empty one when absent and ``default_empty``)."""
        value = self.raw.get(key)
        if value is None and default_empty:
            value = {}
        if not isinstance(value, Mapping):
            raise self.bad(key, "a JSON object")
        return Fields(value, self.where, f"{self.prefix}{key}.")

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def integer(self, key: str) -> int:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.bad(key, "an integer")
        return value

    def number(self, key: str) -> float:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, "a number")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.raw.get(key)
        if not isinstance(value, bool):
            raise self.bad(key, "true or false")
        return value

    def integers(self, key: str) -> tuple[int, ...]:
        value = self.raw.get(key)
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise self.bad(key, "a list of integers")
        return tuple(value)

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self.raw.get(key)
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value
        ):
            raise self.bad(key, "a list of numbers")
        return tuple(float(v) for v in value)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key)
        if not isinstance(value, (list, tuple)):
            raise self.bad(key, "a list of strings")
        return tuple(str(v) for v in value)


def _optional(read: Callable[[Fields, str], object]) -> Callable[[Fields, str], object]:
    return lambda fields, key: read(fields, key) if fields.has(key) else None


#: how a record's field is read, by its annotation (every record below is a dataclass of these)
_READERS: dict[str, Callable[[Fields, str], object]] = {
    "str": Fields.text,
    "str | None": _optional(Fields.text),
    "int": Fields.integer,
    "int | None": _optional(Fields.integer),
    "float | None": _optional(Fields.number),
    "bool": Fields.flag,
    "tuple[int, ...] | None": _optional(Fields.integers),
    "tuple[str, ...]": Fields.texts,
}


def parse_record(cls: type[R], fields: Fields, **given: object) -> R:
    """``cls`` (a record dataclass) from ``fields``: every field read by its annotation (:data:`_READERS`)
    under its own name, the dataclass default where the key is absent, ``given`` ones as they are."""
    values: dict[str, object] = {}
    for spec in dataclasses.fields(cls):
        if spec.name in given:
            values[spec.name] = given[spec.name]
        elif fields.has(spec.name) or spec.default is dataclasses.MISSING:
            values[spec.name] = _READERS[str(spec.type)](fields, spec.name)
    return cls(**values)


# --------------------------------------------------------------------------------- the collect store
@dataclass(frozen=True)
class ModelIdentity:
    """The model and layer a store's activations came from (``attrs.model``, written by collect)."""

    name: str
    layer: str
    weights: str | None = None
    weights_sha256: str | None = None
    layer_shape: tuple[int, ...] | None = None  # (C, H, W) at the layer
    image_size: int | None = None

    @property
    def title(self) -> str:
        """``name layer``, how pages and the index name a store's model."""
        return f"{self.name} {self.layer}".strip()

    def entry(self) -> dict[str, str]:
        """``{"name", "layer"}``: how an atlas entry of ``atlases.json`` names its model."""
        return {"name": self.name, "layer": self.layer}

    @property
    def layer_hw(self) -> tuple[int, int]:
        """(H, W) of the layer's grid; (1, 1) when the store does not record its shape (synthetic stores)."""
        shape = self.layer_shape or (0, 1, 1)
        return (int(shape[1]), int(shape[2])) if len(shape) >= 3 else (1, 1)


@dataclass(frozen=True)
class DatasetIdentity:
    """The photos a store was collected from (``attrs.dataset``)."""

    source: str | None = None
    kind: str | None = None
    fingerprint: str | None = None
    n_images: int | None = None
    labels: str | None = None
    selection: Any = None  # the subsample drawn (data.max_images / data.per_class), as recorded


@dataclass(frozen=True)
class Sampling:
    """How a store's rows were sampled from the photos: what re-renders a row's view needs.

    ``views_per_image`` and ``positions_per_image`` come from the store's top-level geometry (see
    the module docstring); the rest from ``attrs.sampling``, with the defaults of a store that
    does not record them.
    """

    views_per_image: int
    positions_per_image: int
    view_scale: tuple[float, float] = DEFAULT_VIEW_SCALE
    eval_crop: tuple[int, int] | None = None  # view 0's (resize, crop) when collect.view0 is eval
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    image_margin: float | None = None  # None: positions are the layer's own cells
    border: int | None = None
    dtype: str | None = None
    head: bool = True
    top_k: int | None = None
    top_predictions: int | None = None
    jpeg_draft: bool = False

    @classmethod
    def parse(cls, geometry: Fields, fields: Fields) -> Sampling:
        scale = fields.numbers("view_scale") if fields.has("view_scale") else DEFAULT_VIEW_SCALE
        if len(scale) != 2:
            raise fields.bad("view_scale", "two numbers [min, max]")
        eval_crop = None
        if fields.has("view0"):
            view0 = fields.sub("view0")
            if view0.has("transform") and view0.text("transform") != "resize":
                eval_crop = (view0.integer("resize"), view0.integer("crop"))
        return parse_record(
            cls,
            fields,
            views_per_image=geometry.integer("views_per_image"),
            positions_per_image=geometry.integer("positions_per_image"),
            view_scale=(scale[0], scale[1]),
            eval_crop=eval_crop,
        )


@dataclass(frozen=True)
class StoreRecord:
    """Everything the collect store's root group records, parsed once when it opens."""

    model: ModelIdentity
    dataset: DatasetIdentity
    sampling: Sampling
    channels: int
    n_images: int
    n_inputs: int
    n_rows: int
    block_inputs: int
    n_blocks: int
    class_names: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    skip_reasons: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object, where: str) -> StoreRecord:
        root = Fields(raw, where)
        dataset = root.sub("dataset", default_empty=True)
        return parse_record(
            cls,
            root,
            model=parse_record(ModelIdentity, root.sub("model")),
            dataset=parse_record(DatasetIdentity, dataset, selection=dataset.raw.get("selection")),
            sampling=Sampling.parse(root, root.sub("sampling", default_empty=True)),
        )


# --------------------------------------------------------------------------------- derived groups
@dataclass(frozen=True)
class LayoutInfo:
    """How a layout was made (``<store>.layout.zarr`` attrs, or an in-memory layout's)."""

    params: Mapping[str, Any]  # the reduce parameters, as recorded (ReduceConfig fields)
    method: str | None = None
    seed: int | None = None
    layout_id: str = ""
    align_fingerprint: str | None = None  # set by `atlas align` on the layouts it shares

    @classmethod
    def parse(cls, raw: object, where: str) -> LayoutInfo:
        fields = Fields(raw, where)
        return parse_record(cls, fields, params=dict(fields.sub("params", default_empty=True).raw))


@dataclass(frozen=True)
class CellLevelInfo:
    """What grid recorded about one level's kept cells (``grid/level_<N>`` attrs)."""

    min_count: int | None = None  # a cell is kept when it holds more members than this
    n_rows_kept: int | None = None
    n_rows_dropped: int | None = None

    @classmethod
    def parse(cls, raw: object, where: str) -> CellLevelInfo:
        return parse_record(cls, Fields(raw, where))


@dataclass(frozen=True)
class GridInfo:
    """The grid group's root record: its levels and the layout they were binned from."""

    levels: tuple[int, ...]
    layout_id: str | None = None
    class_names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object, where: str) -> GridInfo:
        fields = Fields(raw, where)
        return parse_record(cls, fields, levels=tuple(sorted(fields.integers("levels"))))


@dataclass(frozen=True)
class GridIdentity:
    """Which grid a set of icons was rendered from: the layout it was binned from and the content
    hash of its cell directions (``store.derived.directions_fingerprint``)."""

    layout_id: str | None = None
    fingerprint: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """As the icons group records it (this key order; ``IconsSpec.grid``)."""
        return {"layout_id": self.layout_id, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class IconsRecord:
    """What an icons group was made from (``<store>.icons.zarr`` attrs), parsed when it opens."""

    grid: GridIdentity
    levels: Mapping[int, int]  # N -> kept cells
    made_from: Mapping[str, Any]  # {"grid", "params", "model"} exactly as recorded (exports compare it)
    size: int
    batch_size: int

    @classmethod
    def parse(cls, raw: object, where: str) -> IconsRecord:
        fields = Fields(raw, where)
        levels = fields.sub("levels")
        try:
            cells = {int(n): levels.integer(n) for n in levels.raw}
        except ValueError:
            raise levels.bad(next(iter(levels.raw)), "levels keyed by cells per side") from None
        return parse_record(
            cls,
            fields,
            grid=parse_record(GridIdentity, fields.sub("grid", default_empty=True)),
            levels=cells,
            made_from={key: fields.raw.get(key) for key in ("grid", "params", "model")},
        )

    def export_fingerprint(self, owner_key: str, owner: object) -> str:
        """The fingerprint of an atlas exported from these icons for ``owner`` (a store or subset path):
        it changes when the grid or the render parameters change, so a stale export is rebuilt."""
        return fingerprint({"grid": self.made_from["grid"], "params": self.made_from["params"], owner_key: str(owner)})


def fingerprint(obj: object) -> str:
    """Short content hash of a JSON-able object (keys sorted, so dict order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
