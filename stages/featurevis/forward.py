"""Turn any ``nn.Module`` into the forward contract the optimiser uses.

The contract: ``forward(images_in_0_1 [B, 3, H, W]) -> dict[str, Tensor]`` with each requested
layer's output under its module name (``[B, C, h, w]``) and, when asked for, ``"logits"``.

:func:`layer_forward` captures layers with forward hooks. Two things earlier tools got wrong
(docs/method.md §10, pitfalls: leaked hooks) are handled here: it is a context manager that
removes every hook it registered on exit, exceptions included; and when no logits are needed
it stops the forward right after the last requested layer by raising a private exception from
the hook, so none of the compute above the layer runs.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.objectives import LOGITS

log = logging.getLogger(__name__)

Forward = Callable[[Tensor], dict[str, Tensor]]
Normalize = Callable[[Tensor], Tensor]

# torchvision's ImageNet statistics, for models trained on ImageNet.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: Tensor) -> Tensor:
    """``(x - mean) / std`` with ImageNet statistics, on the images' device and dtype."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype)[None, :, None, None]
    return (images - mean) / std


class _StopForward(Exception):
    """Raised from the last hook to skip the layers above it; never escapes :func:`layer_forward`."""


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``, or a one-line error naming close matches."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        found: nn.Module = modules[name]
        return found
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise FeatureVisError(f"layer '{name}' not found in {type(model).__name__}{hint}")


def _capture_hook(
    captured: dict[str, Tensor], name: str, stop_at: int | None
) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
    """A forward hook that keeps ``name``'s output in ``captured``. Once ``stop_at`` layers are
    captured it stops the forward (:class:`_StopForward`), so the layers above the last one asked
    for never run; ``None`` lets it run on to the logits."""

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.setdefault(name, output)
        if stop_at is not None and len(captured) == stop_at:
            raise _StopForward

    return hook


def _hooked_forward(
    model: nn.Module,
    names: list[str],
    normalize: Normalize,
    with_logits: bool,
    captured: dict[str, Tensor],
    open_: list[bool],
) -> Forward:
    """The forward :func:`layer_forward` yields: it runs ``model`` on the normalized images and
    returns what the hooks put in ``captured`` (plus the logits). It refuses to run once its block
    has closed (``open_[0]`` false), since without the hooks it would silently capture nothing."""

    def forward(images: Tensor) -> dict[str, Tensor]:
        if not open_[0]:
            raise FeatureVisError(
                "this forward's layer_forward block has closed (its hooks are removed); call it inside the block"
            )
        captured.clear()
        try:
            logits = model(normalize(images))
        except _StopForward:
            logits = None
        missing = [n for n in names if n not in captured]
        if missing:
            raise FeatureVisError(f"layer(s) {', '.join(missing)} did not run in the forward of {type(model).__name__}")
        out = dict(captured)
        captured.clear()
        if with_logits:
            out[LOGITS] = logits
        return out

    return forward


@contextmanager
def layer_forward(
    model: nn.Module,
    layer: str | Sequence[str],
    normalize: Normalize = imagenet_normalize,
    with_logits: bool = False,
) -> Iterator[Forward]:
    """Context manager yielding a forward that returns ``{layer: acts, ["logits": logits]}``.

    ``normalize`` maps images in [0, 1] to the model's input space (ImageNet mean/std for
    torchvision classifiers). The model's mode is left alone; put it in ``eval()`` first (a
    training-mode model renders with batch statistics and dropout). All hooks are removed when
    the ``with`` block ends, however it ends.
    """
    names = [layer] if isinstance(layer, str) else list(layer)
    if not names:
        raise FeatureVisError("layer_forward needs at least one layer name")
    modules = {name: find_module(model, name) for name in names}
    if model.training:
        log.warning("%s is in training mode; call model.eval() for deterministic renders", type(model).__name__)
    captured: dict[str, Tensor] = {}
    handles = []
    open_ = [True]
    stop_at = None if with_logits else len(names)
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(_capture_hook(captured, name, stop_at)))
        yield _hooked_forward(model, names, normalize, with_logits, captured, open_)
    finally:
        open_[0] = False
        for handle in handles:
            handle.remove()
