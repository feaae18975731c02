"""Spatial attribution of a classifier's decision to its input pixels: the methods the field teaches.

Every method takes a :class:`Net` (any ``nn.Module`` classifier plus its input normalisation, e.g.
a :class:`~stages.model.registry.LoadedModel`'s ``module`` and ``normalize``), images in [0, 1]
``[B, 3, H, W]`` and one target class per image ``[B]`` (to explain K classes of one image, repeat
it K times: the batch is the unit of work), and runs in batches of ``batch_size`` on the device
the images are on. Nothing is registered on the model that outlives the call: layer captures are
context managers whose hooks are removed in ``finally``, the ReLU rules are a scoped function mode.

- :func:`input_gradients` -- d logit_c / d x, the basis of the next three; with ``rule`` the
  guided-backprop or deconvnet backward (:mod:`stages.explain.relu_rules`);
- :func:`saliency` -- Simonyan, Vedaldi & Zisserman (2014), "Deep Inside Convolutional Networks",
  §3.1: the maximum over colour channels of ``|d logit_c / d x|``;
- :func:`gradient_x_input` -- Shrikumar et al. (2016): ``sum_channels(x * d logit_c / d x)``, the
  first-order share of the logit each pixel carries relative to a black image (``x`` in [0, 1]);
- :func:`occlusion` -- Zeiler & Fergus (2014), §4.2: slide a grey square (``window`` px, every
  ``stride`` px, value ``baseline`` in [0, 1]) over the image and record how much the class's
  probability drops; a pixel's value is the mean drop over the windows that cover it;
- :func:`grad_cam` -- Selvaraju et al. (2017), "Grad-CAM", eq. 1-2: at any layer ``A [C, h, w]``,
  ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``d logit_c / d A_k``;
- :func:`class_activation_map` -- Zhou et al. (2016), "Learning Deep Features for Discriminative
  Localization", eq. 2: ``sum_k w_ck A_k`` for a network that ends in global average pooling and
  one linear layer (:mod:`stages.explain.cam` finds that layer or says why there is none).

Maps come back as float32 tensors on the CPU: pixel maps ``[B, H, W]``, layer maps ``[B, h, w]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.explain.relu_rules import Rule, relu_rule
from store.errors import AtlasError

log = logging.getLogger(__name__)

Normalize = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Net:
    """A classifier ``images in [0, 1] -> logits``: the module (in eval mode) and its normalisation."""

    module: nn.Module
    normalize: Normalize

    def __call__(self, images01: Tensor) -> Tensor:
        return self.module(self.normalize(images01))


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def _check(images: Tensor, classes: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] (got {list(images.shape)})")
    classes = torch.as_tensor(classes, dtype=torch.long, device=images.device).reshape(-1)
    if classes.shape[0] != images.shape[0]:
        raise ValueError(f"one class per image: {classes.shape[0]} classes for {images.shape[0]} images")
    return classes


def _selected(logits: Tensor, classes: Tensor) -> Tensor:
    """The sum over the batch of each image's own class logit: its gradient w.r.t. image b is image
    b's own gradient, because in eval mode the images of a batch do not interact."""
    return logits.gather(1, classes[:, None]).sum()


# --------------------------------------------------------------------------------- gradients
def input_gradients(
    net: Net, images: Tensor, classes: Tensor, rule: Rule | None = None, batch_size: int = 16
) -> Tensor:
    """``d logit_{classes[b]} / d images[b]`` ``[B, 3, H, W]`` (CPU float32 unless the input is float64).

    ``rule`` ``"guided"`` / ``"deconvnet"``: the same backward pass with the ReLUs' rule replaced.
    A model without any ReLU is refused for a rule (the result would be the plain gradient).
    """
    classes = _check(images, classes)
    out = []
    for part in _batches(len(images), batch_size):
        x = images[part].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            if rule is None:
                logits = net(x)
            else:
                with relu_rule(rule) as mode:
                    logits = net(x)
                if mode.calls == 0:
                    raise AtlasError(
                        f"{rule} backpropagation changes the ReLUs' backward, and "
                        f"{type(net.module).__name__} calls no ReLU/ReLU6; use saliency or Grad-CAM"
                    )
            (grad,) = torch.autograd.grad(_selected(logits, classes[part]), x)
        out.append(grad.detach().cpu())
    grads = torch.cat(out)
    return grads if grads.dtype == torch.float64 else grads.float()


