"""Image parameterisations (stages/featurevis/param.py) against lucid's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.param import (
    FourierImage,
    PixelImage,
    color_decorrelation_matrix,
    spectrum_scale,
    spectrum_to_image,
    to_valid_rgb,
)

CPU = torch.device("cpu")


def _reference_scale(h: int, w: int) -> np.ndarray:
    """lucid's ``1 / max(f, 1 / max(w, h))`` written out independently with numpy."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.abs(np.fft.fftfreq(w)[: w // 2 + 1])[None, :]
    f = np.sqrt(fy**2 + fx**2)
    return 1.0 / np.maximum(f, 1.0 / max(w, h))


@pytest.mark.parametrize("factory", [FourierImage, PixelImage])
@pytest.mark.parametrize("size", [(80, 80), (15, 22)])
def test_images_have_batch_shape_and_lie_in_open_unit_interval(factory, size):
    params, image_fn = factory(3, size)(device=CPU, generator=torch.Generator().manual_seed(0))
    image = image_fn()
    assert image.shape == (3, 3, *size)
    assert float(image.detach().min()) > 0.0 and float(image.detach().max()) < 1.0
    assert image.requires_grad and all(p.is_leaf and p.requires_grad for p in params)


@pytest.mark.parametrize("h, w", [(80, 80), (64, 48), (15, 22), (9, 13)])
def test_spectrum_scale_is_the_reference_formula(h, w):
    np.testing.assert_allclose(spectrum_scale(h, w).numpy(), _reference_scale(h, w), rtol=1e-6)


def test_dc_term_is_capped_at_the_image_side():
    assert float(spectrum_scale(80, 64)[0, 0]) == pytest.approx(80.0)


def test_image_spectrum_is_the_parameter_times_the_scale():
    """Forward FFT of the linear image recovers ``scale * spectrum`` (lucid fft_image, ortho, /4)."""
    h, w = 16, 20
    spectrum = torch.randn(1, 3, h, w // 2 + 1, 2, generator=torch.Generator().manual_seed(1))
    scale = spectrum_scale(h, w)
    image = spectrum_to_image(spectrum, scale, h, w)
    recovered = torch.fft.rfft2(image * 4.0, norm="ortho")
    expected = torch.view_as_complex(spectrum) * torch.from_numpy(_reference_scale(h, w)).float()
    # Columns 0 and w/2 are Hermitian-constrained by the real inverse FFT; the others are free.
    inner = slice(1, w // 2)
    torch.testing.assert_close(recovered[..., inner], expected[..., inner], rtol=1e-4, atol=1e-4)


def test_initial_spectrum_has_sd_0_01():
    params, _ = FourierImage(8, (64, 64))(device=CPU, generator=torch.Generator().manual_seed(0))
    assert float(params[0].detach().std()) == pytest.approx(0.01, rel=0.05)


def test_colour_matrix_is_lucids_normalised_by_max_column_norm():
    lucid = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    expected = lucid / np.max(np.linalg.norm(lucid, axis=0))
    np.testing.assert_allclose(color_decorrelation_matrix().numpy(), expected, rtol=1e-6)


def test_to_valid_rgb_applies_matrix_per_pixel_then_sigmoid():
    t = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    m = color_decorrelation_matrix()
    expected = torch.sigmoid(m @ torch.tensor([1.0, -2.0, 0.5]))
    out = to_valid_rgb(t)
    torch.testing.assert_close(out[0, :, 1, 0], expected)
    torch.testing.assert_close(to_valid_rgb(t, decorrelate=False), torch.sigmoid(t))


def test_same_seed_same_start_different_seed_different_start():
    param = FourierImage(2, (32, 32))
    a = param(device=CPU, generator=torch.Generator().manual_seed(5))[1]()
    b = param(device=CPU, generator=torch.Generator().manual_seed(5))[1]()
    c = param(device=CPU, generator=torch.Generator().manual_seed(6))[1]()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fourier_start_is_smoother_than_pixel_start():
    """The 1/f scaling puts the initial energy in low frequencies (why FFT images are not noise)."""
    g = torch.Generator().manual_seed(0)
    fft = FourierImage(4, (64, 64))(device=CPU, generator=g)[1]().detach()
    pix = PixelImage(4, (64, 64))(device=CPU, generator=g)[1]().detach()

    def roughness(x: torch.Tensor) -> float:
        return float((x[..., 1:] - x[..., :-1]).abs().mean() / (x - x.mean()).abs().mean())

    assert roughness(fft) < 0.7 * roughness(pix)


@pytest.mark.parametrize("batch, size", [(0, (8, 8)), (1, (4, 80))])
def test_bad_shapes_are_rejected(batch, size):
    with pytest.raises(FeatureVisError):
        FourierImage(batch, size)
