"""What collect feeds the model: decoded views of the images a shard still has to process.

One work item is one image and the run of its views that fall inside one store block, so a
photo is decoded once however many views it yields. Items are produced in store order by a
``DataLoader`` whose worker processes decode in parallel; a file that cannot be used comes back
as a skip reason instead of pixels (never an exception, never a silent drop).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stages.images.crops import EvalCrop, render_view, view_box
from stages.images.decoding import Decoded, decode_rgb
from stages.images.sources import ImageSource

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class WorkItem:
    block: int
    image: int
    view_start: int  # first view of this image inside the block
    view_stop: int


@dataclass(frozen=True)
class ViewSettings:
    views_per_image: int
    scale: tuple[float, float]
    size: int
    seed: int
    max_pixels: int
    draft_side: int = 0  # collect.jpeg_draft: see draft_side()
    eval_crop: EvalCrop | None = None  # collect.view0=eval: (R, size), view 0 is Resize(R) + CenterCrop(size)


EVAL_RESIZE_RATIO = 256 / 224  # torchvision's classic evaluation transform: Resize(256) + CenterCrop(224)


def eval_crop_for(name: str, weights: str, size: int) -> EvalCrop:
    """``(R, size)`` of ``collect.view0: eval``: the weights' declared evaluation transform (a
    torchvision weights enum's ``transforms()``: MobileNetV2 IMAGENET1K_V1 256/224, IMAGENET1K_V2
    232/224), its resize scaled by ``size / crop`` when the model runs at another size; otherwise
    (a state-dict file, a factory model: none declares one) ``round(256 / 224 * size)``."""
    from stages.model.custom import is_import_path
    from stages.model.registry import resolve_weights_enum

    declared: tuple[int, int] | None = None
    if not is_import_path(name):
        try:
            transform = resolve_weights_enum(name, weights).transforms()
            declared = int(transform.resize_size[0]), int(transform.crop_size[0])
        except Exception:
            declared = None
    if declared is None:
        return int(round(EVAL_RESIZE_RATIO * size)), size
    resize, crop = declared
    return (resize if crop == size else int(round(resize * size / crop))), size


def draft_side(
    jpeg_draft: bool, size: int, views_per_image: int, scale: tuple[float, float], eval_crop: EvalCrop | None = None
) -> int:
    """The short side a JPEG may be draft-decoded down to without any view being upsampled: the
    whole image must keep ``size`` (``R`` when view 0 is the evaluation crop ``(R, size)``); a crop
    of area fraction ``scale[0]`` with aspect <= 4/3 has a short side >= sqrt(0.75 * scale[0]) of
    the image's short side. 0: off."""
    if not jpeg_draft:
        return 0
    whole = size if eval_crop is None else max(size, eval_crop[0])
    if views_per_image == 1:
        return whole
    return max(whole, int(math.ceil(size / math.sqrt(0.75 * scale[0]))))


def work_items(block_inputs: dict[int, range], views_per_image: int) -> list[WorkItem]:
    """Split each block's input range into (image, views) runs, in store order."""
    items: list[WorkItem] = []
    for block, inputs in block_inputs.items():
        start = inputs.start
        while start < inputs.stop:
            image = start // views_per_image
            stop = min(inputs.stop, (image + 1) * views_per_image)
            items.append(WorkItem(block, image, start - image * views_per_image, stop - image * views_per_image))
            start = stop
    return items


class ViewDataset(Dataset):
    """Item -> (item index, uint8 views [n, S, S, 3] or None, skip reason or None)."""

    def __init__(self, items: list[WorkItem], images: ImageSource | list[str], settings: ViewSettings) -> None:
        """``images``: the image source (tar members and dataset rows read from it), or plain paths."""
        self.items = items
        self.images = images
        self.settings = settings

    def _decode(self, image: int) -> Decoded:
        if isinstance(self.images, ImageSource):
            return self.images.decode(image, self.settings.max_pixels, self.settings.draft_side)
        return decode_rgb(self.images[image], self.settings.max_pixels, self.settings.draft_side)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        item = self.items[index]
        s = self.settings
        decoded = self._decode(item.image)
        if decoded.image is None:
            return index, None, decoded.reason
        width, height = decoded.image.size
        views = []
        for view in range(item.view_start, item.view_stop):
            box = view_box(width, height, item.image, view, s.views_per_image, s.scale, s.seed, eval_crop=s.eval_crop)
            views.append(np.asarray(render_view(decoded.image, box, s.size), dtype=np.uint8))
        return index, np.stack(views), None


def _identity(batch: object) -> object:
    return batch


def _init_worker(nice: int, _worker_id: int) -> None:
    """Set up one decoding worker process: lower its priority by ``nice``, and make it die with its parent.

    Priority: on a machine whose cores the model's threads fill (2 cores, torch's 2 threads), a
    decoding process at the same priority takes a core in the middle of a parallel operator and
    the model's other thread waits for it; a niced one decodes in the gaps (and at full speed
    whenever the model waits for input). ``collect.worker_nice`` (0: off); docs/collect.md.
    """
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:  # not permitted here: decode at the normal priority
            log.debug("could not lower the decoding worker's priority")
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this decoding worker when the collect process dies.

    A collect killed with SIGKILL (preemption, OOM killer, ``kill -9``) cannot stop its
    DataLoader workers; a worker blocked writing into the full result pipe never notices the
    parent is gone and lingered with ~0.5 GB each (seen after the kill/resume benchmark).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # no glibc (e.g. musl): keep torch's own parent watchdog only
        log.debug("prctl unavailable; decoding workers rely on torch's parent check")


def view_loader(dataset: ViewDataset, num_workers: int, pin_memory: bool, worker_nice: int = 0) -> DataLoader:
    """In-order loader, one item at a time (the model batches are assembled by the caller)."""
    init = functools.partial(_init_worker, worker_nice) if num_workers > 0 else None
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=init,
    )


def to_model_input(views: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S] in [0, 1], channels-last on ``device``."""
    tensor = torch.from_numpy(views).to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def to_normalized_input(
    views: np.ndarray, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """:func:`to_model_input` then ``(x - mean) / std`` in place: the same values as the model's
    ``normalize`` bit for bit (the same operations in the same order), without two more batch-sized
    buffers per batch."""
    x = to_model_input(views, device)
    shape = (1, len(mean), 1, 1)
    x.sub_(torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape))
    return x.div_(torch.tensor(std, device=x.device, dtype=x.dtype).view(shape))
