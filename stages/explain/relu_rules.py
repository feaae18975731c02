"""The backward rules of guided backpropagation and the deconvnet, as a scoped torch function mode.

Both methods are "the gradient, except through the ReLUs" (Springenberg et al., 2015, "Striving
for Simplicity", Fig. 1; Zeiler & Fergus, 2014, "Visualizing and Understanding Convolutional
Networks", §2.1). With ``x`` the ReLU's input and ``g`` the signal arriving from above:

- plain gradient:        ``g * 1[x > 0]``            (the forward switch)
- deconvnet:             ``g * 1[g > 0]``            (ReLU of the signal; the forward switch ignored)
- guided backpropagation: ``g * 1[x > 0] * 1[g > 0]`` (both)

ReLU6 (MobileNetV2) has a second switch at 6: the forward switch is ``1[0 < x < 6]``; guided
backprop keeps it, the deconvnet ignores it like the lower one. Every other operation keeps its
true gradient.

Why a :class:`~torch.overrides.TorchFunctionMode` and not module backward hooks: MobileNetV2 uses
``nn.ReLU6(inplace=True)``, where full backward hooks fail or are skipped, and some torchvision
models call ``F.relu`` directly (GoogLeNet, ResNet's blocks reuse one module), which module hooks
would miss. The mode intercepts the functional calls (``relu``, ``relu6`` and the
``hardtanh(0, 6)`` that ``nn.ReLU6`` calls), registers nothing on the model, and is active only
inside its ``with`` block, so nothing can leak when it ends, by return or by exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from stages.featurevis.relu_grad import relu_upper

Rule = Literal["guided", "deconvnet"]
RULES: tuple[str, ...] = ("guided", "deconvnet")


class _RuleRelu(torch.autograd.Function):
    """``clamp(x, 0, upper)`` whose backward applies a :data:`Rule`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None, rule: str) -> Tensor:
        ctx.save_for_backward(x)
        ctx.upper, ctx.rule = upper, rule
        return torch.clamp(x, min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        positive_signal = grad.clamp(min=0)
        if ctx.rule == "deconvnet":
            return positive_signal, None, None
        switch = x > 0
        if ctx.upper is not None:
            switch &= x < ctx.upper
        return positive_signal * switch, None, None


class relu_rule(TorchFunctionMode):
    """Inside this block every ReLU / ReLU6 call backpropagates with ``rule``.

    ``calls`` counts the ReLUs that were replaced, so a caller can refuse a model that has none
    (a method "through the ReLUs" is then just the gradient, and would be mislabelled).
    """

    def __init__(self, rule: Rule) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES} (got {rule!r})")
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        is_relu, upper = relu_upper(func, args, kwargs)
        if is_relu and isinstance(args[0], Tensor) and torch.is_grad_enabled():
            self.calls += 1
            # a new tensor even for in-place calls: modules use the return value, autograd needs x intact
            return _RuleRelu.apply(args[0], upper, self.rule)
        return func(*args, **kwargs)
