"""lucid's redirected ReLU gradient, for the first steps of an optimisation.

A unit that is off (ReLU input below 0) for the random starting image passes no gradient, so
its visualization never starts and the icon stays flat grey. lucid's renderer (``render.make_vis_T``,
``relu_gradient_override=True`` by default, used by the activation-atlas notebooks'
``render_icons``) overrides the gradient of every ReLU and ReLU6 for the first 16 steps
(``lucid/misc/redirected_relu_grad.py``): per batch item, if the true ReLU gradient is zero
everywhere, pass the gradient through wherever it pushes the input back into the active range
(up from below 0, down from above 6). The forward value is unchanged.

Here the override is a ``TorchFunctionMode`` that swaps ``relu``/``relu6`` (and ``hardtanh``
with limits 0 and 6, which ``nn.ReLU6`` calls) for an autograd function with that backward. It
intercepts functional calls too (torchvision's GoogLeNet calls ``F.relu`` directly), needs no
hooks on the model, and is active only inside its ``with`` block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

# lucid: ``return_relu_grad = global_step > 16``.
REDIRECT_STEPS = 16


class _RedirectedRelu(torch.autograd.Function):
    """``clamp(x, 0, upper)`` whose gradient is redirected when it would be zero."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.upper = upper
        return torch.clamp(x, min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        off = x < 0
        if ctx.upper is not None:
            off |= x > ctx.upper
        # ``where`` with a scalar is one pass (``masked_fill`` out of place is a copy and a fill).
        relu_grad = torch.where(off, 0.0, grad)
        if x.ndim < 2:
            return _redirected(x, grad, ctx.upper), None
        flows = relu_grad.flatten(1).abs().amax(dim=1) > 0
        # Usually every image's true gradient flows somewhere: then the redirected gradient (five
        # more passes over the tensor, the bulk of a redirected step's cost) is not needed.
        if x.device.type == "cpu" and bool(flows.all()):
            return relu_grad, None
        flows = flows.view(-1, *([1] * (x.ndim - 1)))
        return torch.where(flows, relu_grad, _redirected(x, grad, ctx.upper)), None


def _redirected(x: Tensor, grad: Tensor, upper: float | None) -> Tensor:
    """The gradient where it pushes ``x`` back into ``[0, upper]``, 0 where it pushes it further out."""
    # The optimiser descends: a positive gradient pushes the input down, a negative one up.
    wrong_way = (x < 0) & (grad > 0)
    if upper is not None:
        wrong_way |= (x > upper) & (grad < 0)
    return torch.where(wrong_way, 0.0, grad)


def relu_upper(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[bool, float | None]:
    """Whether ``func(*args, **kwargs)`` is a ReLU (upper None) or a ReLU6 (upper 6)."""
    if func in (F.relu, torch.relu, Tensor.relu, torch.relu_, Tensor.relu_):
        return True, None
    if func is F.relu6:
        return True, 6.0
    if func is F.hardtanh:
        low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        if low == 0.0 and high == 6.0:
            return True, 6.0
    return False, None


class redirected_relu_grad(TorchFunctionMode):
    """Inside this block, ReLU and ReLU6 calls get lucid's redirected gradient."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: tuple[type, ...],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        is_relu, upper = relu_upper(func, args, kwargs)
        if is_relu and isinstance(args[0], Tensor) and torch.is_grad_enabled():
            # A new tensor even for inplace calls: callers use the return value
            # (``x = F.relu(x, inplace=True)``), and autograd needs the input intact.
            return _RedirectedRelu.apply(args[0], upper)
        return func(*args, **kwargs)
