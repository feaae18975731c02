"""A faster forward for the render loop: the network cut at the layer, channels-last, compiled.

A render step is a forward and an input-gradient backward through every layer below the target;
bench/render.py measures that bare pass as the floor (a) of a step. Three switches lower the floor
itself, each measured on and off there (docs/render.md, "How close to the floor"):

* **Truncation** (always tried): ``torch.fx`` traces the model with the target layer as a leaf,
  makes the layer's output the graph's output and removes every node it does not depend on. The
  hooks of :func:`stages.featurevis.forward.layer_forward` already stop the forward at the layer
  (by raising from the hook), but a branch *beside* the path to the layer (another branch of an
  Inception block, run before the target's) still runs there; here it is gone, and the graph has
  no hooks or exceptions, which ``torch.compile`` needs. A model ``fx`` cannot trace, or whose
  layer runs more than once, keeps the hooks.
* **channels_last**: the model's weights and the input in NHWC, the layout oneDNN's (and cuDNN's)
  convolutions prefer; saves a layout conversion in every convolution.
* **compile**: ``torch.compile`` of the cut network (inductor fuses the pointwise work between the
  convolutions, forward and backward). Compiled once per input shape; inductor keeps the generated
  code in its on-disk cache (the render stage points it at the project's cache folder), so a second
  process loads instead of compiling.

The values are the same function of the image: truncation runs the very same modules (bit-identical);
channels_last and compile reorder floating-point sums (tests/test_render_speed.py bounds the change).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from stages.featurevis.forward import Forward, Normalize, imagenet_normalize, layer_forward

log = logging.getLogger(__name__)

# Relative tolerance of the probe check of a cut network (channels_last and compile are checked
# after, by their tests: they change float32 rounding, the cut itself changes nothing).
_PROBE_RTOL = 1e-5


@dataclass(frozen=True)
class Speed:
    """Switches of the fast forward (all off: the plain hooked forward)."""

    channels_last: bool = False
    compile: bool = False
    truncate: bool = True

    @property
    def plain(self) -> bool:
        return not (self.channels_last or self.compile or self.truncate)


def truncate(model: nn.Module, layer: str) -> fx.GraphModule | None:
    """``model`` cut after ``layer``: a module mapping the model's input to ``layer``'s output.

    Only the nodes the layer's output depends on are kept (``Graph.eliminate_dead_code``); the
    submodules are ``model``'s own (shared, not copied). ``None`` when ``fx`` cannot trace the model
    or ``layer`` is not called exactly once in its forward.
    """

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == layer or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types for data-dependent control flow
        log.info("%s cannot be traced by torch.fx (%s); rendering with hooks", type(model).__name__, exc)
        return None
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        log.info("layer %s runs %d times in the forward; rendering with hooks", layer, len(calls))
        return None
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (calls[0],)
    cut = fx.GraphModule(model, graph)
    cut.graph.eliminate_dead_code()
    cut.graph.lint()
    cut.recompile()
    cut.delete_all_unused_submodules()
    return cut


def _same_output(model: nn.Module, cut: nn.Module, layer: str, normalize: Normalize) -> bool:
    """The cut network's output equals the hooked forward's on a seeded probe batch (float32 noise allowed)."""
    device = next(model.parameters()).device
    probe = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            got = cut(probe).float()  # first: the cut shares the model's modules, and so its hooks
            with layer_forward(model, layer, normalize) as hooked:
                want = hooked(probe)[layer].float()
    except Exception as exc:  # e.g. a model that takes one input size only (a ViT): keep the hooks
        log.info("probe of the fx-cut network failed (%s); rendering with hooks", exc)
        return False
    if want.shape != got.shape:
        return False
    return float((want - got).abs().max()) <= _PROBE_RTOL * (float(want.abs().max()) or 1.0)


class _Cut(nn.Module):
    """``normalize`` then the cut network, the input in the network's memory format."""

    def __init__(self, net: nn.Module, normalize: Normalize, channels_last: bool) -> None:
        super().__init__()
        self.net, self.normalize, self.channels_last = net, normalize, channels_last

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out: Tensor = self.net(x)
        return out


@contextmanager
def fast_layer_forward(
    model: nn.Module, layer: str, normalize: Normalize = imagenet_normalize, speed: Speed = Speed()
) -> Iterator[tuple[Forward, Forward]]:
    """Context manager yielding ``(eager, fast)``, two forwards of :func:`layer_forward`'s contract.

    ``fast`` has every switch of ``speed``; ``eager`` is the same network uncompiled, for what a
    compiled graph cannot see: the redirected-ReLU mode of the first steps and no-grad evaluations.
    Without a cut network (``speed.plain``, or a model ``fx`` cannot cut) both are the hooked
    :func:`layer_forward`. ``model`` is never modified (channels_last works on a copy).
    """
    cut = truncate(model, layer) if not speed.plain else None
    if cut is not None and not _same_output(model, _Cut(cut, normalize, False), layer, normalize):
        log.info("the fx-cut %s did not reproduce %s on a probe; rendering with hooks", type(model).__name__, layer)
        cut = None
    if cut is None:
        with layer_forward(model, layer, normalize) as forward:
            yield forward, forward
        return
    if speed.channels_last:
        cut = copy.deepcopy(cut).to(memory_format=torch.channels_last)
    eager_net = _Cut(cut, normalize, speed.channels_last)
    fast_net: Callable[[Tensor], Tensor] = eager_net
    if speed.compile:
        fast_net = torch.compile(eager_net, dynamic=False)

    def wrap(net: Callable[[Tensor], Tensor]) -> Forward:
        return lambda images: {layer: net(images)}

    yield wrap(eager_net), wrap(fast_net)
