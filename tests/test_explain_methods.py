"""stages/explain/attribution.py, relu_rules.py, cam.py: the attribution methods against their definitions.

Small hand-made nets test the *definitions* (finite differences, the backward rules written out by
hand, a patch that is the only evidence); the real MobileNetV2 tests that Grad-CAM equals CAM
where both apply, that CAM is found where the architecture allows it, and that no hook or
function mode outlives a call, even one that fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from stages.explain import attribution as A
from stages.explain.cam import cam_layer
from stages.explain.methods import MethodSettings, method_maps
from stages.explain.relu_rules import relu_rule
from stages.model.registry import LoadedModel
from store.errors import AtlasError


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hooks(module: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in module.modules()
    )


def _smooth_net() -> nn.Module:
    """conv -> tanh -> global mean -> linear, float64, fixed seed (a smooth function: finite differences apply)."""
    torch.manual_seed(3)
    return (
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        .double()
        .eval()
    )


def test_saliency_equals_finite_differences() -> None:
    net = A.Net(_smooth_net(), _identity)
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([2, 0])
    grads = A.input_gradients(net, x, classes, batch_size=1)  # batch 1: the batching itself is tested too
    eps = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for b in range(2):
            for idx in np.ndindex(3, 6, 6):
                up, down = x[b : b + 1].clone(), x[b : b + 1].clone()
                up[(0, *idx)] += eps
                down[(0, *idx)] -= eps
                fd[(b, *idx)] = (net(up)[0, classes[b]] - net(down)[0, classes[b]]) / (2 * eps)
    torch.testing.assert_close(grads, fd, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(A.saliency(grads), fd.abs().amax(dim=1))
    torch.testing.assert_close(A.gradient_x_input(grads, x), (fd * x).sum(dim=1))


class _TwoLayer(nn.Module):
    """x -> ReLU(conv(x)) -> linear: the nets of Springenberg et al.'s and Zeiler & Fergus's definitions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 5, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_guided_backprop_and_deconvnet_follow_their_definitions(rule: str) -> None:
    model = _TwoLayer().eval()
    net = A.Net(model, _identity)
    x = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([0, 1, 2])
    got = A.input_gradients(net, x, classes, rule=rule)
    # by hand: the signal at the ReLU's output is the linear layer's row; the rule acts there; the conv is linear
    for b in range(3):
        xb = x[b : b + 1].clone().requires_grad_(True)
        pre = model.conv(xb)
        signal = model.fc.weight[classes[b]].detach().reshape(1, 5, 4, 4)
        through = signal.clamp(min=0) * (pre.detach() > 0) if rule == "guided" else signal.clamp(min=0)
        (expected,) = torch.autograd.grad(pre, xb, grad_outputs=through)
        torch.testing.assert_close(got[b : b + 1], expected)
    plain = A.input_gradients(net, x, classes)
    assert not torch.allclose(got, plain)  # the rule really replaced the ReLU's backward
    assert _hooks(model) == 0 and torch._C._len_torch_function_stack() == 0


def test_relu6_rules_use_both_switches() -> None:
    x = torch.tensor([-1.0, 0.5, 3.0, 7.0], requires_grad=True)
    signal = torch.tensor([1.0, -1.0, 2.0, 1.0])
    with relu_rule("guided") as mode:
        (g,) = torch.autograd.grad(nn.ReLU6()(x), x, grad_outputs=signal)
    assert g.tolist() == [0.0, 0.0, 2.0, 0.0] and mode.calls == 1  # off below 0 and above 6, negatives cut
    with relu_rule("deconvnet"):
        (g,) = torch.autograd.grad(nn.ReLU6()(x), x, grad_outputs=signal)
    assert g.tolist() == [1.0, 0.0, 2.0, 1.0]  # only the signal's sign matters
    (g,) = torch.autograd.grad(nn.ReLU6()(x), x, grad_outputs=signal)  # outside the block: the true gradient
    assert g.tolist() == [0.0, -1.0, 2.0, 0.0]


def test_a_rule_on_a_model_without_relu_is_refused() -> None:
    net = A.Net(_smooth_net().float(), _identity)
    with pytest.raises(AtlasError, match="calls no ReLU"):
        A.input_gradients(net, torch.rand(1, 3, 6, 6), torch.tensor([0]), rule="guided")
    assert torch._C._len_torch_function_stack() == 0


