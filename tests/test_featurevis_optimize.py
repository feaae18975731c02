"""The batched loop (stages/featurevis/optimize.py) and the forward helper, on the real MobileNetV2."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.forward import layer_forward
from stages.featurevis.objectives import AtlasDirection, Channel, ClassLogit, Direction, Neuron, Objective
from stages.featurevis.optimize import render
from stages.featurevis.param import FourierImage, fft_image
from stages.featurevis.relu_grad import redirected_relu_grad
from tests.featurevis_fixtures import LAYER, mobilenet, one_thread  # noqa: F401 - pytest fixtures

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def _render(model, objective, *, size=64, batch=2, steps=32, logits=False, **kwargs):
    with layer_forward(model, LAYER, with_logits=logits) as forward:
        return render(forward, objective, FourierImage(batch, (size, size)), steps=steps, device=CPU, **kwargs)


def _directions(n: int) -> torch.Tensor:
    return torch.rand(n, 576, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "objective, logits",
    [
        (Neuron(LAYER, [10, 300]), False),
        (Channel(LAYER, [3, 42]), False),
        (ClassLogit([1, 207]), True),
        (Direction(LAYER, _directions(2)), False),
        (AtlasDirection(LAYER, _directions(2), cos_power=4), False),
    ],
    ids=["neuron", "channel", "class-logit", "direction", "atlas"],
)
def test_short_render_raises_the_objective(mobilenet, objective, logits):
    result = _render(mobilenet, objective, logits=logits)
    assert result.images.shape == (2, 64, 64, 3) and result.images.dtype == np.uint8
    assert result.objective.shape == result.initial_objective.shape == (2,)
    assert (result.objective > 1.5 * result.initial_objective).all(), (result.initial_objective, result.objective)
    assert (result.objective > result.initial_objective + 1e-6).all()
    assert result.history.shape == (1, 32, 2)


def test_same_seed_identical_images_different_seed_different(mobilenet):
    a = _render(mobilenet, Channel(LAYER, [3, 42]), size=48, steps=8, seed=3)
    b = _render(mobilenet, Channel(LAYER, [3, 42]), size=48, steps=8, seed=3)
    c = _render(mobilenet, Channel(LAYER, [3, 42]), size=48, steps=8, seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.objective, b.objective)
    assert not np.array_equal(a.images, c.images)


def test_best_attempt_is_kept_per_image(mobilenet):
    objective = Channel(LAYER, [3, 42, 7])
    both = _render(mobilenet, objective, size=32, batch=3, steps=4, attempts=2, seed=0)
    generator = torch.Generator().manual_seed(0)  # the same stream, one attempt at a time
    first = _render(mobilenet, objective, size=32, batch=3, steps=4, generator=generator)
    second = _render(mobilenet, objective, size=32, batch=3, steps=4, generator=generator)
    best = np.maximum(first.objective, second.objective)
    np.testing.assert_array_equal(both.objective, best)
    np.testing.assert_array_equal(both.attempt, (second.objective > first.objective).astype(np.int64))
    for i, attempt in enumerate(both.attempt):
        np.testing.assert_array_equal(both.images[i], (first, second)[attempt].images[i])
    assert both.history.shape == (2, 4, 3)


def test_no_hooks_remain_after_a_render_or_an_exception(mobilenet):
    assert _no_hooks(mobilenet)
    _render(mobilenet, Channel(LAYER, 0), size=32, steps=2)
    assert _no_hooks(mobilenet)

    class Broken(Objective):
        def __call__(self, acts):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _render(mobilenet, Broken(), size=32, steps=2)
    assert _no_hooks(mobilenet)
    with pytest.raises(FeatureVisError, match="features.13.conv.0"):
        with layer_forward(mobilenet, ["features.13.conv.0", "features.13.conv.O"]):
            pass
    assert _no_hooks(mobilenet)


def test_forward_stops_at_the_layer_unless_logits_are_needed(mobilenet):
    calls = []
    handle = mobilenet.classifier.register_forward_hook(lambda *args: calls.append(1))
    try:
        with layer_forward(mobilenet, LAYER) as forward:
            out = forward(torch.rand(1, 3, 32, 32))
        assert set(out) == {LAYER} and calls == []
        with layer_forward(mobilenet, LAYER, with_logits=True) as forward:
            out = forward(torch.rand(1, 3, 32, 32))
        assert set(out) == {LAYER, "logits"} and out["logits"].shape == (1, 1000) and calls == [1]
    finally:
        handle.remove()
    with pytest.raises(FeatureVisError, match="closed"):
        forward(torch.rand(1, 3, 32, 32))


def test_render_leaves_no_gradients_on_the_model(mobilenet):
    _render(mobilenet, Channel(LAYER, 0), size=32, steps=2)
    assert all(p.grad is None for p in mobilenet.parameters())


def test_redirected_relu_gradient_starts_a_dead_channel(mobilenet):
    """Channel 99 is off everywhere for the random start; lucid's override gets it going."""
    stuck = _render(mobilenet, Channel(LAYER, [99, 99]), steps=24, relu_redirect_steps=0)
    started = _render(mobilenet, Channel(LAYER, [99, 99]), steps=24)
    assert (stuck.initial_objective == 0).all() and (stuck.objective == 0).all()
    assert (started.objective > 0.1).all()


