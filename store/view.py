"""The one store interface every stage after collect reads: rows, activations, attributions, derived groups.

Two kinds of store satisfy it: :class:`store.atlas_store.AtlasStore` (everything collect wrote)
and :class:`store.subset.SubsetStore` (some of its rows, with derived groups of their own: the
class and comparison atlases). A stage typed against :class:`RowStore` runs unchanged on both,
so reduce, grid, render and tiles have one implementation, and never branch on the store's class.
Row ids are always the collect store's, so a subset's cells still point at the parent's samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from store.records import DatasetIdentity, ModelIdentity, Sampling


@runtime_checkable
class RowStore(Protocol):
    """What reduce, grid, render, tiles and the class atlases need from a store."""

    path: Path

    @property
    def model(self) -> ModelIdentity:
        """The model and layer the activations came from (typed, validated when the store opened)."""
        ...

    @property
    def dataset(self) -> DatasetIdentity: ...
    @property
    def sampling(self) -> Sampling:
        """How the rows were sampled from the photos (views and positions per image, view scale, ...)."""
        ...

    @property
    def label_names(self) -> list[str]: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def channels(self) -> int: ...
    @property
    def positions_per_image(self) -> int: ...
    @property
    def class_names(self) -> list[str]: ...

    def derived_path(self, name: str) -> Path:
        """Where the stage that derives group ``name`` (layout, grid, whitening, icons) keeps it."""
        ...

    def content_token(self) -> str:
        """A hash that changes whenever the rows this store holds change (layouts record it)."""
        ...

    def require_collected(self, needed_by: str) -> None:
        """Raise AtlasError naming the shard to rerun when collect has not finished these rows."""
        ...

    def valid_mask(self) -> NDArray[np.bool_]: ...
    def activations(self) -> da.Array: ...
    def row_array(self, name: str) -> da.Array: ...
    def row_values(self, name: str, rows: NDArray[np.integer] | None = None) -> NDArray[Any]: ...
    def has_row_array(self, name: str) -> bool: ...
    def attribution_topk(self) -> tuple[da.Array, da.Array]: ...
    def row_images(self) -> NDArray[np.int32]: ...
    def row_views(self) -> NDArray[np.int16]: ...
    def row_labels(self) -> NDArray[np.int32]: ...
    def image_paths(self) -> NDArray[Any]: ...
