"""Transformation robustness (stages/featurevis/transforms.py): sizes, seeding, crop not roll."""

from __future__ import annotations

import pytest
import torch

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.transforms import (
    REFERENCE_ANGLES,
    REFERENCE_JITTERS,
    REFERENCE_SCALES,
    Compose,
    CropOrPadTo,
    Jitter,
    Pad,
    RandomScaleRotate,
    crop_or_pad,
    reference_transforms,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 4, h: int = 80, w: int = 80) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=_gen(123))


def test_reference_parameters_are_those_of_reference_md():
    assert REFERENCE_JITTERS == (4, 4, 8, 8, 8)
    assert REFERENCE_SCALES == pytest.approx([0.998**n for n in range(20, 40)])
    assert sorted(REFERENCE_ANGLES) == sorted(list(range(-20, 20)) + list(range(-10, 10)) + list(range(-5, 5)) + [0])
    chain = reference_transforms()
    assert isinstance(chain.transforms[0], Pad) and chain.transforms[0].width == 16
    assert chain.transforms[0].value == 0.5
    assert [t.d for t in chain.transforms if isinstance(t, Jitter)] == [4, 4, 8, 8, 8, 2]


@pytest.mark.parametrize("h, w", [(80, 80), (64, 72)])
def test_reference_chain_keeps_the_size(h, w):
    out = reference_transforms()(_images(3, h, w), _gen())
    assert out.shape == (3, 3, h, w)


def test_same_seed_identical_different_seed_different():
    x, chain = _images(), reference_transforms()
    a, b, c = chain(x, _gen(7)), chain(x, _gen(7)), chain(x, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_parameters_are_drawn_per_image():
    x = _images(1).expand(8, -1, -1, -1)
    out = reference_transforms()(x, _gen())
    assert all(not torch.equal(out[0], o) for o in out[1:])


def test_jitter_is_a_crop_window_not_a_roll():
    """Each output is a contiguous window of the input: a roll would wrap pixels around."""
    h = w = 12
    d = 4
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(16, 3, h, w)
    out = Jitter(d)(x, _gen())
    assert out.shape == (16, 3, h - d, w - d)
    offsets = set()
    for image in out:
        top, left = divmod(int(image[0, 0, 0]), w)
        assert 0 <= top <= d and 0 <= left <= d
        assert torch.equal(image, x[0, :, top : top + h - d, left : left + w - d])
        offsets.add((top, left))
    assert len(offsets) > 1  # per-image offsets


def test_pad_uses_the_constant():
    out = Pad(2)(torch.zeros(1, 3, 4, 4), _gen())
    assert out.shape == (1, 3, 8, 8)
    assert float(out[..., 0, :].min()) == 0.5 and float(out[..., 2:6, 2:6].abs().max()) == 0.0


def test_scale_rotate_identity_and_quarter_turn():
    x = torch.rand(2, 3, 10, 10, generator=_gen(1))
    same = RandomScaleRotate(scales=(1.0,), angles=(0.0,))(x, _gen())
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    turned = RandomScaleRotate(scales=(1.0,), angles=(90.0,))(x, _gen())
    errors = [float((turned - torch.rot90(x, k, dims=(2, 3))).abs().max()) for k in (1, -1)]
    assert min(errors) < 1e-5


def test_shrinking_fills_the_border_with_grey():
    x = torch.ones(1, 3, 20, 20)
    out = RandomScaleRotate(scales=(0.5,), angles=(0.0,))(x, _gen())
    assert out.shape == x.shape
    torch.testing.assert_close(out[..., 0, 0], torch.full((1, 3), 0.5))
    torch.testing.assert_close(out[..., 10, 10], torch.ones(1, 3))


def test_crop_or_pad_is_centred():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    assert torch.equal(crop_or_pad(x, (4, 4)), x[..., 1:5, 1:5])
    padded = CropOrPadTo((8, 8))(x)
    assert torch.equal(padded[..., 1:7, 1:7], x) and float(padded[0, 0, 0, 0]) == 0.5


def test_gradients_flow_through_the_chain():
    x = _images(2).requires_grad_(True)
    reference_transforms()(x, _gen()).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_compose_fits_back_to_input_size():
    out = Compose((Pad(5),))(torch.zeros(1, 3, 9, 9), _gen())
    assert out.shape == (1, 3, 9, 9)


def test_bad_parameters_are_rejected():
    with pytest.raises(FeatureVisError):
        Jitter(10)(torch.zeros(1, 3, 8, 8), _gen())
    with pytest.raises(FeatureVisError):
        reference_transforms(scales=[])
