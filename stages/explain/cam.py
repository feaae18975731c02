"""Whether a classifier admits a class activation map (CAM), and at which layer.

Zhou et al. (2016) define CAM for networks whose last convolutional feature maps ``A [C, h, w]``
are globally average-pooled and fed to one linear layer: ``logit_c = sum_k w_ck mean(A_k) + b_c``,
so ``M_c = sum_k w_ck A_k`` is exactly how much each position contributes to the logit. Any
other head (VGG's three fully connected layers, a classifier with a hidden layer) breaks that
identity, and then only Grad-CAM applies.

The check reads the model's graph (torch.fx, traced down to ``torch.nn`` leaves, as the registry
traces it): from the output back, only shape-only operations (flatten, view, reshape, squeeze,
eval-mode dropout, identity) may sit between one ``nn.Linear`` and a global average pool
(``nn.AdaptiveAvgPool2d(1)``, ``F.adaptive_avg_pool2d(x, 1)`` or ``x.mean((2, 3))``); the node
feeding the pool is the CAM layer, named as the module whose output it is (hooks attach to
modules). MobileNetV2 (``features.18.2``), ResNets (``layer4``), GoogLeNet, Inception v3 and
EfficientNet qualify; VGG, AlexNet, MobileNetV3 (a hidden layer in the head) and SqueezeNet do
not, nor DenseNet (its last ReLU is a functional call outside any module, so nothing to hook).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn


@dataclass(frozen=True)
class CamSpec:
    """Where a CAM is read: the pooled layer's name and the linear layer after the pool."""

    layer: str
    linear: str
    weight: torch.Tensor  # [K, C]
    bias: torch.Tensor | None


@dataclass(frozen=True)
class CamCheck:
    """The result of :func:`cam_layer`: a spec, or why the architecture has none."""

    spec: CamSpec | None
    reason: str


_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, F.dropout}
_SHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "contiguous"}
_SHAPE_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)


def _trace(model: nn.Module) -> tuple[fx.Graph, dict[fx.Node, str]]:
    import torchvision
    from torchvision.models import feature_extraction

    tracer = feature_extraction.NodePathTracer(autowrap_modules=(math, torchvision.ops), leaf_modules=[])
    graph = tracer.trace(model)
    return graph, tracer.node_to_qualname


def _is_global_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[str(node.target)]
        size = getattr(m, "output_size", None)
        return isinstance(m, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if (node.op == "call_method" and node.target == "mean") or (
        node.op == "call_function" and node.target is torch.mean
    ):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return isinstance(dims, (tuple, list)) and sorted(int(d) % 4 for d in dims) == [2, 3]
    return False


def _is_shape_only(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _SHAPE_MODULES)
    if node.op == "call_function":
        return node.target in _SHAPE_FUNCTIONS
    return node.op == "call_method" and node.target in _SHAPE_METHODS


def _first_tensor_arg(node: fx.Node) -> fx.Node | None:
    return next((a for a in node.args if isinstance(a, fx.Node)), None)


def _module_with_output(
    source: fx.Node, graph: fx.Graph, qualnames: dict[fx.Node, str], modules: dict[str, nn.Module]
) -> str | None:
    """The deepest named module whose output is ``source`` (hooks attach to modules, not nodes).

    A module's output is that of the last traced operation inside it (the registry's rule), so
    ResNet's ``layer4.1.relu_1`` (a second call of one ReLU module) is the output of ``layer4.1``.
    """
    qualname = qualnames.get(source)
    if qualname is None:
        return None
    order = list(graph.nodes)
    parts = qualname.split(".")
    for k in range(len(parts), 0, -1):
        prefix = ".".join(parts[:k])
        if prefix not in modules:
            continue
        inside = [
            n for n in order if n in qualnames and (qualnames[n] == prefix or qualnames[n].startswith(prefix + "."))
        ]
        if inside and inside[-1] is source:
            return prefix
    return None


def cam_layer(model: nn.Module) -> CamCheck:
    """The CAM layer of ``model`` (see the module docstring), or the reason there is none."""
    name = type(model).__name__
    try:
        graph, qualnames = _trace(model)
    except Exception as exc:
        return CamCheck(None, f"{name} cannot be traced ({type(exc).__name__}); CAM needs its graph")
    modules = dict(model.named_modules())
    output = next(n for n in graph.nodes if n.op == "output")
    node = output.args[0]
    while isinstance(node, (tuple, list)) and node:  # (logits, aux...) -> logits
        node = node[0]
    if not isinstance(node, fx.Node):
        return CamCheck(None, f"{name}'s output is not one tensor")
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem:
        node = node.args[0]
    while isinstance(node, fx.Node) and _is_shape_only(node, modules):
        node = _first_tensor_arg(node)
    if not (
        isinstance(node, fx.Node) and node.op == "call_module" and isinstance(modules[str(node.target)], nn.Linear)
    ):
        return CamCheck(
            None,
            f"{name}'s logits do not come straight from one linear layer (its head has more "
            "than pooling + one linear layer, as in VGG); CAM does not apply, use Grad-CAM",
        )
    linear_name = str(node.target)
    linear: nn.Linear = modules[linear_name]
    node = _first_tensor_arg(node)
    while isinstance(node, fx.Node) and _is_shape_only(node, modules):
        node = _first_tensor_arg(node)
    if not (isinstance(node, fx.Node) and _is_global_pool(node, modules)):
        return CamCheck(
            None,
            f"{name}'s last linear layer ({linear_name}) is not fed by a global average pool; "
            "CAM does not apply, use Grad-CAM",
        )
    source = _first_tensor_arg(node)
    layer = _module_with_output(source, graph, qualnames, modules) if source is not None else None
    if layer is None:
        return CamCheck(
            None,
            f"{name}: the pooled tensor is computed outside any named layer (a functional call "
            "in forward), so it cannot be captured; CAM does not apply, use Grad-CAM",
        )
    spec = CamSpec(
        layer=layer,
        linear=linear_name,
        weight=linear.weight.detach(),
        bias=linear.bias.detach() if linear.bias is not None else None,
    )
    return CamCheck(spec, f"{name}: global average pool of {spec.layer} then one linear layer ({linear_name})")
