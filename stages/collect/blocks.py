"""Buffers of the store blocks a collect run is filling, written whole when complete.

Writing a whole zarr chunk at once is ~50x faster than many small writes into it (docs/method.md §10), and
a block written whole then marked done is the unit of resumption, so results are buffered per
block until every input of the block has either been stored or skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from store.atlas_store import AtlasStore, BlockData
from store.schema import STATUS_FIRST_SKIP, STATUS_STORED


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash (splitmix64's finaliser): independent draws from consecutive ids."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def interior_positions(inputs: range, positions: int, height: int, width: int, border: int, seed: int) -> np.ndarray:
    """[len(inputs), positions, 2] interior (y, x), uniform over the non-border cells.

    The article avoided edge positions; ``border`` cells are excluded on every side. Each draw
    is a pure function of (seed, input, position), so a resumed, sharded or re-chunked run
    samples exactly the same positions.
    """
    ids = (
        np.arange(inputs.start, inputs.stop, dtype=np.uint64)[:, None] * np.uint64(positions)
        + np.arange(positions, dtype=np.uint64)[None, :]
    )
    with np.errstate(over="ignore"):
        h = _splitmix64(ids ^ _splitmix64(np.full(ids.shape, seed, np.uint64)))
    span_y, span_x = height - 2 * border, width - 2 * border
    ys = border + (h & np.uint64(0xFFFFFFFF)) % np.uint64(span_y)
    xs = border + (h >> np.uint64(32)) % np.uint64(span_x)
    return np.stack([ys, xs], axis=-1).astype(np.int16)


def image_positions(inputs: range, positions: int, margin: float, seed: int) -> np.ndarray:
    """[len(inputs), positions, 2] float64 (v, u) in image coordinates: fractions of the view's height
    and width, uniform over ``[margin, 1 - margin)``.

    The draw is a pure function of (seed, input, position) like :func:`interior_positions`, and of
    nothing about the layer, so two stores of the same inputs and seed (another layer, another
    model) get the same image locations: :func:`to_layer_grid` maps them onto each layer's grid.
    """
    ids = (
        np.arange(inputs.start, inputs.stop, dtype=np.uint64)[:, None] * np.uint64(positions)
        + np.arange(positions, dtype=np.uint64)[None, :]
    )
    with np.errstate(over="ignore"):
        h = _splitmix64(ids ^ _splitmix64(np.full(ids.shape, seed, np.uint64)))
    unit = np.stack([(h & np.uint64(0xFFFFFFFF)), (h >> np.uint64(32))], axis=-1).astype(np.float64) / 2.0**32
    return margin + unit * (1.0 - 2.0 * margin)


def to_layer_grid(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image-coordinate (v, u) fractions -> the (y, x) cell of an ``height x width`` layer that holds them.

    Cell ``(y, x)`` of a layer that covers the view with an ``H x W`` grid spans image fractions
    ``[y / H, (y + 1) / H) x [x / W, (x + 1) / W)`` (its receptive field is centred there), so a point
    falls in cell ``floor(v * H), floor(u * W)``: a 7 x 7 and a 14 x 14 layer map one point to cells
    that cover the same place of the image.
    """
    y = np.minimum(np.floor(points[..., 0] * height), height - 1)
    x = np.minimum(np.floor(points[..., 1] * width), width - 1)
    return np.stack([y, x], axis=-1).astype(np.int16)


class _Block:
    def __init__(self, store: AtlasStore, block: int, channels: int, trailing: dict[str, int]) -> None:
        self.inputs = store.block_input_range(block)
        rows = len(store.block_row_range(block))
        self.status = np.zeros(len(self.inputs), np.uint8)
        self.activations = np.zeros((rows, channels), np.float32)
        self.rows: dict[str, np.ndarray] = {
            "yx": np.full((rows, 2), -1, np.int16),
            "top_pred_idx": np.full((rows, trailing["top_predictions"]), -1, np.int16),
            "top_pred_logit": np.zeros((rows, trailing["top_predictions"]), np.float32),
            "attr_idx": np.full((rows, trailing["top_k"]), -1, np.int16),
            "attr_val": np.zeros((rows, trailing["top_k"]), np.float32),
            "attr_label": np.full(rows, np.nan, np.float32),
        }
        self.filled = 0


class BlockAssembler:
    """Collects per-input results and writes each block as soon as all its inputs are in."""

    def __init__(
        self,
        store: AtlasStore,
        skip_reasons: tuple[str, ...],
        top_k: int,
        top_predictions: int,
        on_block_written: Callable[[int, int], None] | None = None,
    ) -> None:
        self.store = store
        self.positions = store.positions_per_image
        self.skip_codes = {reason: STATUS_FIRST_SKIP + i for i, reason in enumerate(skip_reasons)}
        self.trailing = {"top_k": top_k, "top_predictions": top_predictions}
        self.open: dict[int, _Block] = {}
        self.on_block_written = on_block_written
        self.stored = 0
        self.skipped: dict[str, int] = {}

    def _block(self, block: int) -> _Block:
        if block not in self.open:
            self.open[block] = _Block(self.store, block, self.store.channels, self.trailing)
        return self.open[block]

    def skip(self, block: int, inputs: range, reason: str) -> None:
        buf = self._block(block)
        buf.status[inputs.start - buf.inputs.start : inputs.stop - buf.inputs.start] = self.skip_codes[reason]
        buf.filled += len(inputs)
        self.skipped[reason] = self.skipped.get(reason, 0) + len(inputs)
        self._maybe_write(block)

    def store_input(self, block: int, input_index: int, activations: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """``activations`` [P, C]; ``values`` per-row arrays with a leading P axis."""
        buf = self._block(block)
        local = input_index - buf.inputs.start
        rows = slice(local * self.positions, (local + 1) * self.positions)
        buf.activations[rows] = activations
        for name, value in values.items():
            buf.rows[name][rows] = value
        buf.status[local] = STATUS_STORED
        buf.filled += 1
        self.stored += 1
        self._maybe_write(block)

    def _maybe_write(self, block: int) -> None:
        buf = self.open[block]
        if buf.filled < len(buf.inputs):
            return
        self.store.write_block(block, BlockData(status=buf.status, activations=buf.activations, rows=buf.rows))
        del self.open[block]
        if self.on_block_written is not None:
            self.on_block_written(block, len(buf.inputs))

    @property
    def unfinished(self) -> list[int]:
        return sorted(self.open)
