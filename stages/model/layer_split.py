"""Cut a traced classifier at one layer into a *trunk* and a *head*.

Why: collection must not compute anything above the chosen layer (the trunk stops there), and
attribution needs the logits as a function of the layer's activation alone, so that one
forward-mode product through the head gives d logit / d h for every class at once.

Residual architectures reach around the layer (MobileNetV2's block 13 adds its input to the
output of ``features.13.conv``), so the head also takes those *cut* tensors — values computed
below the layer that the head reads — as extra inputs. The trunk returns them next to the
activation; for the derivative they are constants, exactly the partial derivative the
reference's attribution h . grad_h logit_k asks for.
"""

from __future__ import annotations

import difflib
import math
import re

import torch
import torchvision
from torch import fx, nn
from torchvision.models import feature_extraction

from store.errors import AtlasError


def _tracer() -> feature_extraction.NodePathTracer:
    """torchvision's node-path tracer, traced down to plain ``torch.nn`` leaves.

    torchvision's own default keeps blocks such as ``Conv2dNormActivation`` opaque, which would
    make their inner layers (a conv before its BatchNorm) listed but impossible to cut at.
    """
    return feature_extraction.NodePathTracer(autowrap_modules=(math, torchvision.ops), leaf_modules=[])


def _matches(qualname: str, layer: str) -> bool:
    return re.match(rf"^{re.escape(layer)}(\.|$)", qualname) is not None


def _ancestors(nodes: list[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.all_input_nodes)
    return seen


def _descendants(node: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.users)
    return seen


def suggest_layers(layer: str, valid_layers: list[str], limit: int = 30) -> str:
    """The valid names, or for deep models the closest ones plus the top-level blocks."""
    if len(valid_layers) <= limit:
        return f"choose one of: {', '.join(valid_layers)}"
    close = difflib.get_close_matches(layer, valid_layers, n=5, cutoff=0.6)
    shallow = [name for name in valid_layers if name.count(".") <= 1][:limit]
    near = f"closest: {', '.join(close)}; " if close else ""
    return f"{near}blocks: {', '.join(shallow)}; `atlas layers` lists all {len(valid_layers)}"


def split_at_layer(model: nn.Module, layer: str, valid_layers: list[str]) -> tuple[fx.GraphModule, fx.GraphModule, int]:
    """Return (trunk, head, number of cut tensors) for ``model`` (put in eval mode) at ``layer``.

    ``trunk(x) -> (activation, *cuts)``; ``head(activation, *cuts) -> logits``. ``layer`` is a
    module name; a container's output is that of the last operation inside it (the same rule
    as torchvision's ``create_feature_extractor``).
    """
    model.eval()
    tracer = _tracer()
    graph = tracer.trace(model)
    qualnames = tracer.node_to_qualname
    candidates = [n for n in graph.nodes if n in qualnames and _matches(qualnames[n], layer)]
    if not candidates:
        raise AtlasError(f"layer {layer!r} not found in {type(model).__name__}; {suggest_layers(layer, valid_layers)}")
    cut_node = candidates[-1]
    output = next(n for n in graph.nodes if n.op == "output")
    needed = _ancestors([output])
    above = _descendants(cut_node) & needed
    if output not in above:
        raise AtlasError(f"layer {layer!r}: the model's output does not depend on it; choose a layer on the main path")
    head_nodes = [n for n in graph.nodes if n in above and n is not cut_node]
    cuts: list[fx.Node] = []
    for node in head_nodes:
        for inp in node.all_input_nodes:
            if inp is not cut_node and inp not in above and inp.op != "get_attr" and inp not in cuts:
                cuts.append(inp)

    # head: placeholders for the activation and the cuts, then the nodes above the layer
    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut_node: head_graph.placeholder("activation")}
    for i, cut in enumerate(cuts):
        env[cut] = head_graph.placeholder(f"cut_{i}")

    def lookup(arg: fx.Node) -> fx.Node:
        if arg not in env:  # parameters/buffers fetched by get_attr below the layer
            env[arg] = head_graph.node_copy(arg, lookup)
        return env[arg]

    for node in head_nodes:
        env[node] = head_graph.node_copy(node, lookup)
    head = fx.GraphModule(model, head_graph, f"{type(model).__name__}Head")

    # trunk: everything the activation and the cuts need, nothing else
    trunk_graph = fx.Graph()
    keep = _ancestors([cut_node, *cuts])
    tenv: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in keep:
            tenv[node] = trunk_graph.node_copy(node, lambda a: tenv[a])
    trunk_graph.output(tuple(tenv[n] for n in [cut_node, *cuts]))
    trunk = fx.GraphModule(model, trunk_graph, f"{type(model).__name__}Trunk")
    return trunk, head, len(cuts)


@torch.no_grad()
def layer_shapes(model: nn.Module, image_size: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """Every named submodule with a tensor output: (name, type, output shape without batch).

    Hooks are registered for one dummy forward and removed in ``finally``.
    """
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    types: dict[str, str] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inp: object, out: object) -> None:
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                types[name] = type(module).__name__
                handles.append(module.register_forward_hook(make_hook(name)))
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return [(name, types[name], shapes[name]) for name in types if name in shapes]
