"""Every attribution method of ``atlas explain`` behind one call: heatmaps of one image for K classes.

:func:`method_maps` runs the selected methods (:data:`METHODS`) on one image for a list of classes
and returns, per method, ``[K, H, W]`` pixel heatmaps (layer maps upsampled to the input), plus the
RGB gradient pictures of guided backprop and the deconvnet. The explain figure and the sanity
checks both use it, so they show and test the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from stages.config import EXPLAIN_METHODS as METHODS
from stages.explain import attribution as A
from stages.explain.cam import CamCheck
from store.errors import AtlasError

TITLES = {
    "saliency": "gradient saliency",
    "gradient_x_input": "gradient \u00d7 input",
    "guided_backprop": "guided backprop",
    "deconvnet": "deconvnet",
    "occlusion": "occlusion",
    "cam": "CAM",
    "grad_cam": "Grad-CAM",
}


@dataclass(frozen=True)
class MethodSettings:
    """What the methods need beyond the image: batch size, occlusion window and Grad-CAM layer."""

    batch_size: int = 16
    window: int = 32
    stride: int = 16
    baseline: float = 0.5
    grad_cam_layer: str = ""


@dataclass
class MethodMaps:
    """Per method ``[K, H, W]`` heatmaps; ``pictures`` the ``[K, H, W, 3]`` RGB gradient images."""

    classes: list[int]
    maps: dict[str, Tensor] = field(default_factory=dict)
    pictures: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it did not run
    grad_cam_layer: str = ""


def method_maps(
    net: A.Net,
    image: Tensor,
    classes: list[int],
    methods: tuple[str, ...] | list[str],
    settings: MethodSettings,
    cam: CamCheck,
) -> MethodMaps:
    """Heatmaps of ``image`` (``[3, H, W]`` in [0, 1], on the model's device) for each class.

    A method that does not apply (CAM on a head that is not pooling + one linear layer) is listed
    in ``skipped`` with the reason instead of failing the others.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AtlasError(f"explain.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if not settings.grad_cam_layer:
        raise ValueError("MethodSettings.grad_cam_layer is empty; resolve it with grad_cam_layer() first")
    size = (image.shape[-2], image.shape[-1])
    batch = image[None].repeat(len(classes), 1, 1, 1)
    target = torch.as_tensor(classes, dtype=torch.long, device=image.device)
    out = MethodMaps(classes=list(classes), grad_cam_layer=settings.grad_cam_layer)
    bs = settings.batch_size
    if {"saliency", "gradient_x_input"} & set(methods):
        grads = A.input_gradients(net, batch, target, batch_size=bs)
        if "saliency" in methods:
            out.maps["saliency"] = A.saliency(grads)
        if "gradient_x_input" in methods:
            out.maps["gradient_x_input"] = A.gradient_x_input(grads, batch.cpu())
    rules: tuple[tuple[str, Literal["guided", "deconvnet"]], ...] = (
        ("guided_backprop", "guided"),
        ("deconvnet", "deconvnet"),
    )
    for method, rule in rules:
        if method in methods:
            grads = A.input_gradients(net, batch, target, rule=rule, batch_size=bs)
            out.maps[method] = A.saliency(grads)
            out.pictures[method] = A.gradient_image(grads)
    if "occlusion" in methods:
        out.maps["occlusion"] = A.occlusion(
            net, image, target, settings.window, settings.stride, settings.baseline, batch_size=max(bs, 1)
        ).pixels
    if "cam" in methods:
        if cam.spec is None:
            out.skipped["cam"] = cam.reason
        else:
            maps = A.class_activation_map(net, batch, target, cam.spec.layer, cam.spec.weight, cam.spec.bias, bs)
            out.maps["cam"] = A.upsample(maps, size)
    if "grad_cam" in methods:
        out.maps["grad_cam"] = A.upsample(A.grad_cam(net, batch, target, settings.grad_cam_layer, bs), size)
    return out


def grad_cam_layer(requested: str | None, cam: CamCheck, fallback: str) -> str:
    """The Grad-CAM layer: the one asked for, else the CAM layer (where Grad-CAM equals CAM), else
    ``fallback`` (the atlas layer)."""
    if requested:
        return requested
    return cam.spec.layer if cam.spec is not None else fallback
