"""The render stage: one feature-visualization icon per kept cell of every zoom level.

docs/method.md §5-§6: each cell's icon maximises the atlas objective ``dot * cos^p`` on the
cell's direction (its mean activation), whitened ``v S`` when ``render.whiten``, at the layer's
centre position; Fourier-parameterised 80 px images, Adam 0.05, transformation robustness,
``render.steps`` steps (production 1024), best of ``render.attempts`` (production 4), the cells of a
batch optimised together (production batch 100). The engine is :mod:`stages.featurevis`.

Resumable and shardable like collect: the unit is a render batch of one level; its icons,
final objective and cos-sim are written to the icons group (:mod:`store.icons`) and the batch is
then marked done. Batch ``b`` of level ``n`` is seeded by ``(seed, n, b)`` alone, so a resumed,
sharded or whole CPU run gives bit-identical icons.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from stages.config import RenderConfig
from stages.context import StageContext
from stages.featurevis import AtlasDirection, FourierImage, layer_forward, render, spatial
from stages.featurevis.fold_bn import fold_batchnorm
from stages.featurevis.forward import Forward
from stages.featurevis.maco import MacoImage
from stages.featurevis.param import ImageParam
from stages.featurevis.speed import Speed, fast_layer_forward
from stages.model.registry import LoadedModel, load_model
from stages.render import compile_cache, tune
from stages.sections import RenderSection
from store import derived
from store.errors import AtlasError
from store.icons import IconsSpec, IconStore
from store.shards import shard_blocks
from store.view import RowStore

log = logging.getLogger(__name__)

# Fraction of the free CUDA memory a render batch may take (the rest: allocator slack, cuDNN
# workspaces, other processes that allocate after we measured).
_CUDA_MEMORY_FRACTION = 0.6
_RENDER_PARAMS = (
    "size",
    "steps",
    "attempts",
    "batch_size",
    "lr",
    "cos_power",
    "cosine",
    "whiten",
    "seed",
    "levels",
    "param",
)


@dataclass(frozen=True)
class RenderSummary:
    """What one (shard of a) render run did."""

    icons_path: str
    shard: tuple[int, int]
    levels: dict[int, int]  # N -> kept cells
    batches_run: int
    icons_run: int
    icons_done: int  # over all levels, this run's and earlier runs'
    icons_total: int
    batch_size: int  # the largest batch actually optimised at once
    seconds: float
    mean_objective: float  # over this run's icons (nan if none)
    mean_cossim: float
    cossim_quantiles: dict[str, float] = field(default_factory=dict)

    @property
    def icons_per_second(self) -> float:
        return self.icons_run / self.seconds if self.seconds > 0 else 0.0


def run(config: RenderSection, ctx: StageContext) -> RenderSummary:
    """Render the pending batches of shard ``ctx.shard`` (``i/n``) of every level in ``render.levels``.

    ``ctx.on_start(total)`` is called once with the icons this run will render, ``ctx.progress(k)``
    after each batch with the ``k`` icons it finished. ``ctx.model`` skips reloading the classifier
    (it must be ``load_model(config.model, device)``'s equal); ``ctx.device`` else ``render.device``.
    """
    store, shard, progress, on_start = ctx.require_store("render"), ctx.shard, ctx.progress, ctx.on_start
    device = ctx.model.device if ctx.device is None and ctx.model is not None else ctx.device_for(config.render.device)
    t0 = time.perf_counter()
    r = config.render
    model = ctx.model if ctx.model is not None else load_model(config.model, device)
    _check_model(store, model)
    cells = {n: derived.read_level(store, n, with_attribution=False) for n in _levels(r, store)}
    whitening = torch.as_tensor(derived.read_whitening(store).matrix, dtype=torch.float32) if r.whiten else None
    icons = IconStore.open_for_render(store.derived_path("icons"), _spec(r, store, model, cells))
    work = [(n, b) for n in cells for b in range(icons.n_batches(n))]
    done = {n: icons.done(n) for n in cells}
    pending = [(n, b) for n, b in (work[k] for k in shard_blocks(len(work), *shard)) if not done[n][b]]
    total = sum(len(icons.batch_range(n, b)) for n, b in pending)
    if on_start is not None:
        on_start(total)
    log.info(
        "render shard %d/%d: %d batches pending (%d icons, %d steps x %d attempts, %d px)",
        *shard,
        len(pending),
        total,
        r.steps,
        r.attempts,
        r.size,
    )
    cap = _batch_cap(model, r, device)
    objectives, cossims, cap = _render_pending(
        model, r, device, cap, pending, icons=icons, cells=cells, whitening=whitening, progress=progress
    )
    return _summarise(
        icons, shard, cells, len(pending), total, min(cap, r.batch_size), time.perf_counter() - t0, objectives, cossims
    )


def _render_pending(
    model: LoadedModel,
    r: RenderConfig,
    device: torch.device,
    cap: int,
    pending: list[tuple[int, int]],
    *,
    icons: IconStore,
    cells: dict[int, derived.CellLevel],
    whitening: torch.Tensor | None,
    progress: Callable[[int], None] | None,
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]], int]:
    """Render and write the ``pending`` (level, batch) pairs, returning each batch's objectives and
    centre cos-sims and the batch cap used (``render.tune: true`` may lower ``cap``). The network
    is folded and cut once for all batches, and the thread count the tuner picks is put back
    afterwards, so the caller's process is left as it was."""
    objectives, cossims = [], []
    module = fold_batchnorm(model.module, model.layer, model.normalize)  # same values, ~25% faster steps
    if r.compile:
        compile_cache.configure()
    threads = torch.get_num_threads()
    speed = Speed(channels_last=r.channels_last, compile=r.compile)
    with fast_layer_forward(module, model.layer, model.normalize, speed) as (forward, fast), _restore_threads(threads):
        if r.tune and pending:
            choice = tune.tuned(forward, model.layer, r.size, cap, device, _tune_key(model, r))
            torch.set_num_threads(choice.threads)
            cap = min(cap, choice.batch)
        for n, b in pending:
            rows = icons.batch_range(n, b)
            directions = torch.as_tensor(cells[n].direction[rows.start : rows.stop], dtype=torch.float32)
            images, objective = render_batch(
                forward,
                model.layer,
                directions,
                whitening,
                r,
                device,
                seeds=[batch_seed(r.seed, n, b, k) for k in range(-(-len(rows) // cap))],
                cap=cap,
                fast_forward=fast,
            )
            cossim = centre_cossim(forward, model.layer, images, directions, device)
            icons.write_batch(n, b, images, objective, cossim)
            objectives.append(objective)
            cossims.append(cossim)
            if progress is not None:
                progress(len(rows))
    return objectives, cossims, cap


def render_batch(
    forward: Forward,
    layer: str,
    directions: torch.Tensor,
    whitening: torch.Tensor | None,
    r: RenderConfig,
    device: torch.device,
    seeds: list[int],
    cap: int,
    fast_forward: Forward | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """Icons ``uint8 [B, S, S, 3]`` and final objectives for ``directions [B, C]``.

    Rendered in sub-batches of at most ``cap`` (the CUDA memory cap or the tuned batch), sub-batch
    ``k`` seeded by ``seeds[k]``; with no cap below the batch size there is one sub-batch.
    ``fast_forward`` (:func:`stages.featurevis.speed.fast_layer_forward`) runs the plain steps.
    """
    images, objective = [], []
    for k, start in enumerate(range(0, directions.shape[0], cap)):
        part = directions[start : start + cap]
        result = render(
            forward,
            AtlasDirection(layer, part, whitening=whitening, cos_power=r.cos_power, cosine=r.cosine),
            image_param(r, part.shape[0]),
            steps=r.steps,
            attempts=r.attempts,
            lr=r.lr,
            device=device,
            seed=seeds[k],
            mixed_precision=r.mixed_precision,
            cpu_bf16=r.cpu_bf16,
            fast_forward=fast_forward,
        )
        images.append(result.images)
        objective.append(result.objective)
    return np.concatenate(images), np.concatenate(objective)


def image_param(r: RenderConfig, batch: int) -> ImageParam:
    """The image parameterisation ``render.param`` names, for a batch of ``batch`` icons."""
    if r.param == "maco":
        return MacoImage(batch, (r.size, r.size))
    return FourierImage(batch, (r.size, r.size))


def centre_cossim(
    forward: Forward, layer: str, images: NDArray[np.uint8], directions: torch.Tensor, device: torch.device
) -> NDArray[np.float32]:
    """cos(h, v) of each icon's centre activation ``h`` (position (H//2, W//2), docs/method.md §5)
    with its raw, unwhitened cell direction ``v``, on the stored uint8 icon, no transforms."""
    with torch.no_grad():
        x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float() / 255.0
        acts = spatial(forward(x)[layer].float())  # a token layer as its patch grid
        h = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
        cos = torch.nn.functional.cosine_similarity(h, directions.to(device).float(), dim=1, eps=1e-8)
    return cos.cpu().numpy().astype(np.float32)


@contextlib.contextmanager
def _restore_threads(threads: int) -> Iterator[None]:
    """Give the process its intra-op thread count back however the block ends (``render.tune``)."""
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _tune_key(model: LoadedModel, r: RenderConfig) -> str:
    """What a tuned choice depends on besides the device and icon size."""
    flags = f"channels_last={r.channels_last},cpu_bf16={r.cpu_bf16},mixed_precision={r.mixed_precision}"
    sha = (model.weights_sha256 or "")[:12]
    return f"{model.name}|{sha}|{model.layer}|{flags}"


def batch_seed(seed: int, level: int, batch: int, part: int = 0) -> int:
    """The seed of batch ``batch`` of level ``level`` (sub-batch ``part`` when capped)."""
    return int(np.random.SeedSequence([seed, level, batch, part]).generate_state(1, np.uint64)[0] >> 1)


def _levels(r: RenderConfig, store: RowStore) -> list[int]:
    available = derived.grid_levels(store)
    if r.levels is None:
        return available
    missing = [n for n in r.levels if n not in available]
    if missing:
        raise AtlasError(f"render.levels {missing} are not grid levels; choose from: {', '.join(map(str, available))}")
    return sorted(set(r.levels))


def _check_model(store: RowStore, model: LoadedModel) -> None:
    """The icons must come from the model and layer the store's activations came from."""
    for key, have in (("name", model.name), ("layer", model.layer), ("weights_sha256", model.weights_sha256)):
        recorded = getattr(store.model, key)
        if recorded is not None and recorded != have:
            raise AtlasError(
                f"store {store.path} was collected with model.{key}={recorded!r} but render "
                f"loads {have!r}; use the collect run's model settings"
            )


def _spec(r: RenderConfig, store: RowStore, model: LoadedModel, cells: dict[int, derived.CellLevel]) -> IconsSpec:
    params = {k: v for k, v in r.model_dump(mode="json").items() if k in _RENDER_PARAMS}
    params["levels"] = sorted(cells)
    return IconsSpec(
        grid=derived.current_grid(store, cells).as_json(),
        model={"name": model.name, "weights_sha256": model.weights_sha256, "layer": model.layer},
        params=params,
        levels={n: len(level) for n, level in cells.items()},
        size=r.size,
        batch_size=r.batch_size,
    )


def _batch_cap(model: LoadedModel, r: RenderConfig, device: torch.device) -> int:
    """``render.batch_size``, or on CUDA fewer if a batch would not fit in the free memory.

    Measures the peak memory of one forward/backward of two padded images (docs/method.md §6
    pads by 16 px) and divides the free memory by it.
    """
    if device.type != "cuda":
        return r.batch_size
    side = r.size + 32
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.rand(2, 3, side, side, device=device, requires_grad=True)
    with layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        forward(x)[model.layer].float().square().sum().backward(inputs=[x])
    per_icon = max(1, (torch.cuda.max_memory_allocated(device) - base) // 2)
    del x
    free, _ = torch.cuda.mem_get_info(device)
    cap = max(1, min(r.batch_size, int(free * _CUDA_MEMORY_FRACTION // per_icon)))
    if cap < r.batch_size:
        log.warning(
            "render batch capped at %d (of %d) by free GPU memory (%.1f GiB free, ~%.0f MiB per icon)",
            cap,
            r.batch_size,
            free / 2**30,
            per_icon / 2**20,
        )
    return cap


def _summarise(
    icons: IconStore,
    shard: tuple[int, int],
    cells: dict[int, derived.CellLevel],
    batches: int,
    total: int,
    batch_size: int,
    seconds: float,
    objectives: list[NDArray[np.float32]],
    cossims: list[NDArray[np.float32]],
) -> RenderSummary:
    obj = np.concatenate(objectives) if objectives else np.zeros(0, np.float32)
    cos = np.concatenate(cossims) if cossims else np.zeros(0, np.float32)
    done = sum(len(icons.batch_range(n, b)) for n in cells for b in np.flatnonzero(icons.done(n)).tolist())
    quantiles = {f"q{int(q * 100)}": float(np.quantile(cos, q)) for q in (0.1, 0.5, 0.9)} if cos.size else {}
    summary = RenderSummary(
        icons_path=str(icons.path),
        shard=shard,
        levels={n: len(c) for n, c in cells.items()},
        batches_run=batches,
        icons_run=total,
        icons_done=int(done),
        icons_total=sum(len(c) for c in cells.values()),
        batch_size=batch_size,
        seconds=seconds,
        mean_objective=float(obj.mean()) if obj.size else float("nan"),
        mean_cossim=float(cos.mean()) if cos.size else float("nan"),
        cossim_quantiles=quantiles,
    )
    log.info(
        "rendered %d icons in %d batches in %.1f s (%.2f icons/s); %d of %d done; mean objective %.4g, "
        "mean cos-sim %.3f %s",
        total,
        batches,
        seconds,
        summary.icons_per_second,
        summary.icons_done,
        summary.icons_total,
        summary.mean_objective,
        summary.mean_cossim,
        quantiles,
    )
    return summary
