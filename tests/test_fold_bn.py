"""BatchNorm folding for renders: same layer output, fewer ops, never a silent change."""

from __future__ import annotations

import torch
from torch import nn

from stages.featurevis import layer_forward
from stages.featurevis.fold_bn import fold_batchnorm
from stages.model.registry import LoadedModel


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_mobilenet_gives_the_same_layer_output(mobilenet: LoadedModel) -> None:
    before = _count_bn(mobilenet.module)
    folded = fold_batchnorm(mobilenet.module, mobilenet.layer, mobilenet.normalize)
    assert folded is not mobilenet.module and _count_bn(folded) == 0
    assert _count_bn(mobilenet.module) == before > 40  # the original is untouched
    x = torch.rand(3, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    with (
        torch.no_grad(),
        layer_forward(mobilenet.module, mobilenet.layer, mobilenet.normalize) as a,
        layer_forward(folded, mobilenet.layer, mobilenet.normalize) as b,
    ):
        want, got = a(x)[mobilenet.layer], b(x)[mobilenet.layer]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _BnNotAfterConv(nn.Module):
    """Named like a (conv, bn) pair, but the BatchNorm is applied to the input, before the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)
            self.bn.weight.fill_(1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_a_pair_that_is_not_conv_then_bn_is_left_alone() -> None:
    model = nn.Sequential(_BnNotAfterConv()).eval()
    assert fold_batchnorm(model, "0") is model


def test_training_mode_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(model, "1") is model
    model.eval()
    folded = fold_batchnorm(model, "1")
    assert folded is not model and _count_bn(folded) == 0
