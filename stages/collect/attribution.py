"""Attribution of a sampled activation to every class with one forward-mode product.

docs/method.md §2: attr_k = h . grad_h logit_k, where h is the activation vector at the
sampled (y, x). That is the directional derivative of the logits along a tangent equal to h at
(y, x) and zero elsewhere, so one Jacobian-vector product through the head gives the whole class
vector for every sample of a batch at once (instead of one backward pass per class).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def position_tangent(activations: torch.Tensor, yx: torch.Tensor) -> torch.Tensor:
    """A tensor like ``activations`` [B, C, H, W] that equals it at (y_b, x_b) and is 0 elsewhere."""
    tangent = torch.zeros_like(activations)
    batch = torch.arange(activations.shape[0], device=activations.device)
    y, x = yx[:, 0].long(), yx[:, 1].long()
    tangent[batch, :, y, x] = activations[batch, :, y, x]
    return tangent


def logits_and_attribution(
    head: Callable[..., torch.Tensor],
    activations: torch.Tensor,
    cuts: tuple[torch.Tensor, ...],
    yx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, K], attribution [B, K]) for one sampled position per batch item.

    ``cuts`` are the tensors from below the layer that the head also reads (residual inputs);
    they are held constant, so this is the partial derivative with respect to the layer.
    """
    tangent = position_tangent(activations, yx)
    logits, attribution = torch.func.jvp(lambda a: head(a, *cuts), (activations,), (tangent,))
    return logits, attribution


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and values of the k largest entries per row (k clipped to the row length)."""
    k = min(k, values.shape[1])
    top = values.topk(k, dim=1)
    return top.indices, top.values