@pytest.mark.parametrize(
    "relu",
    [
        F.relu,
        torch.nn.ReLU(inplace=True),
        torch.nn.ReLU6(inplace=True),
        functools.partial(F.hardtanh, min_val=0.0, max_val=6.0),
    ],
    ids=["F.relu", "nn.ReLU", "nn.ReLU6", "F.hardtanh(0,6)"],
)
def test_redirected_relu_gradient_rules(relu):
    """lucid's rule: only when no true gradient flows, pass the part that pushes into range."""
    x = torch.tensor([[-1.0, -2.0], [-1.0, 3.0]], requires_grad=True)  # row 0 all off, row 1 half on
    with redirected_relu_grad():
        y = relu(x.clone())
    torch.testing.assert_close(y, relu(x.detach().clone()))
    (-(y * torch.tensor([1.0, -1.0])).sum()).backward()  # descent pushes x[:, 0] up, x[:, 1] down
    assert x.grad.tolist() == [[-1.0, 0.0], [0.0, 1.0]]
    x.grad = None
    relu(x.clone()).sum().backward()  # outside the block: the ordinary gradient
    assert x.grad.tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_a_lucent_style_param_function_works(mobilenet):
    with layer_forward(mobilenet, LAYER) as forward:
        result = render(forward, Channel(LAYER, 3), functools.partial(fft_image, 2, 32, 32), steps=2, device=CPU)
    assert result.images.shape == (2, 32, 32, 3)


def test_progress_callback_sees_every_step(mobilenet):
    seen = []
    _render(mobilenet, Channel(LAYER, 0), size=32, steps=3, attempts=2, progress_callback=lambda *a: seen.append(a))
    assert seen == [(i, 6) for i in range(1, 7)]


def test_mixed_precision_is_ignored_on_cpu(mobilenet):
    a = _render(mobilenet, Channel(LAYER, 0), size=32, steps=3, mixed_precision=True)
    b = _render(mobilenet, Channel(LAYER, 0), size=32, steps=3)
    assert np.array_equal(a.images, b.images)


def test_bad_arguments_and_objectives_are_reported(mobilenet):
    with pytest.raises(FeatureVisError, match="attempts"):
        _render(mobilenet, Channel(LAYER, 0), attempts=0)
    with pytest.raises(FeatureVisError, match="lr"):
        _render(mobilenet, Channel(LAYER, 0), lr=0)

    class Scalar(Objective):
        def __call__(self, acts):
            return acts[LAYER].mean()

    with pytest.raises(FeatureVisError, match="one value per image"):
        _render(mobilenet, Scalar(), size=32, steps=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renders_on_any_cuda_index_with_autocast():
    from tests.featurevis_fixtures import load_mobilenet_v2

    device = torch.device("cuda", torch.cuda.device_count() - 1)
    model = load_mobilenet_v2()
    model_gpu = type(model)()
    model_gpu.load_state_dict(model.state_dict())
    model_gpu = model_gpu.eval().to(device)
    with layer_forward(model_gpu, LAYER) as forward:
        result = render(
            forward, Channel(LAYER, [3, 42]), FourierImage(2, (64, 64)), steps=32, device=device, mixed_precision=True
        )
    assert result.images.shape == (2, 64, 64, 3)
    assert (result.objective > 1.5 * result.initial_objective).all()
    assert _no_hooks(model_gpu)
