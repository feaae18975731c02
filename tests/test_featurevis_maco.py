"""MACO (stages/featurevis/maco.py): phase-only images on a fixed natural magnitude spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.forward import layer_forward
from stages.featurevis.maco import (
    DEFAULT_MAGNITUDE,
    MacoImage,
    load_magnitude,
    natural_magnitude,
    phase_to_image,
    resample_magnitude,
)
from stages.featurevis.objectives import AtlasDirection
from stages.featurevis.optimize import render
from tests.featurevis_fixtures import LAYER, mobilenet, one_thread  # noqa: F401 - pytest fixtures

CPU = torch.device("cpu")


def _interior(spectrum: torch.Tensor) -> torch.Tensor:
    """The coefficients whose conjugate twin is not stored (not the DC / Nyquist columns of an rfft)."""
    return spectrum[..., 1:-1]


def test_stored_magnitude_is_a_natural_spectrum():
    m = load_magnitude()
    assert m.shape == (3, 80, 41) and m.dtype == torch.float32 and torch.isfinite(m).all()
    assert m[:, 0, 0].abs().max() == 0  # the DC term, meaningless once an image is standardised
    # natural images: power falls with frequency (about 1/f); the lowest frequencies dominate the highest
    assert (m[:, 0, 1] > 10 * m[:, 0, 40]).all() and (m[:, 1, 0] > 10 * m[:, 40, 0]).all()


def test_natural_magnitude_finds_a_sinusoid_and_ignores_the_mean():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = 0.5 + 0.2 * torch.cos(2 * torch.pi * 3 * x / 32)  # 3 cycles across, constant down
    images = wave.expand(2, 3, 32, 32).clone()
    m = natural_magnitude(images)
    assert m.shape == (3, 32, 17)
    peak = torch.stack(torch.unravel_index(m[0].argmax(), m[0].shape)).tolist()
    assert peak == [0, 3]
    assert m[:, 0, 0].abs().max() == 0


def test_resample_is_the_identity_at_the_same_size_and_keeps_the_falloff():
    m = load_magnitude()
    assert torch.equal(resample_magnitude(m, 80, 80), m)
    small = resample_magnitude(m, 48, 64)
    assert small.shape == (3, 48, 33) and torch.isfinite(small).all()
    assert (small[:, 0, 1] > 5 * small[:, 0, 32]).all()


def test_image_is_in_range_and_differentiable():
    params, image_fn = MacoImage(2, (48, 48))(device=CPU, generator=torch.Generator().manual_seed(0))
    image = image_fn()
    assert image.shape == (2, 3, 48, 48) and image.min() > 0 and image.max() < 1
    image[:, 0].mean().backward()
    (grad,) = (p.grad for p in params)
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_magnitude_stays_while_the_phase_changes():
    magnitude = load_magnitude()
    param = MacoImage(1, (80, 80), magnitude=magnitude)
    (raw,), image_fn = param(device=CPU, generator=torch.Generator().manual_seed(1))
    before = raw.detach().clone()
    optimizer = torch.optim.Adam([raw], lr=0.05)
    for _ in range(5):  # push the red channel up on the left half: a change only the phase can make
        optimizer.zero_grad()
        (-image_fn()[:, 0, :, :40].mean()).backward()
        optimizer.step()
    assert (raw.detach() - before).abs().max() > 0.1
    for phase in (before, raw.detach()):
        linear = phase_to_image(magnitude, phase * param.phase_scale, 80, 80)
        spectrum = _interior(torch.fft.rfftn(linear, dim=(-2, -1), norm="ortho").abs()[0])
        ratio = spectrum / _interior(magnitude)  # standardising scales the whole spectrum by one factor
        assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)


def test_phase_scale_and_shape_errors():
    with pytest.raises(FeatureVisError, match="phase_scale"):
        MacoImage(1, (32, 32), phase_scale=0)(device=CPU, generator=torch.Generator())
    with pytest.raises(FeatureVisError, match="magnitude"):
        MacoImage(1, (32, 32), magnitude=torch.ones(3, 16))(device=CPU, generator=torch.Generator())
    with pytest.raises(FeatureVisError, match="cannot be read"):
        load_magnitude(DEFAULT_MAGNITUDE.with_name("missing.npy"))


@pytest.mark.usefixtures("one_thread")
def test_renders_a_real_direction_in_a_few_steps(mobilenet):
    """The direction of a real photo (scikit-image's cat, the centre of LAYER at 80 px) is reached
    to cos-sim 0.75 in 24 steps; the random start is far below."""
    import skimage.data

    cat = torch.as_tensor(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255.0
    photo = F.interpolate(cat[..., :, 75:375], size=(80, 80), mode="bilinear", antialias=True)
    with layer_forward(mobilenet, LAYER) as forward:
        with torch.no_grad():
            acts = forward(photo)[LAYER]
        direction = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]
        result = render(forward, AtlasDirection(LAYER, direction), MacoImage(1, (80, 80)), steps=24, device=CPU, seed=0)
        with torch.no_grad():
            icon = torch.as_tensor(result.images).permute(0, 3, 1, 2).float() / 255.0
            h = forward(icon)[LAYER]
            start, _ = MacoImage(1, (80, 80))(device=CPU, generator=torch.Generator().manual_seed(0))[1](), None
            h0 = forward(start)[LAYER]

    def cos(a: torch.Tensor) -> float:
        return float(F.cosine_similarity(a[:, :, a.shape[2] // 2, a.shape[3] // 2], direction)[0])

    assert cos(h) > 0.75 and cos(h) > cos(h0) + 0.2, (cos(h0), cos(h))
    assert np.isfinite(result.objective).all() and result.objective[0] > result.initial_objective[0]


@pytest.mark.usefixtures("one_thread")
def test_the_image_at_step_k_of_a_long_run_is_the_k_step_render(mobilenet):
    """What bench/converge.py relies on: reading the image in ``progress_callback`` at step ``k`` of
    a longer run gives exactly the icon a ``k``-step run with the same seed returns (constant Adam
    learning rate, transforms drawn in step order), and reading it changes nothing."""
    objective = AtlasDirection(LAYER, torch.rand(2, 576, generator=torch.Generator().manual_seed(5)))
    seen: dict[int, np.ndarray] = {}
    current = {}

    def param(*, device, generator):
        params, image_fn = MacoImage(2, (48, 48))(device=device, generator=generator)
        current["fn"] = image_fn
        return params, image_fn

    def progress(done: int, total: int) -> None:
        if done == 3:
            with torch.no_grad():
                seen[done] = (current["fn"]().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    with layer_forward(mobilenet, LAYER) as forward:
        long = render(forward, objective, param, steps=5, device=CPU, seed=2, progress_callback=progress)
        short = render(forward, objective, MacoImage(2, (48, 48)), steps=3, device=CPU, seed=2)
        plain = render(forward, objective, MacoImage(2, (48, 48)), steps=5, device=CPU, seed=2)
    assert np.array_equal(seen[3], short.images)
    assert np.array_equal(long.images, plain.images) and not np.array_equal(long.images, short.images)
