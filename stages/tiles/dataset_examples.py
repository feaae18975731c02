"""Dataset examples of every cell: the samples closest to the cell's direction, as thumbnails.

For each kept cell the ``tiles.examples`` store rows whose activation has the largest cosine
with the cell's direction (the mean activation the icon was rendered from) are picked, and
for each a thumbnail is cut from its source photo around the sampled position, so the viewer
can show "what in the data set this cell responds to" next to the icon.

Which rows are searched (``tiles.example_search``):

- ``members`` (default): only the cell's own members. Every row belongs to exactly one cell of a
  level, so a single streamed pass over the activations compares each row with its own cell's
  direction: O(rows x channels) per pass whatever the number of cells, a few hundred MB/s of
  float16 on 2 cores, memory = two store chunks + ``[cells, k]`` running top-k arrays. At 1M
  rows x 576 channels that is one ~1.1 GB read. It is also what the viewer needs: the examples
  are samples that the layout put *under* the hovered icon, so they explain that spot of the
  map rather than similar samples from elsewhere.
- ``all``: the exact nearest rows of the whole store, by faiss ``IndexFlatIP`` on L2-normalised
  float32 rows, one store chunk at a time against all the level's directions, merged into a
  running top-k. Memory stays at one chunk plus ``[cells, k]``; time is
  O(rows x cells x channels) (1M x 25,600 x 576 at level 160 is ~1.5e13 flops, tens of minutes
  on 2 cores), which is why it is not the default.

Thumbnail geometry: a row is ``(image, view, position)`` (store/schema.py addressing); the
view is the deterministic crop box of :func:`stages.images.crops.view_box`, resized to the model's
input; the position ``(y, x)`` of an ``H x W`` layer is centred at ``((x + 0.5) / W, (y + 0.5) / H)``
of the view. The thumbnail is the square of ``tiles.example_field`` of the view's side around
that centre (about the layer's receptive field; kept inside the view), mapped back to the photo
and resized to ``tiles.example_px``: it shows the pixels the model saw, distorted exactly as the
view was. Photos that cannot be opened any more are skipped with a warning, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from stages.images.crops import Box, view_box
from stages.images.decoding import decode_rgb
from store import derived
from store.view import RowStore

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- search (pure)
def unit_rows(x: NDArray[np.floating]) -> NDArray[np.float32]:
    """Rows scaled to unit length, float32; an all-zero row stays zero (cosine 0 with anything)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


