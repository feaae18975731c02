"""Collect stage: random interior activations of one layer, with logits and attributions.

docs/method.md §1-§2. Per input (an image or one of its deterministic views) the trunk runs
to the layer, ``positions_per_image`` interior positions are sampled (seeded per store block),
and — unless the head is switched off — one forward-mode product per position through the head
gives the logits and the attribution of that position to every class at once. Results go to the
store block by block; a block is the unit of resumption and of sharding.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stages.collect.attribution import HeadJVP, position_tangents, top_k
from stages.collect.blocks import BlockAssembler, image_positions, interior_positions, to_layer_grid
from stages.collect.inputs import (
    ViewDataset,
    ViewSettings,
    WorkItem,
    draft_side,
    eval_crop_for,
    to_normalized_input,
    view_loader,
    work_items,
)
from stages.config import CollectConfig
from stages.context import StageContext
from stages.images.class_names import label_classes
from stages.images.crops import EvalCrop
from stages.images.decoding import SKIP_REASONS
from stages.images.sources import ImageSource, open_image_source, subsample
from stages.model.registry import LoadedModel, load_model
from stages.sections import CollectSection
from store.atlas_store import AtlasStore, StoreSpec
from store.errors import AtlasError
from store.shards import shard_blocks

log = logging.getLogger(__name__)


@dataclass
class CollectSummary:
    store: str
    shard: tuple[int, int]
    blocks_run: int
    inputs_run: int
    stored: int
    skipped: dict[str, int]
    seconds: float  # the whole run
    setup_seconds: float = 0.0  # model load, store open/creation, before the first input
    input_wait_seconds: float = 0.0  # waiting for the decoding workers' next item (the first one included)
    store_counts: dict[str, int] = field(default_factory=dict)
    missing_blocks: int = 0

    @property
    def inputs_per_second(self) -> float:
        """Steady-state throughput: inputs over the processing time (setup excluded)."""
        busy = self.seconds - self.setup_seconds
        return self.inputs_run / busy if busy > 0 else 0.0


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    import dask
    import PIL
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "zarr": version("zarr"),
        "dask": dask.__version__,
        "pillow": PIL.__version__,
    }


def store_spec(config: CollectSection, model: LoadedModel, source: ImageSource) -> StoreSpec:
    c = config.collect
    sampling = {
        "views_per_image": c.views_per_image,
        "view_scale": list(c.view_scale),
        "positions_per_image": c.positions_per_image,
        "border": c.border,
        "seed": c.seed,
        "dtype": c.dtype,
        "rows_per_chunk": c.rows_per_chunk,
        "head": c.head,
        "top_k": c.top_k,
        "top_predictions": c.top_predictions,
        "max_pixels": c.max_pixels,
    }
    if c.image_margin is not None:  # recorded only when on: stores sampled over the layer keep their identity
        sampling["image_margin"] = c.image_margin
    if c.jpeg_draft:  # recorded only when on, as image_margin: JPEGs decoded at reduced scale
        sampling["jpeg_draft"] = True
    eval_crop = view0_eval_crop(config)
    if eval_crop is not None:  # recorded only when not the plain resize: earlier stores keep their identity
        sampling["view0"] = {"transform": "eval", "resize": eval_crop[0], "crop": eval_crop[1]}
    dataset = {
        "source": str(config.data.source),
        "kind": source.kind,
        "fingerprint": source.fingerprint(),
        "n_images": len(source.records),
    }
    if config.data.labels:  # recorded only when set: stores made before these options keep their identity
        dataset["labels"] = str(config.data.labels)
    if source.selection:  # the subsample drawn (data.max_images / data.per_class, collect.seed)
        dataset["selection"] = source.selection
    return StoreSpec(
        model=model.identity(),
        dataset=dataset,
        sampling=sampling,
        channels=model.layer_shape[0],
        n_images=len(source.records),
        views_per_image=c.views_per_image,
        positions_per_image=c.positions_per_image,
        rows_per_chunk=c.rows_per_chunk,
        dtype=c.dtype,
        top_k=c.top_k,
        top_predictions=c.top_predictions,
    )


def view0_eval_crop(config: CollectSection) -> EvalCrop | None:
    """``collect.view0``: None for the plain resize of the whole image, ``(R, S)`` for the evaluation crop."""
    if config.collect.view0 == "resize":
        return None
    m = config.model
    return eval_crop_for(m.name, m.weights, m.image_size)


def _check_geometry(config: CollectSection, model: LoadedModel) -> None:
    _, h, w = model.layer_shape
    b = config.collect.border
    if config.collect.image_margin is not None:
        return  # positions come from image coordinates (collect.image_margin); every one maps to a cell
    if h - 2 * b < 1 or w - 2 * b < 1:
        raise AtlasError(
            f"collect.border={b} leaves no interior position in layer {model.layer} "
            f"({h}x{w}); lower collect.border or pick an earlier layer"
        )


class _ModelStep:
    """Runs one model batch and hands every input's rows to the assembler."""

    def __init__(
        self,
        config: CollectSection,
        model: LoadedModel,
        store: AtlasStore,
        assembler: BlockAssembler,
        label_class: np.ndarray,
    ) -> None:
        self.c = config.collect
        self.model = model
        self.store = store
        self.assembler = assembler
        self.label_class = label_class
        _, self.h, self.w = model.layer_shape
        self.positions: dict[int, np.ndarray] = {}
        self.head_jvp = HeadJVP(model.head) if self.c.head else None

    def _positions(self, block: int, input_index: int) -> np.ndarray:
        if block not in self.positions:
            inputs = self.store.block_input_range(block)
            if self.c.image_margin is None:
                self.positions[block] = interior_positions(
                    inputs, self.c.positions_per_image, self.h, self.w, self.c.border, self.c.seed
                )
            else:  # the same image locations whatever the layer (stages/align)
                points = image_positions(inputs, self.c.positions_per_image, self.c.image_margin, self.c.seed)
                self.positions[block] = to_layer_grid(points, self.h, self.w)
        return self.positions[block][input_index - self.store.block_input_range(block).start]

    def __call__(self, batch: list[tuple[WorkItem, int, np.ndarray]]) -> None:
        """``batch``: (work item, input index, uint8 view [S, S, 3]) triples."""
        m, c, p = self.model, self.c, self.c.positions_per_image
        views = np.stack([v for _, _, v in batch])
        yx = np.stack([self._positions(item.block, idx) for item, idx, _ in batch])  # [B, P, 2]
        x = to_normalized_input(views, m.device, m.mean, m.std)
        with torch.inference_mode():
            act, *cuts = m.trunk(x)
        yx_t = torch.from_numpy(yx.astype(np.int64)).to(m.device)
        batch_idx = torch.arange(len(batch), device=m.device)
        rows = act[batch_idx[:, None], :, yx_t[..., 0], yx_t[..., 1]]  # [B, P, C]
        out: dict[str, np.ndarray] = {"yx": yx}
        if self.head_jvp is not None:
            labels = self.label_class[[item.image for item, _, _ in batch]]
            attr_idx, attr_val, attr_lab = [], [], []
            # logits and the attribution of all P positions in one pass through the head (one
            # primal pass, P tangents batched: stages/collect/attribution.py, docs/collect.md)
            logits, attrs = self.head_jvp.jvp(act, tuple(cuts), position_tangents(act, yx_t))
            with torch.no_grad():
                for pos in range(p):
                    attr = attrs[pos]
                    ai, av = top_k(attr, c.top_k)
                    attr_idx.append(ai)
                    attr_val.append(av)
                    lab = torch.from_numpy(np.maximum(labels, 0)).to(m.device)
                    lab_val = attr.gather(1, lab[:, None])[:, 0].float().cpu().numpy()
                    attr_lab.append(np.where(labels >= 0, lab_val, np.nan))
                pi, pv = top_k(logits, c.top_predictions)
            out["attr_idx"] = torch.stack(attr_idx, 1).cpu().numpy()
            out["attr_val"] = torch.stack(attr_val, 1).float().cpu().numpy()
            out["attr_label"] = np.stack(attr_lab, 1)
            out["top_pred_idx"] = np.repeat(pi.cpu().numpy()[:, None], p, axis=1)
            out["top_pred_logit"] = np.repeat(pv.float().cpu().numpy()[:, None], p, axis=1)
        rows_np = rows.float().cpu().numpy()
        for b, (item, idx, _) in enumerate(batch):
            self.assembler.store_input(item.block, idx, rows_np[b], {k: v[b] for k, v in out.items()})


