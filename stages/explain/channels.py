"""The channel view (the Deep Visualization Toolbox of Yosinski et al., 2015, as a static figure).

DeepVis shows, for the image in front of the camera, every channel's activation map at a layer,
and next to the selected channel its deconvolution, its optimised image and the dataset patches
that excite it most. Here, for the ``explain.channels`` channels with the largest mean
activation on the image at the atlas layer:

- the activation map (``[h, w]``);
- the channel's feature visualization (the ``render-unit channel:N`` objective, lucid's
  ``objectives.channel``: the spatial mean of the channel), all channels in one batch;
- its top dataset patches: the store rows whose activation on that channel is largest, at most
  one per photo (views of one photo overlap), cut from their photos around the sampled position
  the way the viewer's dataset examples are (:func:`stages.tiles.dataset_examples.row_thumbnails`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from stages.featurevis import Channel, FourierImage, layer_forward, render
from stages.tiles.dataset_examples import RowGeometry, TopK, row_thumbnails
from store import derived
from store.view import RowStore


def strongest_channels(acts: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """The ``k`` channels of ``acts [h, w, C]`` with the largest spatial mean, strongest first."""
    mean = np.asarray(acts, np.float64).mean(axis=(0, 1))
    k = min(k, len(mean))
    order = np.lexsort((np.arange(len(mean)), -mean))  # ties: the smaller channel index first
    return order[:k].astype(np.int64)


def top_rows_per_channel(
    store: RowStore, channels: NDArray[np.integer], k: int, distinct_photos: bool = True
) -> NDArray[np.int64]:
    """``[len(channels), k]`` store rows with the largest activation on each channel (-1: fewer).

    One streamed pass over the store's activations, a running top-k per channel (the tiles stage's
    :class:`~stages.tiles.dataset_examples.TopK`, which also keeps one row per photo).
    """
    channels = np.asarray(channels, np.int64)
    per_photo = RowGeometry.from_store(store).rows_per_image if distinct_photos else 0
    found = TopK.empty(len(channels), k, per_photo)
    if k == 0 or len(channels) == 0:
        return found.rows
    valid = np.asarray(store.valid_mask(), bool)
    # one row per photo: a block's best k * R rows of a channel hold the best row of each of its top-k photos
    take = k * per_photo if per_photo else k
    for block in derived.iter_row_blocks([store.activations()]):
        x = np.asarray(block.arrays[0][:, channels], np.float32)  # [rows, K]
        keep = np.flatnonzero(valid[block.start : block.stop])
        if len(keep) == 0:
            continue
        x = x[keep]
        n = min(take, len(keep))
        best = (
            np.argpartition(-x, n - 1, axis=0)[:n]
            if n < len(keep)
            else np.tile(np.arange(len(keep))[:, None], (1, len(channels)))
        )
        cells = np.repeat(np.arange(len(channels))[None], best.shape[0], axis=0)
        values = np.take_along_axis(x, best, axis=0)
        found.merge(cells.ravel(), values.ravel(), keep[best].ravel() + block.start)
    return found.rows


def channel_patches(store: RowStore, rows: NDArray[np.int64], px: int, field: float) -> list[list[NDArray[np.uint8]]]:
    """The thumbnails of :func:`top_rows_per_channel`'s rows, per channel (missing photos left out)."""
    flat = rows[rows >= 0]
    images = row_thumbnails(store, flat, px, field)
    out: list[list[NDArray[np.uint8]]] = []
    it = iter(images)
    for line in rows:
        out.append([np.asarray(im) for im in (next(it) for _ in range(int((line >= 0).sum()))) if im is not None])
    return out


def render_channels(
    module: torch.nn.Module,
    normalize,
    layer: str,
    channels: Sequence[int] | NDArray[np.integer],
    size: int,
    steps: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> NDArray[np.uint8]:
    """Each channel's feature visualization ``[K, size, size, 3]``, rendered as one batch."""
    with layer_forward(module, layer, normalize=normalize) as forward:
        result = render(
            forward,
            Channel(layer, [int(c) for c in channels]),
            FourierImage(len(channels), (size, size)),
            steps=steps,
            lr=lr,
            device=device,
            seed=seed,
        )
    return result.images