def saliency(gradients: Tensor) -> Tensor:
    """Simonyan et al. (2014): ``max_channels |gradient|`` ``[B, H, W]``."""
    return gradients.abs().amax(dim=1)


def gradient_x_input(gradients: Tensor, images: Tensor) -> Tensor:
    """Shrikumar et al. (2016): ``sum_channels(gradient * input)`` ``[B, H, W]`` (signed)."""
    return (gradients * images.detach().to(gradients.device, gradients.dtype)).sum(dim=1)


def gradient_image(gradients: Tensor, percentile: float = 99.5) -> Tensor:
    """A gradient as an RGB picture ``[B, H, W, 3]`` in [0, 1]: ``0.5 + g / (2 s)`` per image, ``s`` the
    ``percentile`` of ``|g|`` (how Springenberg et al. and Zeiler & Fergus show guided-backprop /
    deconvnet signals; a percentile rather than the maximum, so a few extreme pixels do not leave
    the rest at mid-grey)."""
    flat = gradients.abs().flatten(1).float()
    top = torch.quantile(flat, percentile / 100.0, dim=1).clamp(min=1e-12)[:, None, None, None]
    return (0.5 + gradients.float() / (2 * top)).clamp(0, 1).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------------- occlusion
@dataclass(frozen=True)
class Occlusion:
    """Occlusion maps of K classes: per window position and per pixel."""

    drop: Tensor  # [K, ny, nx] probability drop with the window at (row, col)
    pixels: Tensor  # [K, H, W] mean drop over the windows covering each pixel
    starts_y: list[int]
    starts_x: list[int]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left coordinates of the windows along one side: every ``stride`` px, the last one flush
    with the far edge so every pixel is covered at least once."""
    if not 1 <= window <= size or stride < 1:
        raise AtlasError(
            f"occlusion window {window} / stride {stride} do not fit a {size} px image "
            f"(need 1 <= window <= {size}, stride >= 1)"
        )
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def occlusion(
    net: Net, image: Tensor, classes: Tensor, window: int, stride: int, baseline: float = 0.5, batch_size: int = 32
) -> Occlusion:
    """Zeiler & Fergus (2014): the drop of each class's probability as a ``baseline``-grey square
    of ``window`` px covers the image at every ``stride`` px (``image`` ``[1, 3, H, W]`` or ``[3, H, W]``).

    Occluded copies are made and classified ``batch_size`` at a time, under ``no_grad``.
    """
    x = image if image.ndim == 4 else image[None]
    if x.shape[0] != 1:
        raise ValueError("occlusion explains one image at a time")
    classes = torch.as_tensor(classes, dtype=torch.long, device=x.device).reshape(-1)
    _, _, h, w = x.shape
    ys, xs = window_starts(h, window, stride), window_starts(w, window, stride)
    boxes = [(y, x0) for y in ys for x0 in xs]
    drops = []
    with torch.no_grad():
        base = F.softmax(net(x).float(), dim=1)[0, classes]
        for part in _batches(len(boxes), batch_size):
            batch = x.repeat(part.stop - part.start, 1, 1, 1)
            for k, (y, x0) in enumerate(boxes[part]):
                batch[k, :, y : y + window, x0 : x0 + window] = baseline
            probs = F.softmax(net(batch).float(), dim=1)[:, classes]
            drops.append((base[None] - probs).cpu())
    drop = torch.cat(drops).T.reshape(len(classes), len(ys), len(xs))
    total = torch.zeros(len(classes), h, w)
    count = torch.zeros(h, w)
    for r, y in enumerate(ys):
        for c, x0 in enumerate(xs):
            total[:, y : y + window, x0 : x0 + window] += drop[:, r, c, None, None]
            count[y : y + window, x0 : x0 + window] += 1
    return Occlusion(drop=drop, pixels=total / count, starts_y=ys, starts_x=xs)


# --------------------------------------------------------------------------------- layer maps
def find_layer(module: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``, or a one-line error that names close matches."""
    import difflib

    modules = dict(module.named_modules())
    if name and name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else "; `atlas layers MODEL` lists them"
    raise AtlasError(f"layer {name!r} not found in {type(module).__name__}{hint}")