def open_collect_store(config: CollectSection, model: LoadedModel, source: ImageSource) -> AtlasStore:
    """Create or reopen the store for this configuration; write the image table once."""
    extra = {
        "class_names": model.class_names,
        "label_names": list(source.label_names),
        "skip_reasons": list(SKIP_REASONS),
        "versions": library_versions(),
        "params": config.record if config.record is not None else config.model_dump(mode="json", exclude={"record"}),
    }
    store = AtlasStore.create_or_open(config.data.store, store_spec(config, model, source), extra)
    if not store.images_written:
        labels = np.asarray(source.labels, np.int32)
        classes = label_classes(list(source.label_names), model.class_names)
        per_image = np.where(labels >= 0, classes[np.maximum(labels, 0)] if classes.size else -1, -1)
        warning = unmatched_labels_warning(list(source.label_names), classes, str(config.data.source))
        if warning:
            log.warning(warning)
        store.write_images(source.paths(), labels, per_image.astype(np.int32))
        store.mark_images_written()
    return store


def unmatched_labels_warning(label_names: list[str], classes: np.ndarray, where: str) -> str | None:
    """One line when a labelled-looking source has labels and none of them is a model class."""
    if not label_names or (np.asarray(classes) >= 0).any():
        return None
    shown = ", ".join(repr(n) for n in label_names[:3]) + (", ..." if len(label_names) > 3 else "")
    return (
        f"{where}: none of its {len(label_names)} labels ({shown}) is a class of the model, so label attribution, "
        "label search and label colouring will be empty; name label folders by WNID (n01440764), class name or "
        "index (281_tabby), or pass --labels FILE.csv"
    )


