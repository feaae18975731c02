"""The zarr store every stage reads and writes: creation, identity checks, blocks, readers.

No other module knows the array names or chunking (see :mod:`store.schema` for the layout and why
rows are addressed by a fixed formula). Collect calls :meth:`AtlasStore.create_or_open` and
:meth:`AtlasStore.write_block`; later stages call :meth:`AtlasStore.open` and the dask readers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from store import schema
from store.atomic import lock_for, write_aside
from store.errors import AtlasError
from store.metadata import first_difference, json_ready
from store.records import DatasetIdentity, ModelIdentity, Sampling, StoreRecord
from store.zarrio import Mode, create_array, dask_array, open_group, read, read_child, read_group, read_rows, writable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds; two runs may share a store only if their specs are equal."""

    model: dict[str, Any]  # name, weights, weights_sha256, layer, image_size, layer_shape, ...
    dataset: dict[str, Any]  # source, kind, fingerprint, n_images
    sampling: dict[str, Any]  # views_per_image, positions_per_image, border, seed, dtype, top_k, ...
    channels: int
    n_images: int
    views_per_image: int
    positions_per_image: int
    rows_per_chunk: int
    dtype: str
    top_k: int
    top_predictions: int

    @property
    def block_inputs(self) -> int:
        """Inputs per block: as many as fit in ``rows_per_chunk`` rows (at least one)."""
        return max(1, self.rows_per_chunk // self.positions_per_image)

    def identity(self) -> dict[str, Any]:
        return {
            "schema_version": schema.SCHEMA_VERSION,
            "model": self.model,
            "dataset": self.dataset,
            "sampling": self.sampling,
        }


@dataclass
class BlockData:
    """Everything collect produces for one block, row-aligned with the block's rows."""

    status: np.ndarray  # [inputs_in_block] uint8
    activations: np.ndarray  # [rows, C]
    rows: dict[str, np.ndarray]  # name in schema.ROW_ARRAYS -> [rows, ...]


def _expected() -> str:
    return f"expected a zarr v3 group of format {schema.FORMAT_NAME!r}, schema version {schema.SCHEMA_VERSION}"


def open_foreign_checked(p: Path, mode: Mode) -> zarr.Group:
    """Open ``p`` as a zarr v3 group of our format, or refuse it in one line naming what was found.

    The schema version is checked by the caller (:meth:`AtlasStore.open`); this refuses what is
    not ours at all: nothing there, a plain folder, a zarr v2 store, an array, another tool's group.
    """
    if not p.exists():
        raise AtlasError(f"store {p} does not exist; run `atlas collect` first (or pass --store)")
    if (p / ".zgroup").exists() or (p / ".zarray").exists():
        raise AtlasError(
            f"store {p} is a zarr v2 store (written by another tool; {_expected()}); choose another --store path"
        )
    if not (p / "zarr.json").exists():
        raise AtlasError(f"store {p} is not a zarr store (no zarr.json; {_expected()}); choose another --store path")
    try:
        group = open_group(p, mode=mode)
    except AtlasError:
        raise
    except Exception as exc:
        raise AtlasError(
            f"store {p} cannot be opened as a zarr group ({type(exc).__name__}: {exc}; {_expected()}); "
            "run `atlas verify` on it, or collect into a new store"
        ) from None
    fmt = group.attrs.get("format")
    if fmt != schema.FORMAT_NAME:
        raise AtlasError(
            f"store {p} is not an activation-atlas store (format {fmt!r}, schema version "
            f"{group.attrs.get('schema_version')!r}; {_expected()}); choose another --store path"
        )
    return group


class AtlasStore:
    """A handle on one store folder; its metadata is parsed into typed records once, here."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.group = group
        # a handle made without a group only names paths (derived_path); one with a group is opened
        self._record = StoreRecord.parse(dict(group.attrs), f"store {path}") if group is not None else None

    @property
    def record(self) -> StoreRecord:
        """What the root group records, parsed and validated when the store was opened."""
        if self._record is None:
            raise AtlasError(f"store {self.path} was not opened; open it with AtlasStore.open")
        return self._record

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, mode: Mode = "r+") -> AtlasStore:
        """Open an existing store; refuse anything that is not one of ours at this schema."""
        p = Path(path)
        group = open_foreign_checked(p, mode)
        version = group.attrs.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            if version in schema.MIGRATABLE_VERSIONS:
                raise AtlasError(
                    f"store {p} has schema version {version}, this version reads {schema.SCHEMA_VERSION} "
                    f"(checksummed chunks); run `atlas migrate --store {p}` to rewrite it in place, "
                    "or collect into a new store"
                )
            raise AtlasError(
                f"store {p} has schema version {version!r}, this version reads {schema.SCHEMA_VERSION}; "
                "use the activation-atlas version that wrote it, or collect into a new store"
            )
        return cls(p, group)

    @classmethod
    def create_or_open(cls, path: str | Path, spec: StoreSpec, extra_attrs: dict[str, Any]) -> AtlasStore:
        """Create the pre-sized store, or reopen it if it was made by the same spec.

        A file lock beside the store makes this safe when n shards start at once.
        """
        p = Path(path)
        with lock_for(p):
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                store = cls.open(p)  # refuses anything that is not a store of ours
                store.require_identity(spec)
                return store
            return cls._create(p, spec, extra_attrs, locked=True)

    def require_identity(self, spec: StoreSpec) -> None:
        """Refuse a run whose model, layer, data or sampling differ from what the store holds."""
        stored = {k: self.group.attrs.get(k) for k in schema.IDENTITY_KEYS}
        diff = first_difference(stored, json_ready(spec.identity()))
        if diff:
            raise AtlasError(
                f"store {self.path} was made by another configuration ({diff}); "
                "use a new --store path or delete the old store"
            )

    @classmethod
    def _create(cls, p: Path, spec: StoreSpec, extra_attrs: dict[str, Any], locked: bool = False) -> AtlasStore:
        """Build the empty store aside and publish it whole (store/atomic.py): a kill during
        creation leaves no half-made store that the next run would refuse as foreign."""
        with write_aside(p, locked=locked) as tmp:
            cls._build(tmp, spec, extra_attrs)
        log.info(
            "created store %s: %d images x %d views x %d positions = %d rows",
            p,
            spec.n_images,
            spec.views_per_image,
            spec.positions_per_image,
            spec.n_images * spec.views_per_image * spec.positions_per_image,
        )
        return cls(p, open_group(p, mode="r+"))

    @staticmethod
    def _build(p: Path, spec: StoreSpec, extra_attrs: dict[str, Any]) -> None:
        n_inputs = spec.n_images * spec.views_per_image
        n_rows = n_inputs * spec.positions_per_image
        bi = spec.block_inputs
        chunk_rows = bi * spec.positions_per_image
        n_blocks = -(-n_inputs // bi)
        group = open_group(p, mode="w")
        images = group.create_group(schema.IMAGES)
        img_chunk = max(1, min(spec.n_images, 65536))
        create_array(images, "path", shape=(spec.n_images,), chunks=(img_chunk,), dtype=str)
        create_array(images, "label", shape=(spec.n_images,), chunks=(img_chunk,), dtype="int32", fill_value=-1)
        create_array(images, "label_class", shape=(spec.n_images,), chunks=(img_chunk,), dtype="int32", fill_value=-1)
        inputs = group.create_group(schema.INPUTS)
        create_array(inputs, "status", shape=(n_inputs,), chunks=(bi,), dtype="uint8", fill_value=schema.STATUS_PENDING)
        samples = group.create_group(schema.SAMPLES)
        create_array(
            samples,
            "activations",
            shape=(n_rows, spec.channels),
            chunks=(chunk_rows, spec.channels),
            dtype=spec.dtype,
            fill_value=0,
        )
        trailing = {"2": 2, "top_predictions": spec.top_predictions, "top_k": spec.top_k}
        for name, (dtype, key, fill) in schema.ROW_ARRAYS.items():
            shape = (n_rows,) if key is None else (n_rows, trailing[key])
            chunks = (chunk_rows,) if key is None else (chunk_rows, trailing[key])
            create_array(samples, name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
        blocks = group.create_group(schema.BLOCKS)
        create_array(blocks, "done", shape=(n_blocks,), chunks=(1,), dtype="uint8", fill_value=0)
        attrs = {
            "format": schema.FORMAT_NAME,
            **json_ready(spec.identity()),
            **json_ready(extra_attrs),
            "channels": spec.channels,
            "n_images": spec.n_images,
            "n_inputs": n_inputs,
            "n_rows": n_rows,
            "views_per_image": spec.views_per_image,
            "positions_per_image": spec.positions_per_image,
            "block_inputs": bi,
            "n_blocks": n_blocks,
        }
        group.attrs.update(attrs)

    def derived_path(self, name: str) -> Path:
        """Where a later stage keeps its output: a sibling zarr group, ``<store>.<name>.zarr``.

        Each stage owning its own folder lets DVC track it as that stage's output (DVC refuses
        outputs nested inside another stage's output) and lets a stage be rerun alone.
        """
        return self.path.with_name(f"{self.path.stem}.{name}.zarr")

    # ----------------------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """The root group's raw JSON attributes, as on disk (for tests and debugging: code reads the
        typed records below, which were validated when the store opened)."""
        return dict(self.group.attrs)

    @property
    def model(self) -> ModelIdentity:
        """The model and layer the activations came from."""
        return self.record.model

    @property
    def dataset(self) -> DatasetIdentity:
        return self.record.dataset

    @property
    def sampling(self) -> Sampling:
        """How rows were sampled from the photos (views, positions, view scale, seed, ...)."""
        return self.record.sampling

    @property
    def label_names(self) -> list[str]:
        """The dataset's label names (``images/label`` indexes them)."""
        return list(self.record.label_names)

    # ----------------------------------------------------------------------------- geometry
    @property
    def n_rows(self) -> int:
        return self.record.n_rows

    @property
    def n_inputs(self) -> int:
        return self.record.n_inputs

    @property
    def n_blocks(self) -> int:
        return self.record.n_blocks

    @property
    def channels(self) -> int:
        return self.record.channels

    @property
    def positions_per_image(self) -> int:
        return self.record.sampling.positions_per_image

    @property
    def class_names(self) -> list[str]:
        return list(self.record.class_names)

    def block_input_range(self, block: int) -> range:
        bi = self.record.block_inputs
        return range(block * bi, min((block + 1) * bi, self.n_inputs))

    def block_row_range(self, block: int) -> range:
        inputs = self.block_input_range(block)
        p = self.positions_per_image
        return range(inputs.start * p, inputs.stop * p)

    # ----------------------------------------------------------------------------- writing
    @property
    def images_written(self) -> bool:
        """Whether the image table was written (by the first collect run into this store)."""
        return bool(self.group.attrs.get("images_written", False))

    def mark_images_written(self) -> None:
        with lock_for(self.path):
            self.group = open_group(self.path, mode="r+")
            self.group.attrs["images_written"] = True

    def write_images(self, paths: list[str], labels: np.ndarray, label_classes: np.ndarray) -> None:
        """The image table; identical for every shard, so writing it twice is harmless."""
        images = read_group(self.group, schema.IMAGES)
        if not paths:
            return
        writable(read_child(images, "path"))[:] = np.asarray(paths, dtype=str)
        writable(read_child(images, "label"))[:] = labels.astype("int32")
        writable(read_child(images, "label_class"))[:] = label_classes.astype("int32")

    def done_blocks(self) -> np.ndarray:
        return np.asarray(read(self._array(schema.BLOCKS, "done")), dtype=bool)

    def mark_blocks_not_done(self, blocks: list[int]) -> None:
        """Make collect redo ``blocks`` (``atlas verify --repair``); their chunks are rewritten whole."""
        done = writable(self._array(schema.BLOCKS, "done"))
        for block in blocks:
            done[block] = 0

    def mark_images_not_written(self) -> None:
        """Make the next collect run rewrite the image table (``atlas verify --repair``)."""
        with lock_for(self.path):
            self.group = open_group(self.path, mode="r+")
            self.group.attrs["images_written"] = False

    def content_token(self) -> str:
        """A hash that changes whenever the rows collect stored change: identity and input status.

        A layout records the token of the rows it laid out; a different token now means the layout
        is stale (``store.derived.read_layout`` refuses it, ``atlas verify`` reports it). Collect is
        deterministic given the identity (model, data, sampling), so the identity and which inputs
        were stored or skipped determine every row; the done flags are left out on purpose, so a
        block marked for redo by ``atlas verify --repair`` does not make the layout stale. Reading
        one small array, it is cheap at any store size.
        """
        digest = hashlib.sha256()
        identity = {k: self.group.attrs.get(k) for k in schema.IDENTITY_KEYS}
        digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
        digest.update(np.ascontiguousarray(self.input_status(), dtype=np.uint8).tobytes())
        return digest.hexdigest()[:16]

    def pending_blocks(self, blocks: range | None = None) -> list[int]:
        done = self.done_blocks()
        candidates = range(self.n_blocks) if blocks is None else blocks
        return [b for b in candidates if not done[b]]

    def write_block(self, block: int, data: BlockData) -> None:
        """Write every array of one block, then mark it done (the mark is the commit point)."""
        rows = self.block_row_range(block)
        inputs = self.block_input_range(block)
        if data.activations.shape[0] != len(rows) or data.status.shape[0] != len(inputs):
            raise ValueError(
                f"block {block}: got {data.activations.shape[0]} rows / {data.status.shape[0]} "
                f"inputs, expected {len(rows)} / {len(inputs)}"
            )
        samples = read_group(self.group, schema.SAMPLES)
        sl = slice(rows.start, rows.stop)
        activations = read_child(samples, "activations")
        writable(activations)[sl] = data.activations.astype(activations.dtype, copy=False)
        for name, values in data.rows.items():
            array = read_child(samples, name)
            writable(array)[sl] = values.astype(array.dtype, copy=False)
        writable(self._array(schema.INPUTS, "status"))[inputs.start : inputs.stop] = data.status
        writable(self._array(schema.BLOCKS, "done"))[block] = 1

    def record_run_summary(self, summary: dict[str, Any]) -> None:
        """Counts of stored / skipped inputs, recomputed from the status array under the lock."""
        with lock_for(self.path):
            # reopened under the lock: attrs are rewritten whole, so update the latest ones, not this
            # handle's copy from when it was opened (another shard may have written since)
            self.group = open_group(self.path, mode="r+")
            self.group.attrs.update({"counts": json_ready(self.counts()), "last_run": json_ready(summary)})

    # ----------------------------------------------------------------------------- reading
    def _array(self, group: str, name: str) -> zarr.Array[Any]:
        """Array ``group/name`` of the store (one line naming it when it is missing or not an array)."""
        return read_child(read_group(self.group, group), name)

    def input_status(self) -> np.ndarray:
        return read(self._array(schema.INPUTS, "status"))

    def counts(self) -> dict[str, int]:
        status = self.input_status()
        reasons = self.record.skip_reasons
        out = {
            "inputs": int(status.size),
            "stored": int((status == schema.STATUS_STORED).sum()),
            "pending": int((status == schema.STATUS_PENDING).sum()),
        }
        for i, reason in enumerate(reasons):
            out[f"skipped_{reason}"] = int((status == schema.STATUS_FIRST_SKIP + i).sum())
        out["skipped"] = int((status >= schema.STATUS_FIRST_SKIP).sum())
        return out

    def valid_mask(self) -> np.ndarray:
        """[n_rows] bool: rows whose input was decoded and stored (skipped/pending rows are not)."""
        status = self.input_status()
        return np.repeat(status == schema.STATUS_STORED, self.positions_per_image)

    def activations(self) -> da.Array:
        """[n_rows, C] in the stored dtype; cast blocks to float32 before reducing (float16 overflows)."""
        return dask_array(self._array(schema.SAMPLES, "activations"))

    def row_array(self, name: str) -> da.Array:
        if name not in schema.ROW_ARRAYS:
            raise KeyError(f"unknown per-row array {name!r}; known: {', '.join(schema.ROW_ARRAYS)}")
        return dask_array(self._array(schema.SAMPLES, name))

    def row_values(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-row array ``name`` (``activations`` or one of schema.ROW_ARRAYS) at ``rows`` (all when None), in memory."""
        if name != "activations" and name not in schema.ROW_ARRAYS:
            raise KeyError(f"unknown per-row array {name!r}; known: activations, {', '.join(schema.ROW_ARRAYS)}")
        array = self._array(schema.SAMPLES, name)
        if rows is None:
            return read(array)
        return read_rows(array, np.asarray(rows, dtype=np.int64))

    def has_row_array(self, name: str) -> bool:
        return name in read_group(self.group, schema.SAMPLES)

    def require_collected(self, needed_by: str) -> None:
        """Refuse a store that a sharded collect has not finished, with the shard to rerun."""
        from store.progress import collect_progress, require_complete

        require_complete(collect_progress(self), needed_by=needed_by)

    def attribution_topk(self) -> tuple[da.Array, da.Array]:
        """(class indices int32 [N, K] with -1 for none, values float16 [N, K])."""
        indices: da.Array = self.row_array("attr_idx").astype("int32")  # type: ignore[no-untyped-call]  # dask: no annotations
        return indices, self.row_array("attr_val")

    def row_images(self) -> np.ndarray:
        """[n_rows] int32 image index of every row (from the fixed addressing)."""
        views = self.sampling.views_per_image
        return (np.arange(self.n_rows, dtype=np.int64) // (self.positions_per_image * views)).astype(np.int32)

    def row_views(self) -> np.ndarray:
        views = self.sampling.views_per_image
        return ((np.arange(self.n_rows, dtype=np.int64) // self.positions_per_image) % views).astype(np.int16)

    def row_labels(self) -> np.ndarray:
        """[n_rows] int32 dataset label of every row, -1 unknown."""
        labels = np.asarray(read(self._array(schema.IMAGES, "label")), dtype=np.int32)
        return labels[self.row_images()] if labels.size else np.full(self.n_rows, -1, np.int32)

    def image_paths(self) -> np.ndarray:
        return read(self._array(schema.IMAGES, "path"))

    def image_label_classes(self) -> np.ndarray:
        """[n_images] int32: each image's dataset label as a model class index, -1 when unknown."""
        return np.asarray(read(self._array(schema.IMAGES, "label_class")), np.int32)

    # ----------------------------------------------------------------------------- tests
    @classmethod
    def create_synthetic_for_tests(
        cls,
        path: str | Path,
        activations: np.ndarray,
        attr_idx: np.ndarray | None = None,
        attr_val: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        rows_per_chunk: int = 1024,
    ) -> AtlasStore:
        """A complete store from arrays (one image per row, one view, one position), no model."""
        n, c = activations.shape
        k = attr_idx.shape[1] if attr_idx is not None else 1
        spec = StoreSpec(
            model={"name": "synthetic", "layer": "none"},
            dataset={"fingerprint": "synthetic"},
            sampling={},
            channels=c,
            n_images=n,
            views_per_image=1,
            positions_per_image=1,
            rows_per_chunk=rows_per_chunk,
            dtype=str(activations.dtype) if activations.dtype in (np.float16, np.float32) else "float32",
            top_k=k,
            top_predictions=1,
        )
        names = class_names or [f"class_{i}" for i in range(int(attr_idx.max()) + 1 if attr_idx is not None else 1)]
        store = cls._create(Path(path), spec, {"class_names": names, "label_names": [], "skip_reasons": []})
        labels = np.full(n, -1, np.int32) if labels is None else labels
        store.write_images([f"synthetic/{i}" for i in range(n)], labels, np.full(n, -1, np.int32))
        for block in range(store.n_blocks):
            rows = store.block_row_range(block)
            sl = slice(rows.start, rows.stop)
            extra = {"yx": np.zeros((len(rows), 2), np.int16)}
            if attr_idx is not None and attr_val is not None:
                extra["attr_idx"], extra["attr_val"] = attr_idx[sl], attr_val[sl]
            store.write_block(
                block,
                BlockData(
                    status=np.full(len(rows), schema.STATUS_STORED, np.uint8), activations=activations[sl], rows=extra
                ),
            )
        return store
