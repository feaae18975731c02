"""Objectives (stages/featurevis/objectives.py): values and gradients computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.objectives import (
    AtlasDirection,
    Channel,
    ClassLogit,
    ClassProbability,
    DeepDream,
    Direction,
    Neuron,
)

L = "layer"


def _acts_2x3x3() -> torch.Tensor:
    """One image, 2 channels, 3x3; the centre (1, 1) holds h = (3, 4), |h| = 5."""
    t = torch.arange(18, dtype=torch.float32).view(1, 2, 3, 3) / 10
    t[0, :, 1, 1] = torch.tensor([3.0, 4.0])
    return t.requires_grad_(True)


# ---- the atlas objective (docs/method.md §5) -----------------------------------------------


def test_atlas_objective_value_by_hand_unwhitened():
    acts = _acts_2x3x3()
    value = AtlasDirection(L, torch.tensor([2.0, 1.0]), cos_power=4, cosine="lucid")({L: acts})
    dot = (3 * 2 + 4 * 1) / 2  # mean over the 2 channels
    cos = max(0.1, dot / (1e-4 + 5.0))
    assert value.shape == (1,)
    assert value.item() == pytest.approx(dot * cos**4, rel=1e-6)


def test_atlas_objective_value_by_hand_whitened():
    acts = _acts_2x3x3()
    s = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    value = AtlasDirection(L, torch.tensor([2.0, 1.0]), whitening=s, cos_power=2, cosine="lucid")({L: acts})
    v_white = (2 * 1 + 1 * 0, 2 * 0.5 + 1 * 2)  # v' = v S (row vector times S) = (2, 3)
    dot = (3 * v_white[0] + 4 * v_white[1]) / 2
    cos = max(0.1, dot / (1e-4 + 5.0))
    assert value.item() == pytest.approx(dot * cos**2, rel=1e-6)


def test_atlas_objective_raw_cosine_uses_the_unwhitened_direction():
    acts = _acts_2x3x3()
    s = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    value = AtlasDirection(L, torch.tensor([2.0, 1.0]), whitening=s, cos_power=2, cosine="raw")({L: acts})
    dot = (3 * 2 + 4 * 3) / 2  # whitened v' = (2, 3), as above
    cos = (3 * 2 + 4 * 1) / (5.0 * math.sqrt(5.0))  # true cosine of h = (3, 4) with the raw v = (2, 1)
    assert value.item() == pytest.approx(dot * cos**2, rel=1e-4)  # 1e-4 in the denominator


def test_atlas_objective_raw_cosine_floor_and_bad_mode():
    acts = _acts_2x3x3()
    value = AtlasDirection(L, torch.tensor([-4.0, 3.0]), cos_power=3, cosine="raw")({L: acts})
    assert value.item() == pytest.approx(((-12 + 12) / 2) * 0.1**3, abs=1e-9)  # cos 0 -> floor 0.1
    with pytest.raises(FeatureVisError, match="render.cosine"):
        AtlasDirection(L, torch.tensor([1.0, 0.0]), cosine="cosine")


def test_atlas_objective_gradient_matches_closed_form():
    acts = _acts_2x3x3()
    v = torch.tensor([2.0, 1.0])
    p, eps, c = 4, 1e-4, 2
    AtlasDirection(L, v, cos_power=p, cosine="lucid")({L: acts}).sum().backward()
    h = torch.tensor([3.0, 4.0], dtype=torch.float64)
    vd = v.double()
    dot, norm = float(h @ vd) / c, float(h.norm())
    # d/dh [dot * (dot / (eps + |h|))^p]
    expected = (p + 1) * dot**p / (eps + norm) ** p * vd / c - p * dot ** (p + 1) / (eps + norm) ** (p + 1) * h / norm
    torch.testing.assert_close(acts.grad[0, :, 1, 1].double(), expected, rtol=1e-5, atol=1e-6)
    off_centre = acts.grad.clone()
    off_centre[0, :, 1, 1] = 0
    assert float(off_centre.abs().max()) == 0.0  # only the centre position is optimised


def test_atlas_objective_gradient_matches_finite_difference():
    acts = _acts_2x3x3()
    v = torch.tensor([2.0, 1.0])
    obj = AtlasDirection(L, v, cos_power=4, cosine="lucid")
    obj({L: acts}).sum().backward()

    def f(h0: float, h1: float) -> float:
        dot = (h0 * 2 + h1 * 1) / 2
        cos = max(0.1, dot / (1e-4 + math.hypot(h0, h1)))
        return dot * cos**4

    step = 1e-4
    fd = [(f(3 + step, 4) - f(3 - step, 4)) / (2 * step), (f(3, 4 + step) - f(3, 4 - step)) / (2 * step)]
    torch.testing.assert_close(acts.grad[0, :, 1, 1], torch.tensor(fd), rtol=1e-3, atol=1e-4)


def test_atlas_objective_cos_floor_when_anti_aligned():
    acts = _acts_2x3x3()
    value = AtlasDirection(L, torch.tensor([-1.0, 0.0]), cos_power=4, cosine="lucid")({L: acts})
    value.sum().backward()
    dot = -3.0 / 2
    assert value.item() == pytest.approx(dot * 0.1**4, rel=1e-6)
    # cos is clamped (constant), so the gradient is 0.1^4 * v / C at the centre
    torch.testing.assert_close(acts.grad[0, :, 1, 1], torch.tensor([-0.5e-4, 0.0]))


def test_atlas_objective_is_finite_at_a_dead_centre():
    acts = torch.zeros(1, 2, 3, 3, requires_grad=True)
    value = AtlasDirection(L, torch.tensor([1.0, 1.0]), cosine="lucid")({L: acts})
    value.sum().backward()
    assert torch.isfinite(acts.grad).all()


def test_atlas_objective_one_value_per_direction_and_image():
    acts = torch.rand(3, 4, 5, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    dirs = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    obj = AtlasDirection(L, dirs, cos_power=2, cosine="lucid")
    values = obj({L: acts})
    assert values.shape == (3,)
    for i in range(3):
        alone = AtlasDirection(L, dirs[i], cos_power=2, cosine="lucid")({L: acts[i : i + 1]})
        torch.testing.assert_close(values[i : i + 1], alone)
    values[1].backward()
    assert float(acts.grad[[0, 2]].abs().max()) == 0.0  # image 1's value touches only image 1


# ---- the other objectives ------------------------------------------------------------------


def test_neuron_defaults_to_centre_and_takes_positions_and_per_image_channels():
    acts = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    assert Neuron(L, 1)({L: acts}).tolist() == [acts[0, 1, 2, 2].item(), acts[1, 1, 2, 2].item()]
    assert Neuron(L, 2, x=4, y=0)({L: acts}).tolist() == [acts[0, 2, 0, 4].item(), acts[1, 2, 0, 4].item()]
    assert Neuron(L, [0, 2])({L: acts}).tolist() == [acts[0, 0, 2, 2].item(), acts[1, 2, 2, 2].item()]


def test_channel_is_the_spatial_mean():
    acts = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Channel(L, [2, 0])({L: acts}), torch.stack([acts[0, 2].mean(), acts[1, 0].mean()]))


def test_deepdream_value_and_gradient():
    acts = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]], requires_grad=True)  # [1, 2, 1, 2]
    value = DeepDream(L)({L: acts})
    assert value.item() == pytest.approx((1 + 4 + 9 + 0) / 4)
    value.sum().backward()
    torch.testing.assert_close(acts.grad, 2 * acts.detach() / 4)


def test_class_logit_and_probability():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert ClassLogit([2, 0])({"logits": logits}).tolist() == [3.0, 0.0]
    e = [math.exp(1), math.exp(2), math.exp(3)]
    prob = ClassProbability(1)({"logits": logits})
    assert prob.tolist() == pytest.approx([e[1] / sum(e), 1 / 3])


def test_direction_is_the_channel_mean_of_h_times_v():
    acts = _acts_2x3x3()
    value = Direction(L, torch.tensor([2.0, -1.0]))({L: acts})
    assert value.item() == pytest.approx((3 * 2 - 4 * 1) / 2)
    value.sum().backward()
    torch.testing.assert_close(acts.grad[0, :, 1, 1], torch.tensor([1.0, -0.5]))


# ---- composition ---------------------------------------------------------------------------


def test_objectives_add_scale_and_subtract():
    acts = {L: torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))}
    a, b = Channel(L, 0), Neuron(L, 1)
    torch.testing.assert_close((a + 2 * b)(acts), a(acts) + 2 * b(acts))
    torch.testing.assert_close((a - b)(acts), a(acts) - b(acts))
    torch.testing.assert_close((-a)(acts), -a(acts))
    torch.testing.assert_close((a / 4)(acts), a(acts) / 4)
    torch.testing.assert_close((a * 3)(acts), 3 * a(acts))
    torch.testing.assert_close(sum([a, b, a])(acts), 2 * a(acts) + b(acts))
    weights = torch.tensor([1.0, -1.0])
    torch.testing.assert_close((a * weights)(acts), a(acts) * weights)


def test_composite_gradient_is_the_sum_of_the_parts():
    acts = _acts_2x3x3()
    (Neuron(L, 0) + 2 * Neuron(L, 1))({L: acts}).sum().backward()
    assert acts.grad[0, :, 1, 1].tolist() == [1.0, 2.0]


# ---- errors name the problem ---------------------------------------------------------------


def test_errors_are_one_line_and_actionable():
    acts = {L: torch.zeros(2, 3, 4, 4)}
    with pytest.raises(FeatureVisError, match="forward returned only: layer"):
        Channel("other", 0)(acts)
    with pytest.raises(FeatureVisError, match="batch of 2"):
        Channel(L, [0, 1, 2])(acts)
    with pytest.raises(FeatureVisError, match="out of range"):
        Neuron(L, 3)(acts)
    with pytest.raises(FeatureVisError, match="has 3"):
        AtlasDirection(L, torch.ones(5))(acts)
    with pytest.raises(FeatureVisError, match="batch of 2"):
        Direction(L, torch.ones(3, 3))(acts)
    with pytest.raises(FeatureVisError, match="whitening"):
        AtlasDirection(L, torch.ones(3), whitening=torch.eye(2))
    with pytest.raises(FeatureVisError, match="outside"):
        Neuron(L, 0, x=9)(acts)


def test_atlas_objective_default_cosine_is_the_render_stage_default():
    """The engine used alone and the render stage must render the same objective by default."""
    from stages.config import RenderConfig

    assert AtlasDirection(L, torch.tensor([1.0, 0.0])).cosine == RenderConfig().cosine == "raw"
    assert issubclass(FeatureVisError, ValueError)