def open_source(config: CollectSection) -> ImageSource:
    """``data.source`` with ``data.labels``, and the subsample ``data.max_images`` / ``data.per_class`` asks for."""
    d = config.data
    source = open_image_source(d.source, d.labels, d.image_column, d.label_column)
    for note in source.notes:
        log.warning(note)
    return subsample(source, d.max_images, d.per_class, config.collect.seed)


def _view_loader(config: CollectSection, items: list[WorkItem], source: ImageSource, model: LoadedModel) -> Any:
    """The decoding workers' loader of every work item's views (collect's crops, ``collect.view0``)."""
    c = config.collect
    eval_crop = view0_eval_crop(config)
    settings = ViewSettings(
        c.views_per_image,
        c.view_scale,
        config.model.image_size,
        c.seed,
        c.max_pixels,
        draft_side(c.jpeg_draft, config.model.image_size, c.views_per_image, c.view_scale, eval_crop),
        eval_crop,
    )
    return view_loader(
        ViewDataset(items, source, settings),
        c.num_workers,
        pin_memory=model.device.type == "cuda",
        worker_nice=c.worker_nice,
    )


def _feed(
    loader: Any,
    items: list[WorkItem],
    step: _ModelStep,
    assembler: BlockAssembler,
    c: CollectConfig,
    report: Callable[[int], None],
) -> float:
    """Run the model over every decoded view in batches of ``collect.batch_size``, never across two
    blocks; the seconds the model waited for decoded views (docs/collect.md, bench/decode.py)."""
    pending: list[tuple[WorkItem, int, np.ndarray]] = []
    input_wait = 0.0

    def run_batches(views: list[tuple[WorkItem, int, np.ndarray]]) -> None:
        for begin in range(0, len(views), c.batch_size):
            batch = views[begin : begin + c.batch_size]
            step(batch)
            report(len(batch))

    waited = time.perf_counter()
    for index, views, reason in loader:
        input_wait += time.perf_counter() - waited
        item = items[index]
        first = item.image * c.views_per_image
        if pending and pending[0][0].block != item.block:
            # Batches never span two blocks: every block then sees the same batches whether the
            # run is whole, sharded or resumed, so results are bit-identical across all three.
            run_batches(pending)
            pending = []
        if views is None:
            assembler.skip(item.block, range(first + item.view_start, first + item.view_stop), reason or "decode_error")
            report(item.view_stop - item.view_start)
            waited = time.perf_counter()
            continue
        for k, view in enumerate(range(item.view_start, item.view_stop)):
            pending.append((item, first + view, views[k]))
        full = len(pending) - len(pending) % c.batch_size
        run_batches(pending[:full])
        pending = pending[full:]
        waited = time.perf_counter()
    run_batches(pending)
    return input_wait


def run(config: CollectSection, ctx: StageContext) -> CollectSummary:
    """Collect the pending blocks of shard ``ctx.shard`` (``i/n``) into ``data.store``.

    ``ctx.progress(n)`` is called with the number of inputs finished since the last call;
    ``ctx.on_start(total)`` once with the number of inputs this run will process. ``ctx.device``
    (else ``collect.device``) runs the model.
    """
    shard = ctx.shard
    t0 = time.perf_counter()
    c = config.collect
    source = ctx.source if ctx.source is not None else open_source(config)
    model = load_model(config.model, ctx.device_for(c.device))
    _check_geometry(config, model)
    store = open_collect_store(config, model, source)
    mine = shard_blocks(store.n_blocks, *shard)
    blocks = store.pending_blocks(mine)
    block_inputs = {b: store.block_input_range(b) for b in blocks}
    total = sum(len(r) for r in block_inputs.values())
    if ctx.on_start:
        ctx.on_start(total)
    log.info("shard %d/%d: %d of %d blocks pending (%d inputs)", *shard, len(blocks), len(mine), total)

    assembler = BlockAssembler(store, SKIP_REASONS, c.top_k, c.top_predictions)
    step = _ModelStep(config, model, store, assembler, store.image_label_classes())
    items = work_items(block_inputs, c.views_per_image)
    loader = _view_loader(config, items, source, model)
    setup_seconds = time.perf_counter() - t0
    input_wait = _feed(loader, items, step, assembler, c, ctx.progress or (lambda _n: None))
    if assembler.unfinished:
        raise RuntimeError(f"blocks {assembler.unfinished} were not completed; this is a bug")

    seconds = time.perf_counter() - t0
    summary = CollectSummary(
        store=str(store.path),
        shard=shard,
        blocks_run=len(blocks),
        inputs_run=total,
        stored=assembler.stored,
        skipped=dict(assembler.skipped),
        seconds=seconds,
        setup_seconds=setup_seconds,
        input_wait_seconds=input_wait,
    )
    store.record_run_summary({"shard": list(shard), "inputs_run": total, "seconds": round(seconds, 2)})
    summary.store_counts = store.counts()
    summary.missing_blocks = len(store.pending_blocks())
    return summary