@dataclass
class TopK:
    """Running top-k per cell: ``rows[c]`` best first, ``-1`` (value ``-inf``) where fewer were seen.

    ``rows_per_photo`` > 0 keeps at most one row per photo (rows ``r`` with equal
    ``r // rows_per_photo``) in a cell's list: the views of one photo overlap, and four crops of
    the same brick wall tell the viewer less than four different photos.
    """

    values: NDArray[np.float32]  # [cells, k]
    rows: NDArray[np.int64]  # [cells, k]
    rows_per_photo: int = 0

    @classmethod
    def empty(cls, cells: int, k: int, rows_per_photo: int = 0) -> TopK:
        return cls(np.full((cells, k), -np.inf, np.float32), np.full((cells, k), -1, np.int64), rows_per_photo)

    def merge(self, cells: NDArray[np.integer], values: NDArray[np.floating], rows: NDArray[np.integer]) -> None:
        """Fold candidates ``(cell, value, row)`` in; ties go to the smaller row id."""
        k = self.values.shape[1]
        if k == 0 or len(cells) == 0:
            return
        have = self.rows >= 0
        all_cells = np.concatenate([np.nonzero(have)[0], np.asarray(cells, np.int64)])
        all_values = np.concatenate([self.values[have], np.asarray(values, np.float32)])
        all_rows = np.concatenate([self.rows[have], np.asarray(rows, np.int64)])
        order = np.lexsort((all_rows, -all_values, all_cells))
        c, v, r = all_cells[order], all_values[order], all_rows[order]
        if self.rows_per_photo > 0:  # the best row of each (cell, photo): the first in this order
            _, first = np.unique(np.stack([c, r // self.rows_per_photo]), axis=1, return_index=True)
            first.sort()
            c, v, r = c[first], v[first], r[first]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        rank = np.arange(len(c)) - np.repeat(starts, np.diff(np.r_[starts, len(c)]))
        keep = rank < k
        self.values[np.unique(c)] = -np.inf
        self.rows[np.unique(c)] = -1
        self.values[c[keep], rank[keep]] = v[keep]
        self.rows[c[keep], rank[keep]] = r[keep]


Candidates = tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]  # (cell, cosine, row)


def member_candidates(
    cell_of_row: NDArray[np.int32], start: int, x_unit: NDArray[np.float32], directions_unit: NDArray[np.float32]
) -> Candidates:
    """(cell, cosine, row) of every member row of one block against its own cell's direction."""
    cells = cell_of_row[start : start + len(x_unit)]
    member = np.flatnonzero(cells >= 0)
    c = cells[member].astype(np.int64)
    cos = np.einsum("ij,ij->i", x_unit[member], directions_unit[c])
    return c, cos.astype(np.float32), member.astype(np.int64) + start


def faiss_candidates(
    x_unit: NDArray[np.float32], rows: NDArray[np.int64], directions_unit: NDArray[np.float32], k: int
) -> Candidates:
    """(cell, cosine, row): the ``k`` rows of one block nearest each direction (exact faiss search)."""
    import faiss

    k = min(k, len(x_unit))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    index = faiss.IndexFlatIP(x_unit.shape[1])
    index.add(x_unit)
    values, local = index.search(directions_unit, k)
    cells = np.repeat(np.arange(len(directions_unit), dtype=np.int64), k)
    ok = local.ravel() >= 0
    return cells[ok], values.ravel()[ok].astype(np.float32), rows[local.ravel()[ok]]


def cell_of_row(level: derived.CellLevel, n_rows: int) -> NDArray[np.int32]:
    """``[n_rows]`` kept-cell number of every store row at this level, -1 for none."""
    out = np.full(n_rows, -1, np.int32)
    counts = np.diff(level.member_offsets)
    out[level.member_rows] = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    return out


def nearest_rows(
    store: RowStore,
    levels: dict[int, derived.CellLevel],
    k: int,
    search: str = "members",
    distinct_photos: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, TopK]:
    """The ``k`` store rows nearest by cosine to every cell's direction, for all ``levels`` in one pass
    (``distinct_photos``: at most one row per photo in a cell's list)."""
    per_photo = RowGeometry.from_store(store).rows_per_image if distinct_photos else 0
    found = {n: TopK.empty(len(level), k, per_photo) for n, level in levels.items()}
    if k == 0 or not levels:
        return found
    directions = {n: unit_rows(level.direction) for n, level in levels.items()}
    if search == "members":
        owner = {n: cell_of_row(level, store.n_rows) for n, level in levels.items()}
    else:
        valid = np.asarray(store.valid_mask(), bool)
    for block in derived.iter_row_blocks([store.activations()], progress):
        x = unit_rows(block.arrays[0])
        for n in levels:
            if search == "members":
                found[n].merge(*member_candidates(owner[n], block.start, x, directions[n]))
            else:
                keep = np.flatnonzero(valid[block.start : block.stop])
                # one row per photo: a block's top k*R rows hold the best row of each of its top-k photos
                k_block = k * per_photo if per_photo else k
                found[n].merge(*faiss_candidates(x[keep], keep.astype(np.int64) + block.start, directions[n], k_block))
    return found


# --------------------------------------------------------------------------------- thumbnails
def example_crop_box(
    view: Box, yx: tuple[int, int], layer_hw: tuple[int, int], field: float
) -> tuple[float, float, float, float]:
    """Photo-pixel box of the thumbnail of position ``yx`` of a ``layer_hw`` layer seen through ``view``.

    The square of side ``field`` (fraction of the view) centred on the position's centre in the
    view, shifted to stay inside the view, then mapped to the photo (a view is a box of the photo
    resized to a square, so the square becomes the box's aspect ratio there).
    """
    h, w = layer_hw
    half = min(field, 1.0) / 2.0
    u = min(max((yx[1] + 0.5) / w, half), 1.0 - half)
    v = min(max((yx[0] + 0.5) / h, half), 1.0 - half)
    left, top, right, bottom = view
    sx, sy = right - left, bottom - top
    return (left + (u - half) * sx, top + (v - half) * sy, left + (u + half) * sx, top + (v + half) * sy)


@dataclass(frozen=True)
class RowGeometry:
    """How a store row maps back to its photo (read from the store's attributes)."""

    views_per_image: int
    positions_per_image: int
    view_scale: tuple[float, float]
    seed: int
    max_pixels: int
    layer_hw: tuple[int, int]
    eval_crop: tuple[int, int] | None = None  # view 0's evaluation crop (collect.view0: eval), None: plain resize

    @classmethod
    def from_store(cls, store: RowStore) -> RowGeometry:
        sampling = store.sampling
        return cls(
            views_per_image=sampling.views_per_image,
            positions_per_image=sampling.positions_per_image,
            view_scale=sampling.view_scale,
            seed=sampling.seed,
            max_pixels=sampling.max_pixels,
            layer_hw=store.model.layer_hw,
            eval_crop=sampling.eval_crop,
        )

    @property
    def rows_per_image(self) -> int:
        return self.positions_per_image * self.views_per_image

    def image_and_view(self, row: int) -> tuple[int, int]:
        return row // self.rows_per_image, (row // self.positions_per_image) % self.views_per_image


def example_thumbnail(
    photo: Image.Image, geo: RowGeometry, row: int, yx: tuple[int, int], px: int, field: float
) -> Image.Image:
    """The ``px`` x ``px`` thumbnail of store row ``row`` (sampled at layer position ``yx``) cut from its
    decoded ``photo``: the view's box (:func:`view_box`), the ``field`` square around the position in
    it (:func:`example_crop_box`), resized with Lanczos (see the module docstring)."""
    image, view = geo.image_and_view(row)
    box = view_box(
        photo.width, photo.height, image, view, geo.views_per_image, geo.view_scale, geo.seed, eval_crop=geo.eval_crop
    )
    crop = example_crop_box(box, yx, geo.layer_hw, field)
    return photo.resize((px, px), resample=Image.Resampling.LANCZOS, box=crop)


def row_thumbnails(store: RowStore, rows: NDArray[np.integer], px: int, field: float) -> list[Image.Image | None]:
    """In memory, the thumbnail of every row of ``rows`` (in that order), ``None`` where its photo cannot
    be opened any more (with a warning). Each photo is decoded once. For a few rows (a notebook showing
    one cell); the tiles stage streams a whole level to disk with :func:`write_thumbnails` instead."""
    rows = np.asarray(rows, dtype=np.int64)
    out: list[Image.Image | None] = [None] * len(rows)
    if len(rows) == 0:
        return out
    geo = RowGeometry.from_store(store)
    unique = np.unique(rows)
    yx_of = dict(zip(unique.tolist(), map(tuple, store.row_values("yx", unique).tolist())))
    paths = store.image_paths()
    images = np.array([geo.image_and_view(int(r))[0] for r in rows])
    for image in np.unique(images):
        decoded = decode_rgb(str(paths[image]), geo.max_pixels)
        if decoded.image is None:
            log.warning(
                "dataset examples: photo %s cannot be opened (%s); its examples are left out",
                paths[image],
                decoded.reason,
            )
            continue
        for idx in np.flatnonzero(images == image):
            out[idx] = example_thumbnail(decoded.image, geo, int(rows[idx]), yx_of[int(rows[idx])], px, field)
    return out


def cell_examples(
    store: RowStore, level: derived.CellLevel, cell: int, k: int, distinct_photos: bool = True
) -> NDArray[np.int64]:
    """The ``k`` members of kept cell ``cell`` nearest its direction by cosine, best first.

    The tiles stage's ``members`` search (:func:`member_candidates` folded into a :class:`TopK`) for
    one cell, reading only that cell's member rows instead of streaming the whole store.
    """
    members = level.members(cell)
    per_photo = RowGeometry.from_store(store).rows_per_image if distinct_photos else 0
    picks = TopK.empty(1, k, per_photo)
    if k == 0 or len(members) == 0:
        return np.zeros(0, np.int64)
    x = unit_rows(store.row_values("activations", members))
    owner = np.zeros(len(members), np.int32)  # every row read belongs to the one cell (number 0 here)
    c, cos, local = member_candidates(owner, 0, x, unit_rows(level.direction[cell : cell + 1]))
    picks.merge(c, cos, members[local])
    return picks.rows[0][picks.rows[0] >= 0]


def write_thumbnails(
    store: RowStore, picks: TopK, out_dir: Path, rel_prefix: str, px: int, field: float, quality: int
) -> list[list[str]]:
    """Write ``<out_dir>/<cell>_<k>.jpg`` for every picked row; per cell, the written paths as
    ``<rel_prefix>/<cell>_<k>.jpg`` (best first; missing photos are left out with a warning)."""
    geo = RowGeometry.from_store(store)
    cells, ranks = np.nonzero(picks.rows >= 0)
    rows = picks.rows[cells, ranks]
    out: list[list[str]] = [[] for _ in range(len(picks.rows))]
    if len(rows) == 0:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    yx = store.row_values("yx", np.unique(rows))
    yx_of = dict(zip(np.unique(rows).tolist(), map(tuple, yx.tolist())))
    paths = store.image_paths()
    images = np.array([geo.image_and_view(int(r))[0] for r in rows])
    written: dict[tuple[int, int], str] = {}
    for image in np.unique(images):  # each photo decoded once
        decoded = decode_rgb(str(paths[image]), geo.max_pixels)
        if decoded.image is None:
            log.warning(
                "dataset examples: photo %s cannot be opened (%s); its examples are left out",
                paths[image],
                decoded.reason,
            )
            continue
        photo = decoded.image
        for idx in np.flatnonzero(images == image):
            cell, rank, row = int(cells[idx]), int(ranks[idx]), int(rows[idx])
            example_thumbnail(photo, geo, row, yx_of[row], px, field).save(
                out_dir / f"{cell}_{rank}.jpg", quality=quality
            )
            written[(cell, rank)] = f"{rel_prefix}/{cell}_{rank}.jpg"
    for (cell, _rank), rel in sorted(written.items()):
        out[cell].append(rel)
    return out
