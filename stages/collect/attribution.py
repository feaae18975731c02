"""Attribution of sampled activations to every class with forward-mode products through the head.

docs/method.md §2: attr_k = h . grad_h logit_k, where h is the activation vector at the
sampled (y, x). That is the directional derivative of the logits along a tangent equal to h at
(y, x) and zero elsewhere, so one Jacobian-vector product (JVP) through the head gives the whole
class vector for every sample of a batch at once (instead of one backward pass per class).

:func:`logits_and_attribution` is that JVP by ``torch.func.jvp``: the plain, library reference.
:class:`HeadJVP` computes the same numbers for all sampled positions of a batch in one pass, for
what collect spends (bench/collect.py, docs/collect.md "Speed"): per position, ``torch.func.jvp``
re-ran the head's primal pass, and its forward-mode formulas for convolution and BatchNorm
cost ~4 primal passes (the convolution formula also convolves the primal input with a zero
weight tangent; BatchNorm's is a chain of full-size element-wise ops). :class:`HeadJVP` walks
the head's fx graph once: every node's primal value exactly as the head computes it, and the
tangents of all positions stacked in one batch, with the linear map of the common layers
written out (a convolution or linear layer without its bias, eval-mode BatchNorm's per-channel
scale, the 0/1 mask of ReLU / ReLU6 / hardtanh, pooling, flatten, dropout, sums, concatenation).
Any other operation goes through ``torch.func.jvp`` (vectorised over the positions with
``torch.func.vmap``), so every model is covered and the fast rules are only a shortcut.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

Tangent = torch.Tensor | tuple | list | None  # [T, B, ...] per tensor; None = identically zero


def position_tangent(activations: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """A tensor like ``activations`` [B, C, H, W] that equals it at (y_b, x_b) and is 0 elsewhere."""
    tangent = torch.zeros_like(activations)
    batch = torch.arange(activations.shape[0], device=activations.device)
    y, x = yx[:, 0].long(), yx[:, 1].long()
    tangent[batch, :, y, x] = activations[batch, :, y, x]
    return tangent


def position_tangents(activations: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """[P, B, C, H, W]: for each of the P positions ``yx`` [B, P, 2], :func:`position_tangent`.

    Built in one zeroed buffer with ``activations``' memory layout (channels-last stays
    channels-last, so the head's convolutions need no layout conversion).
    """
    b, c, h, w = activations.shape
    p = yx.shape[1]
    flat = torch.empty(
        (p * b, c, h, w), dtype=activations.dtype, device=activations.device, memory_format=_memory_format(activations)
    ).zero_()
    rows = torch.arange(p * b, device=activations.device)
    batch = rows % b
    y, x = yx[batch, rows // b, 0].long(), yx[batch, rows // b, 1].long()
    flat[rows, :, y, x] = activations[batch, :, y, x]
    return flat.unflatten(0, (p, b))


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def logits_and_attribution(
    head: Callable[..., torch.Tensor],
    activations: torch.Tensor,
    cuts: tuple[torch.Tensor, ...],
    yx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, K], attribution [B, K]) for one sampled position per batch item (the reference).

    ``cuts`` are the tensors from below the layer that the head also reads (residual inputs);
    they are held constant, so this is the partial derivative with respect to the layer.
    """
    tangent = position_tangent(activations, yx)
    out = torch.func.jvp(lambda a: head(a, *cuts), (activations,), (tangent,))  # (primal, tangent): no aux
    return out[0], out[1]


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the k largest entries per row (k clipped to the row length)."""
    k = min(k, values.shape[1])
    top = values.topk(k, dim=1)
    return top.indices, top.values


# ------------------------------------------------------------------------------- HeadJVP
def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(0, 1)


def _unflat(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.unflatten(0, (n, t.shape[0] // n))


def _relu_tangent(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ReLU's tangent map at ``x``: autograd's own formula (threshold_backward), t where x > 0, else 0."""
    return torch.ops.aten.threshold_backward(t, x.expand_as(t), 0)


