"""A view of some rows of a store, with its own derived groups: the class and comparison atlases.

The class-filtered atlases of the reference (Carter et al., 2019, docs/method.md §8) run the
*same* reduce -> grid -> render path as the main atlas on a subset of the samples. Rather than a
second implementation, :class:`SubsetStore` looks like an :class:`~store.atlas_store.AtlasStore`
to those stages:

- ``valid_mask()`` is the parent's mask restricted to the selected rows, so reduce lays out only
  them and grid bins only them; row ids stay the parent's, so cell members point at the parent's
  samples (dataset examples, labels);
- ``derived_path(x)`` routes every derived group to the subset's own folder: ``<store>.<name>.<x>.zarr``
  by default, or ``<base>/<name>.<x>.zarr`` when a ``base`` folder is given (the class stage keeps
  all class atlases in ``<store>.classes/`` so DVC tracks one output folder);
- everything else (activations, attributions, class names, the model identity) is the parent's.

The selected rows are persisted in the subset's own ``rows`` group with how they were chosen, so
a rerun can check that it works on the same rows; when the selection changes, the subset's stale
layout/grid/whitening/icons groups are deleted (icons of another grid would be refused otherwise).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from store.atomic import remove_tree, write_aside
from store.errors import AtlasError
from store.metadata import first_difference, json_ready
from store.records import DatasetIdentity, ModelIdentity, Sampling
from store.zarrio import create_array, open_group, read, read_child

if TYPE_CHECKING:
    from store.atlas_store import AtlasStore

log = logging.getLogger(__name__)

ROWS = "rows"
# the groups the reduce, grid and render stages write for a store (store/derived.py, store/icons.py)
STAGE_GROUPS = ("layout", "grid", "whitening", "icons")


class SubsetStore:
    """Rows ``rows`` of ``parent`` under the name ``name`` (see the module docstring)."""

    def __init__(self, parent: AtlasStore, name: str, rows: NDArray[np.integer], base: Path | None = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"subset name {name!r} must be a plain, non-empty file-name part")
        self.parent = parent
        self.name = name
        self.base = Path(base) if base is not None else None
        self.rows = np.asarray(rows, dtype=np.int64)
        self.path = self.derived_path(ROWS)  # named in messages ("store <path> has ...")

    # ----------------------------------------------------------------------------- persistence
    @classmethod
    def create(
        cls, parent: AtlasStore, name: str, rows: NDArray[np.integer], attrs: dict[str, Any], base: Path | None = None
    ) -> SubsetStore:
        """Persist ``rows`` (ascending, unique, valid in the parent) and how they were chosen.

        An existing subset with the same rows and ``attrs`` is kept as it is (its derived groups
        stay usable); one with other rows or attrs has its derived groups deleted first.
        """
        rows = _checked_rows(parent, name, rows)
        subset = cls(parent, name, rows, base)
        stored = subset._stored()
        record = json_ready({**attrs, "n": int(len(rows)), "parent": str(parent.path)})
        if stored is not None:
            old_rows, old_attrs = stored
            diff = first_difference(old_attrs, record, holder="subset")
            if diff is None and np.array_equal(old_rows, rows):
                return subset
            log.info("subset %s changed (%s): deleting its derived groups", name, diff or "other rows")
            subset.delete_derived()
        with write_aside(subset.path) as tmp:
            group = open_group(tmp, mode="w")
            create_array(group, "rows", data=rows, chunks=(max(1, min(len(rows), 1 << 20)),))
            group.attrs.update({**record, "complete": True})
        return subset

    @classmethod
    def open(cls, parent: AtlasStore, name: str, base: Path | None = None) -> SubsetStore:
        """The subset persisted under ``name`` (made earlier by :meth:`create`)."""
        probe = cls(parent, name, np.zeros(0, np.int64), base)
        stored = probe._stored()
        if stored is None:
            raise AtlasError(f"subset {probe.path} does not exist; run the stage that selects its rows first")
        probe.rows = stored[0]
        return probe

    @property
    def selection(self) -> dict[str, Any]:
        """How the rows were chosen (the attrs given to :meth:`create`)."""
        stored = self._stored()
        return stored[1] if stored is not None else {}

    def _stored(self) -> tuple[NDArray[np.int64], dict[str, Any]] | None:
        if not (self.path / "zarr.json").exists():
            return None
        group = open_group(self.path, mode="r")
        if not group.attrs.get("complete", False) or "rows" not in group:
            return None
        attrs = {k: v for k, v in group.attrs.items() if k != "complete"}
        return np.asarray(read(read_child(group, "rows")), dtype=np.int64), attrs

    def mark_incomplete(self) -> None:
        """Make the next class/compare run rewrite the rows group (``atlas verify --repair``)."""
        open_group(self.path, mode="r+").attrs.update({"complete": False})

    def content_token(self) -> str:
        """Changes when the selected rows or what the parent stored changes (see AtlasStore.content_token)."""
        digest = hashlib.sha256(self.parent.content_token().encode())
        digest.update(np.ascontiguousarray(self.rows, np.int64).tobytes())
        return digest.hexdigest()[:16]

    def delete_derived(self) -> None:
        """Remove the subset's layout, grid, whitening and icons groups (each renamed away first)."""
        for name in STAGE_GROUPS:
            remove_tree(self.derived_path(name))

    # ----------------------------------------------------------------------------- the store view
    def derived_path(self, name: str) -> Path:
        """``<store>.<subset>.<name>.zarr``, or ``<base>/<subset>.<name>.zarr`` with a base folder."""
        if self.base is not None:
            return self.base / f"{self.name}.{name}.zarr"
        return self.parent.derived_path(f"{self.name}.{name}")

    def valid_mask(self) -> NDArray[np.bool_]:
        """The parent's valid rows, restricted to the selected ones."""
        mask = np.zeros(self.parent.n_rows, dtype=bool)
        mask[self.rows] = True
        valid: NDArray[np.bool_] = mask & np.asarray(self.parent.valid_mask(), dtype=np.bool_)
        return valid

    @property
    def attrs(self) -> dict[str, Any]:
        """The parent's raw JSON attributes (for tests and debugging; code reads the typed records)."""
        return self.parent.attrs

    @property
    def model(self) -> ModelIdentity:
        return self.parent.model

    @property
    def dataset(self) -> DatasetIdentity:
        return self.parent.dataset

    @property
    def sampling(self) -> Sampling:
        return self.parent.sampling

    @property
    def label_names(self) -> list[str]:
        return self.parent.label_names

    def require_collected(self, needed_by: str) -> None:
        """Nothing to check: a subset holds only rows its parent had already stored (see ``create``)."""

    @property
    def n_rows(self) -> int:
        return self.parent.n_rows

    @property
    def channels(self) -> int:
        return self.parent.channels

    @property
    def positions_per_image(self) -> int:
        return self.parent.positions_per_image

    @property
    def class_names(self) -> list[str]:
        return self.parent.class_names

    def activations(self) -> da.Array:
        return self.parent.activations()

    def attribution_topk(self) -> tuple[da.Array, da.Array]:
        return self.parent.attribution_topk()

    def row_array(self, name: str) -> da.Array:
        return self.parent.row_array(name)

    def row_values(self, name: str, rows: NDArray[np.integer] | None = None) -> NDArray[Any]:
        """Row ids are the parent's, so this reads the parent's rows."""
        return self.parent.row_values(name, rows)

    def has_row_array(self, name: str) -> bool:
        return self.parent.has_row_array(name)

    def row_images(self) -> NDArray[np.int32]:
        return self.parent.row_images()

    def row_views(self) -> NDArray[np.int16]:
        return self.parent.row_views()

    def row_labels(self) -> NDArray[np.int32]:
        return self.parent.row_labels()

    def image_paths(self) -> NDArray[Any]:
        return self.parent.image_paths()


def _checked_rows(parent: AtlasStore, name: str, rows: NDArray[np.integer]) -> NDArray[np.int64]:
    out = np.asarray(rows, dtype=np.int64).ravel()
    if out.size and (out.min() < 0 or out.max() >= parent.n_rows):
        raise AtlasError(f"subset {name}: row ids must lie in 0..{parent.n_rows - 1} of store {parent.path}")
    out = np.unique(out)
    invalid = ~np.asarray(parent.valid_mask(), dtype=bool)[out]
    if invalid.any():
        raise AtlasError(
            f"subset {name}: {int(invalid.sum())} selected rows of store {parent.path} were never "
            "stored (skipped or pending inputs); select among the valid rows"
        )
    return out