@contextmanager
def capture_layer(module: nn.Module, name: str) -> Iterator[dict[str, Tensor]]:
    """Capture the output of layer ``name`` in the yielded dict (key ``"output"``) during forwards.

    The hook hands the rest of the network a clone, so an in-place operation above the layer
    (``ReLU6(inplace=True)`` after a BatchNorm) cannot overwrite the captured tensor that the
    gradient is taken against. The hook is removed when the block ends, however it ends.
    """
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise AtlasError(f"layer {name!r} does not output one tensor; choose a convolutional layer")
        store["output"] = output
        return output.clone()

    handle = find_layer(module, name).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def layer_activations_and_gradients(
    net: Net, images: Tensor, classes: Tensor, layer: str, batch_size: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    """``(A [B, C, h, w], dlogit_c/dA [B, C, h, w], logits [B, K])`` at ``layer`` (CPU float32)."""
    classes = _check(images, classes)
    acts, grads, all_logits = [], [], []
    for part in _batches(len(images), batch_size):
        with capture_layer(net.module, layer) as captured, torch.enable_grad():
            logits = net(images[part].detach())
            if "output" not in captured:
                raise AtlasError(f"layer {layer!r} did not run in the forward of {type(net.module).__name__}")
            a = captured["output"]
            if a.ndim != 4:
                raise AtlasError(
                    f"layer {layer!r} outputs shape {list(a.shape[1:])}, not [C, h, w]; "
                    "Grad-CAM needs a convolutional layer"
                )
            (g,) = torch.autograd.grad(_selected(logits, classes[part]), a)
        acts.append(a.detach().float().cpu())
        grads.append(g.detach().float().cpu())
        all_logits.append(logits.detach().float().cpu())
    return torch.cat(acts), torch.cat(grads), torch.cat(all_logits)


def grad_cam_from(acts: Tensor, grads: Tensor) -> Tensor:
    """Selvaraju et al. (2017), eq. 1-2: ``ReLU(sum_k mean_hw(dY/dA_k) A_k)`` ``[B, h, w]``."""
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * acts).sum(dim=1))


def grad_cam(net: Net, images: Tensor, classes: Tensor, layer: str, batch_size: int = 16) -> Tensor:
    """Grad-CAM ``[B, h, w]`` of each image's class at any convolutional ``layer``."""
    acts, grads, _ = layer_activations_and_gradients(net, images, classes, layer, batch_size)
    return grad_cam_from(acts, grads)


def class_activation_map(
    net: Net,
    images: Tensor,
    classes: Tensor,
    layer: str,
    weight: Tensor,
    bias: Tensor | None = None,
    batch_size: int = 16,
) -> Tensor:
    """Zhou et al. (2016), eq. 2: ``M_c = sum_k w_ck A_k`` ``[B, h, w]`` at the layer that feeds the
    global average pooling, with ``weight [K, C]`` the linear layer after it (see :mod:`.cam`).

    Checked on every batch: the logits must equal ``W mean_hw(A) + b``; if they do not, the network
    is not "pooling then one linear layer" and a CAM would be wrong, so it is refused.
    """
    classes = _check(images, classes)
    w = weight.detach().float().cpu()
    out = []
    for part in _batches(len(images), batch_size):
        with capture_layer(net.module, layer) as captured, torch.no_grad():
            logits = net(images[part].detach()).float().cpu()
            a = captured["output"].float().cpu()
        expected = a.mean(dim=(2, 3)) @ w.T + (bias.detach().float().cpu() if bias is not None else 0.0)
        if not torch.allclose(expected, logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max())):
            raise AtlasError(
                f"CAM does not apply to {type(net.module).__name__} at {layer!r}: its logits are not "
                "a linear layer of the globally averaged activations; use Grad-CAM"
            )
        out.append(torch.einsum("bc,bchw->bhw", w[classes[part].cpu()], a))
    return torch.cat(out)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Layer maps ``[B, h, w]`` resized to the input ``size`` (bilinear, as Grad-CAM's figures)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