def _hardtanh_tangent(t: torch.Tensor, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Hardtanh's (ReLU6's) tangent map at ``x``: autograd's formula, t strictly inside (low, high), else 0."""
    return torch.ops.aten.hardtanh_backward(t, x.expand_as(t), low, high)


_BATCH_AGNOSTIC_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d, nn.AvgPool2d, nn.AvgPool1d, nn.Identity)
_BATCH_AGNOSTIC_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_avg_pool1d, F.avg_pool2d, F.avg_pool1d}


class HeadJVP:
    """Logits of a head and its directional derivatives along T tangents of the activation, one pass.

    ``head(activation, *cuts) -> logits`` is an fx graph (:func:`stages.model.layer_split.split_at_layer`).
    ``jvp(activation, cuts, tangents [T, B, ...])`` returns ``(logits [B, K], derivatives [T, B, K])``:
    the cuts are held constant (the partial derivative with respect to the layer), and
    ``derivatives[t]`` equals ``torch.func.jvp(head, (activation,), (tangents[t],))[1]`` up to float
    rounding. The primal values are computed by the same calls as ``head`` itself, so the logits
    are bit-identical to ``head(activation, *cuts)``.
    """

    def __init__(self, head: fx.GraphModule) -> None:
        self.head = head
        self.nodes = list(head.graph.nodes)
        self.modules = dict(head.named_modules())
        position = {node: i for i, node in enumerate(self.nodes)}
        self.last_use: dict[int, list[fx.Node]] = {}
        for node in self.nodes:
            users = [position[u] for u in node.users]
            if users:
                self.last_use.setdefault(max(users), []).append(node)
        self._bn: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.fallback_nodes: set[str] = set()  # names of nodes that went through torch.func.jvp (for tests/logs)

    # -- the walk --------------------------------------------------------------------------
    def jvp(
        self, activation: torch.Tensor, cuts: tuple[torch.Tensor, ...], tangents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = tangents.shape[0]
        inputs = iter((activation, *cuts))
        primal: dict[fx.Node, Any] = {}
        tangent: dict[fx.Node, Tangent] = {}
        result: Any = None
        with torch.no_grad():
            for i, node in enumerate(self.nodes):
                if node.op == "placeholder":
                    primal[node] = next(inputs)
                    tangent[node] = tangents if len(primal) == 1 else None
                elif node.op == "output":
                    result = (
                        fx.node.map_arg(node.args[0], lambda a: primal[a]),
                        fx.node.map_arg(node.args[0], lambda a: tangent.get(a)),
                    )
                else:
                    args = fx.node.map_arg(node.args, lambda a: primal[a])
                    kwargs = fx.node.map_arg(node.kwargs, lambda a: primal[a])
                    has_tangent = any(tangent.get(a) is not None for a in node.all_input_nodes)
                    # the tangent first: an in-place primal op (ReLU6(inplace=True)) overwrites its input
                    tangent[node] = self._tangent(node, args, kwargs, tangent, n) if has_tangent else None
                    primal[node] = self._call(node, args, kwargs)
                for done in self.last_use.get(i, ()):
                    primal.pop(done, None)
                    tangent.pop(done, None)
        logits, derivative = result
        if derivative is None:  # the output does not depend on the layer (split_at_layer refuses that)
            derivative = torch.zeros((n, *logits.shape), dtype=logits.dtype, device=logits.device)
        return logits, derivative

    def _call(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function" and callable(node.target):
            return node.target(*args, **kwargs)
        if node.op == "call_method" and isinstance(node.target, str):
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self.head
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        raise RuntimeError(f"unexpected fx node {node.op} {node.target}")

    # -- tangent rules ----------------------------------------------------------------------
    def _tangent(self, node: fx.Node, args: tuple, kwargs: dict, tangent: dict[fx.Node, Tangent], n: int) -> Tangent:
        fast = self._fast_rule(node, args, kwargs, tangent, n)
        if fast is not NotImplemented:
            return fast
        self.fallback_nodes.add(node.name)
        return self._library_jvp(node, args, kwargs, tangent)

    def _fast_rule(self, node: fx.Node, args: tuple, kwargs: dict, tangent: dict[fx.Node, Tangent], n: int) -> Any:
        tensor_inputs = [a for a in node.all_input_nodes if tangent.get(a) is not None]
        first = node.args[0] if node.args else None
        only_first = len(tensor_inputs) == 1 and isinstance(first, fx.Node) and tensor_inputs[0] is first
        first_tangent = tangent[first] if only_first and isinstance(first, fx.Node) else None
        # the tangent of the node's only moving input, a tensor (a multi-output node's tuple: the library's jvp)
        t = first_tangent if isinstance(first_tangent, torch.Tensor) else None
        if node.op == "call_module":
            if t is None or kwargs or not isinstance(node.target, str):
                return NotImplemented
            return self._module_rule(node, self.modules[node.target], args, t, n)
        if node.op == "call_function":
            return self._function_rule(node, args, kwargs, tangent, t, n)
        if node.op == "call_method" and t is not None:
            if node.target in ("contiguous",):
                return t
            if node.target in ("flatten",) and _start_dim(args[1:], kwargs, default=0) >= 1:
                return _unflat(_flat(t).flatten(*args[1:], **kwargs), n)
        return NotImplemented

    def _module_rule(self, node: fx.Node, module: nn.Module, args: tuple, t: torch.Tensor, n: int) -> Any:
        x = args[0]
        if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
            out = F.conv2d(_flat(t), module.weight, None, module.stride, module.padding, module.dilation, module.groups)
            return _unflat(out, n)
        if isinstance(module, nn.Linear):
            return _unflat(F.linear(_flat(t), module.weight), n)
        if isinstance(module, nn.BatchNorm2d) and not module.training and module.running_var is not None:
            invstd, weight = self._batchnorm_factors(str(node.target), module)
            t = t * invstd  # autograd's order (t * invstd) * weight: the same float32 result bit for bit
            return t * weight if weight is not None else t
        if isinstance(module, nn.ReLU):
            return _relu_tangent(t, x)
        if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            return _hardtanh_tangent(t, x, module.min_val, module.max_val)
        if isinstance(module, nn.Dropout) and not module.training:
            return t
        if isinstance(module, nn.Flatten) and module.start_dim >= 1:
            return _unflat(module(_flat(t)), n)
        if isinstance(module, _BATCH_AGNOSTIC_MODULES):
            return _unflat(module(_flat(t)), n)
        return NotImplemented

    def _function_rule(
        self,
        node: fx.Node,
        args: tuple,
        kwargs: dict,
        tangent: dict[fx.Node, Tangent],
        t: torch.Tensor | None,
        n: int,
    ) -> Any:
        """``t``: the tangent of the first argument when it is the only moving input, else None."""
        f = node.target
        if f in (operator.add, operator.iadd, torch.add) and len(node.args) == 2 and not kwargs:
            parts = [tangent.get(a) for a in node.args if isinstance(a, fx.Node)]
            moving = [p for p in parts if isinstance(p, torch.Tensor)]
            if len(moving) != len([p for p in parts if p is not None]):
                return NotImplemented  # not a tensor sum
            return moving[0] if len(moving) == 1 else moving[0] + moving[1]
        if t is None:
            if f is torch.cat:
                return self._cat_rule(node, args, kwargs, tangent, n)
            return NotImplemented
        if f in (F.relu, torch.relu, torch.relu_):
            return _relu_tangent(t, args[0])
        if f is F.relu6:
            return _hardtanh_tangent(t, args[0], 0.0, 6.0)
        if f is F.hardtanh:
            low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            return _hardtanh_tangent(t, args[0], low, high)
        if f is F.dropout and not (args[2] if len(args) > 2 else kwargs.get("training", True)):
            return t
        if f is torch.flatten and _start_dim(args[1:], kwargs, default=0) >= 1:
            return _unflat(torch.flatten(_flat(t), *args[1:], **kwargs), n)
        if f in _BATCH_AGNOSTIC_FUNCTIONS:
            return _unflat(f(_flat(t), *args[1:], **kwargs), n)
        return NotImplemented

    def _cat_rule(self, node: fx.Node, args: tuple, kwargs: dict, tangent: dict[fx.Node, Tangent], n: int) -> Any:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(a, fx.Node) for a in tensors):
            return NotImplemented
        values = list(args[0]) if node.args else list(kwargs["tensors"])
        if dim < 0:
            dim += values[0].dim()
        if dim < 1:
            return NotImplemented
        parts: list[torch.Tensor] = []
        for a, value in zip(tensors, values):
            t = tangent.get(a)
            if t is not None and not isinstance(t, torch.Tensor):
                return NotImplemented
            parts.append(t if t is not None else value.new_zeros((n, *value.shape)))
        return torch.cat(parts, dim=dim + 1)

    def _batchnorm_factors(self, name: str, module: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eval-mode BatchNorm is y = (x - mean) * invstd * weight + bias: its tangent map is t * invstd * weight."""
        if name not in self._bn:
            shape = (1, 1, -1, 1, 1)  # [T, B, C, H, W]
            if module.running_var is None:  # _module_rule sends only BatchNorms with running statistics
                raise ValueError(f"{name}: BatchNorm without running statistics has no fixed tangent map")
            invstd = (1.0 / torch.sqrt(module.running_var + module.eps)).view(shape)
            weight = module.weight.detach().view(shape) if module.weight is not None else None
            self._bn[name] = (invstd, weight)
        return self._bn[name]

    def _library_jvp(self, node: fx.Node, args: tuple, kwargs: dict, tangent: dict[fx.Node, Tangent]) -> Tangent:
        """``torch.func.jvp`` of this one node, vectorised over the T tangents by ``torch.func.vmap``."""
        moving = [a for a in node.all_input_nodes if tangent.get(a) is not None]
        primal_args = fx.node.map_arg(node.args, lambda a: a)
        primal_kwargs = fx.node.map_arg(node.kwargs, lambda a: a)
        values = {a: v for a, v in zip(node.all_input_nodes, _values_in_order(node, args, kwargs))}

        def call(*moving_values: torch.Tensor) -> Any:
            env = dict(values)
            env.update(zip(moving, moving_values))
            a = fx.node.map_arg(primal_args, lambda x: env[x])
            k = fx.node.map_arg(primal_kwargs, lambda x: env[x])
            return self._call(node, a, k)

        primals = tuple(_clone(values[a]) for a in moving)  # in-place ops inside must not touch the real primal

        def one(*ts: Any) -> Any:  # each a tensor's tangent, or a tuple of them
            return torch.func.jvp(call, primals, ts)[1]

        return torch.func.vmap(one)(*(tangent[a] for a in moving))


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _start_dim(rest: tuple, kwargs: dict, default: int) -> int:
    return int(rest[0]) if rest else int(kwargs.get("start_dim", default))


def _values_in_order(node: fx.Node, args: tuple, kwargs: dict) -> list[Any]:
    """The primal values of ``node.all_input_nodes``, in that order, read from the evaluated args."""
    found: dict[fx.Node, Any] = {}

    def walk(arg: Any, value: Any) -> None:
        if isinstance(arg, fx.Node):
            found.setdefault(arg, value)
        elif isinstance(arg, (list, tuple)):
            for a, v in zip(arg, value):
                walk(a, v)
        elif isinstance(arg, dict):
            for key in arg:
                walk(arg[key], value[key])

    walk(node.args, args)
    walk(node.kwargs, kwargs)
    return [found[a] for a in node.all_input_nodes]
