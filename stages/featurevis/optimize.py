"""The batched optimisation loop: B images, B objectives, one forward/backward per step.

docs/method.md §6: Adam with learning rate 0.05, transformation robustness before every
step, ``attempts`` independent starts per icon keeping the one with the highest final
objective (production: 1024 steps, 4 attempts, batch 100, 80 px). The loss is minus the
**sum** of the per-image objectives, so image ``i``'s gradient is the gradient of its own
objective only (images never interact: the model is in eval mode and Adam is elementwise).

The final objective that picks the best attempt is evaluated once on the untransformed image,
the image that is returned. lucid's notebook kept the last step's value, which was measured
under a random transform and so partly reflects the luck of that draw.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.forward import Forward
from stages.featurevis.objectives import Objective
from stages.featurevis.param import ImageFn, ImageParam
from stages.featurevis.relu_grad import REDIRECT_STEPS, redirected_relu_grad
from stages.featurevis.transforms import Transform, reference_transforms

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

# The docs/method.md §6 chain; a frozen (immutable) value, safe as a default argument.
_REFERENCE_TRANSFORMS = reference_transforms()


@dataclass(frozen=True)
class RenderResult:
    """What :func:`render` returns, one row per image of the batch."""

    images: np.ndarray  # uint8 [B, H, W, 3]
    objective: np.ndarray  # float32 [B]: final objective of the kept attempt, untransformed image
    initial_objective: np.ndarray  # float32 [B]: same, at the kept attempt's random start
    attempt: np.ndarray  # int64 [B]: index of the kept attempt
    history: np.ndarray  # float32 [attempts, steps, B]: per-step objective, under the transforms
    seconds: float


@dataclass(frozen=True)
class _Attempt:
    images: Tensor  # float [B, 3, H, W] in (0, 1), detached
    final: Tensor  # [B]
    initial: Tensor  # [B]
    history: Tensor  # [steps, B]


def render(
    forward: Forward,
    objective: Objective,
    param: ImageParam,
    *,
    steps: int,
    device: torch.device | str,
    lr: float = 0.05,
    transforms: Transform | None = _REFERENCE_TRANSFORMS,
    attempts: int = 1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    mixed_precision: bool = False,
    relu_redirect_steps: int = REDIRECT_STEPS,
    progress_callback: ProgressCallback | None = None,
    fast_forward: Forward | None = None,
    cpu_bf16: bool = False,
) -> RenderResult:
    """Optimise ``param``'s images so each maximises its own ``objective`` value.

    ``forward`` follows the contract of :func:`stages.featurevis.forward.layer_forward`. Random
    starts and transform draws come from ``generator`` (a CPU ``torch.Generator``; default: a
    fresh one seeded with ``seed``), so a run on the CPU is bit-reproducible. ``device`` is
    where the images live; it must be the model's device. ``mixed_precision`` runs the forward
    under CUDA autocast (bfloat16 where supported, else float16 with loss scaling); it is
    ignored on the CPU. ``transforms=None`` optimises without transformation robustness.
    For the first ``relu_redirect_steps`` steps ReLU gradients are redirected as in lucid
    (:mod:`stages.featurevis.relu_grad`) so units that start switched off still get a gradient.
    ``progress_callback(done, total)`` is called after every step, over all attempts.
    ``fast_forward`` (same contract as ``forward``, e.g. the compiled one of
    :func:`stages.featurevis.speed.fast_layer_forward`) runs the steps after the redirected ones;
    ``forward`` runs the rest. ``cpu_bf16`` runs the forward on the CPU under bfloat16 autocast
    (worth it only on CPUs with native bfloat16 instructions; docs/render.md).
    """
    _check_args(steps, lr, attempts, relu_redirect_steps)
    device = torch.device(device)
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    amp = _Autocast(device, mixed_precision, cpu_bf16)
    loop = _Loop(forward, fast_forward or forward, objective, transforms, generator, amp, relu_redirect_steps)
    started = time.perf_counter()
    kept, kept_index, histories = _best_of_attempts(loop, param, device, steps, lr, attempts, progress_callback)
    return RenderResult(
        images=_to_uint8(kept.images),
        objective=kept.final.float().cpu().numpy(),
        initial_objective=kept.initial.float().cpu().numpy(),
        attempt=kept_index.numpy(),
        history=torch.stack(histories).float().numpy(),
        seconds=time.perf_counter() - started,
    )


def _best_of_attempts(
    loop: _Loop,
    param: ImageParam,
    device: torch.device,
    steps: int,
    lr: float,
    attempts: int,
    progress_callback: ProgressCallback | None,
) -> tuple[_Attempt, Tensor, list[Tensor]]:
    """Run ``attempts`` fresh starts and keep, per image, the one that ended highest: returns that
    merged attempt, the index of the attempt each image was kept from, and every attempt's
    objective history (on the CPU). Each start is drawn from ``loop.generator``, the generator the
    transforms draw from, so a CPU run stays bit-reproducible."""
    kept: _Attempt | None = None
    kept_index = torch.zeros(0, dtype=torch.long)
    histories = []
    for attempt in range(attempts):
        params, image_fn = param(device=device, generator=loop.generator)

        def report(step: int, done: int = attempt * steps) -> None:
            if progress_callback is not None:
                progress_callback(done + step, attempts * steps)

        result = loop.run(params, image_fn, steps, lr, report)
        histories.append(result.history.cpu())
        log.info(
            "attempt %d/%d: mean objective %.4g -> %.4g",
            attempt + 1,
            attempts,
            float(result.initial.mean()),
            float(result.final.mean()),
        )
        if kept is None:
            kept, kept_index = result, torch.zeros(result.final.shape[0], dtype=torch.long)
        else:
            better = result.final > kept.final
            kept_index[better.cpu()] = attempt
            kept = _merge(kept, result, better)
    assert kept is not None  # attempts >= 1
    return kept, kept_index, histories


@dataclass(frozen=True)
class _Loop:
    """What stays fixed across attempts: the model, the objective, the randomness, precision."""

    forward: Forward
    fast_forward: Forward  # the steps without the redirected ReLU gradient
    objective: Objective
    transforms: Transform | None
    generator: torch.Generator
    amp: _Autocast
    relu_redirect_steps: int

    def run(
        self, params: list[Tensor], image_fn: ImageFn, steps: int, lr: float, report: Callable[[int], None]
    ) -> _Attempt:
        """One attempt: ``steps`` Adam steps on ``params`` (lucid ``render_icons`` inner loop)."""
        optimizer = torch.optim.Adam(params, lr=lr)
        initial = _evaluate(self.forward, self.objective, image_fn, self.amp)
        history = []
        with torch.enable_grad():
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                values = self._values(image_fn, redirect=step < self.relu_redirect_steps)
                # Gradients only for the image parameters: none are left on the model's weights,
                # and autograd skips the weight-gradient half of every conv backward.
                self.amp.backward(-values.sum(), params)
                self.amp.step(optimizer)
                history.append(values.detach())
                report(step + 1)
        final = _evaluate(self.forward, self.objective, image_fn, self.amp)
        with torch.no_grad():
            images = image_fn().detach()
        trace = torch.stack(history) if history else torch.empty(0, images.shape[0], device=images.device)
        return _Attempt(images, final, initial, trace)

    def _values(self, image_fn: ImageFn, redirect: bool) -> Tensor:
        images = image_fn()
        if self.transforms is not None:
            images = self.transforms(images, self.generator)
        relu_mode = redirected_relu_grad() if redirect else contextlib.nullcontext()
        forward = self.forward if redirect else self.fast_forward
        with relu_mode, self.amp.context():
            return _values(self.objective, forward(images), images.shape[0])


def _evaluate(forward: Forward, objective: Objective, image_fn: ImageFn, amp: _Autocast) -> Tensor:
    """Objective of the current images, untransformed, without building a graph."""
    with torch.no_grad():
        images = image_fn()
        with amp.context():
            return _values(objective, forward(images), images.shape[0]).detach()


def _values(objective: Objective, acts: dict[str, Tensor], batch: int) -> Tensor:
    values = objective(acts).float()
    if values.shape != (batch,):
        raise FeatureVisError(
            f"objective returned shape {list(values.shape)} for a batch of {batch} images; "
            f"it must return one value per image"
        )
    return values


def _merge(kept: _Attempt, new: _Attempt, better: Tensor) -> _Attempt:
    """Per image, the attempt with the higher final objective."""
    return _Attempt(
        images=torch.where(better[:, None, None, None], new.images, kept.images),
        final=torch.where(better, new.final, kept.final),
        initial=torch.where(better, new.initial, kept.initial),
        history=new.history,
    )


def _to_uint8(images: Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` floats in [0, 1] -> ``[B, H, W, 3]`` uint8, rounded."""
    scaled = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _check_args(steps: int, lr: float, attempts: int, relu_redirect_steps: int) -> None:
    if steps < 0:
        raise FeatureVisError(f"render: steps must be >= 0 (got {steps})")
    if not lr > 0:
        raise FeatureVisError(f"render: lr must be > 0 (got {lr})")
    if attempts < 1:
        raise FeatureVisError(f"render: attempts must be >= 1 (got {attempts})")
    if relu_redirect_steps < 0:
        raise FeatureVisError(f"render: relu_redirect_steps must be >= 0 (got {relu_redirect_steps})")


class _Autocast:
    """CUDA autocast and, for float16, loss scaling; CPU bfloat16 autocast when asked; else a no-op."""

    def __init__(self, device: torch.device, enabled: bool, cpu_bf16: bool = False) -> None:
        self.enabled = enabled and device.type == "cuda"
        if enabled and not self.enabled:
            log.info("mixed_precision ignored on %s (CUDA only); rendering in float32", device)
        self.dtype = torch.float32
        if cpu_bf16 and device.type == "cpu":
            self.enabled, self.dtype = True, torch.bfloat16
        elif self.enabled:
            # bfloat16 (Ampere and later) needs no loss scaling; older GPUs get float16 + scaler.
            bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
            self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)
        self.device_type = device.type

    def context(self) -> contextlib.AbstractContextManager[None]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor, params: list[Tensor]) -> None:
        # torch.autograd.backward is Tensor.backward's typed core (same call for plain tensors)
        torch.autograd.backward(self.scaler.scale(loss), inputs=params)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()