class _RedDetector(nn.Module):
    """Class 0's logit: the summed redness (red minus the other channels, rectified) of the image;
    class 1's: a constant. Hand-set weights: a red patch is the only evidence for class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, -0.5, -0.5]).reshape(1, 3, 1, 1)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = torch.relu(self.conv(x)).sum(dim=(1, 2, 3))
        return torch.stack([red / 20.0, torch.full_like(red, 1.0)], dim=1)


def test_occlusion_finds_the_only_evidence() -> None:
    image = torch.full((1, 3, 32, 32), 0.5)
    image[0, :, 8:16, 20:28] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # the red patch
    occ = A.occlusion(
        A.Net(_RedDetector().eval(), _identity), image, torch.tensor([0, 1]), window=8, stride=4, batch_size=7
    )
    assert occ.drop.shape == (2, 7, 7) and occ.pixels.shape == (2, 32, 32)
    drop = occ.drop[0]
    for r, y in enumerate(occ.starts_y):
        for c, x in enumerate(occ.starts_x):
            overlaps = y < 16 and y + 8 > 8 and x < 28 and x + 8 > 20
            assert (drop[r, c] > 1e-6) == overlaps  # only windows on the patch lower class 0
    r, c = np.unravel_index(int(drop.argmax()), drop.shape)
    assert (occ.starts_y[r], occ.starts_x[c]) == (8, 20)  # the window covering the whole patch lowers it most
    inside, outside = occ.pixels[0, 8:16, 20:28], occ.pixels[0].clone()
    outside[4:20, 16:32] = 0  # everything beyond the reach of a window touching the patch
    assert inside.min() > 0 and outside.abs().max() == 0
    assert A.window_starts(32, 8, 5) == [0, 5, 10, 15, 20, 24]  # the last window flush with the edge


def test_grad_cam_equals_cam_on_mobilenet(mobilenet: LoadedModel, photo_folder) -> None:
    from stages.config import Config
    from stages.explain.stage import load_photo, model_input

    check = cam_layer(mobilenet.module)
    assert check.spec is not None and check.spec.layer == "features.18.2" and check.spec.linear == "classifier.1"
    net = A.Net(mobilenet.module, mobilenet.normalize)
    x = model_input(load_photo(next(photo_folder.glob("tabby/*.jpg")), Config()), torch.device("cpu"))
    batch, classes = x[None].repeat(3, 1, 1, 1), torch.tensor([285, 281, 850])
    cam = A.class_activation_map(net, batch, classes, check.spec.layer, check.spec.weight, check.spec.bias)
    grad_cam = A.grad_cam(net, batch, classes, check.spec.layer)
    assert cam.shape == grad_cam.shape == (3, 7, 7)
    # Selvaraju et al. §3.1: at the pooled layer alpha_k = w_ck / (h w), so Grad-CAM = ReLU(CAM) / (h w)
    torch.testing.assert_close(grad_cam, torch.relu(cam) / 49, rtol=1e-4, atol=1e-6)
    assert grad_cam.max() > 0 and (cam < 0).any()  # not a trivial agreement of zeros
    assert _hooks(mobilenet.module) == 0


def test_cam_is_refused_where_the_architecture_does_not_allow_it() -> None:
    vgg_like = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    ).eval()
    check = cam_layer(vgg_like)
    assert check.spec is None and "not fed by a global average pool" in check.reason
    gap = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(4, 3)
    ).eval()
    assert cam_layer(gap).spec.layer == "1"
    assert cam_layer(torchvision.models.vgg11(weights=None)).spec is None
    resnet = cam_layer(torchvision.models.resnet18(weights=None))
    assert resnet.spec is not None and resnet.spec.layer == "layer4.1" and resnet.spec.linear == "fc"
    # a spec that does not fit the network is caught by the logit identity, never drawn
    net = A.Net(vgg_like, _identity)
    with pytest.raises(AtlasError, match="CAM does not apply"):
        A.class_activation_map(net, torch.rand(1, 3, 8, 8), torch.tensor([0]), "1", torch.rand(3, 4))


def test_every_method_removes_its_hooks_even_when_it_fails(mobilenet: LoadedModel) -> None:
    net = A.Net(mobilenet.module, mobilenet.normalize)
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    settings = MethodSettings(batch_size=2, window=32, stride=32, grad_cam_layer="features.13.conv.0")
    maps = method_maps(
        net,
        x,
        [1],
        ["saliency", "gradient_x_input", "guided_backprop", "deconvnet", "occlusion", "cam", "grad_cam"],
        settings,
        cam_layer(mobilenet.module),
    )
    assert set(maps.maps) == {
        "saliency",
        "gradient_x_input",
        "guided_backprop",
        "deconvnet",
        "occlusion",
        "cam",
        "grad_cam",
    }
    assert all(m.shape == (1, 64, 64) for m in maps.maps.values())
    assert _hooks(mobilenet.module) == 0 and torch._C._len_torch_function_stack() == 0
    with pytest.raises(AtlasError, match="not found"):
        A.grad_cam(net, x[None], torch.tensor([0]), "features.99")
    with pytest.raises(AtlasError, match="not \\[C, h, w\\]"):
        A.grad_cam(net, x[None], torch.tensor([0]), "classifier.1")  # hook registered, then the call fails
    with pytest.raises(RuntimeError), relu_rule("guided"):
        raise RuntimeError("boom")  # the mode ends with the block anyway
    assert _hooks(mobilenet.module) == 0 and torch._C._len_torch_function_stack() == 0
    # the model still computes the plain gradient afterwards
    g1 = A.input_gradients(net, x[None], torch.tensor([3]))
    assert torch.equal(g1, A.input_gradients(net, x[None], torch.tensor([3])))


def test_methods_run_on_another_architecture() -> None:
    """ResNet-18 (architecture only: the definitions, not a result): ReLU modules called twice per block,
    CAM at ``layer4`` (its blocks' output), Grad-CAM = ReLU(CAM) / (h w) there too."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    net = A.Net(model, _identity)
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    check = cam_layer(model)
    settings = MethodSettings(batch_size=2, window=32, stride=32, grad_cam_layer=check.spec.layer)
    maps = method_maps(net, x, [3, 7], ["saliency", "guided_backprop", "cam", "grad_cam"], settings, check)
    assert all(m.shape == (2, 64, 64) for m in maps.maps.values()) and not maps.skipped
    batch, classes = x[None].repeat(2, 1, 1, 1), torch.tensor([3, 7])
    cam = A.class_activation_map(net, batch, classes, check.spec.layer, check.spec.weight, check.spec.bias)
    torch.testing.assert_close(
        A.grad_cam(net, batch, classes, check.spec.layer), torch.relu(cam) / cam[0].numel(), rtol=1e-4, atol=1e-7
    )
    assert _hooks(model) == 0
