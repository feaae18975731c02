"""MACO: optimise only the Fourier phase; the magnitude spectrum is a fixed natural-image one.

Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization" (MACO). The Fourier parameterisation (:mod:`.param`) lets the optimiser change
every coefficient's magnitude and phase; part of the budget goes into growing the magnitudes
from a near-zero start, and nothing keeps the spectrum natural, so short runs stay washed out
and long ones drift to high-contrast textures. MACO fixes the magnitude of every coefficient to
the average magnitude of natural images and optimises the phase alone: every step already shows
an image with natural contrast at every frequency, and the objective only decides *where* the
structure goes (the phase carries the shapes; Oppenheim & Lim 1981).

The image: ``spectrum = magnitude * exp(i * phase)``, orthonormal inverse real FFT per channel,
standardised per image (zero mean, unit std over all pixels and channels, as the paper's
implementation does), lucid's colour recorrelation and sigmoid (:func:`.param.to_valid_rgb`).

The magnitude is :func:`natural_magnitude` of real photos: the demo's own photos give the
default (``maco_magnitude_80.npy`` next to this module; ``bench/maco_spectrum.py`` made it and
says how). :func:`resample_magnitude` carries it to other image sizes.

The learning rate: the paper runs (N)Adam at 1.0 on the phase; the render loop has one
``lr`` (0.05 for the Fourier image). ``phase_scale`` multiplies the stored parameter, so Adam's
step in phase is ``lr * phase_scale`` radians (Adam's step does not depend on the gradient's
scale) without the loop knowing which parameterisation it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.param import ImageFn, _check_shape, color_decorrelation_matrix, to_valid_rgb

# The natural magnitude spectrum of the demo's photos at 80 px (bench/maco_spectrum.py).
DEFAULT_MAGNITUDE = Path(__file__).with_name("maco_magnitude_80.npy")


def natural_magnitude(images: Tensor) -> Tensor:
    """Mean magnitude spectrum ``[3, H, W // 2 + 1]`` of photos ``[N, 3, H, W]`` in [0, 1].

    Measured in the decorrelated colour space the MACO image lives in (the colour matrix of
    :func:`.param.to_valid_rgb` inverted), each photo's mean removed first, orthonormal FFT.
    The DC term carries no information once the image is standardised; it is set to 0.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise FeatureVisError(f"natural_magnitude needs images [N, 3, H, W] (got {list(images.shape)})")
    x = images.double() - images.double().mean(dim=(2, 3), keepdim=True)
    inverse = torch.linalg.inv(color_decorrelation_matrix().double())
    t = torch.einsum("ij,bjhw->bihw", inverse, x)
    magnitude = torch.fft.rfftn(t, dim=(-2, -1), norm="ortho").abs().mean(dim=0)
    magnitude[:, 0, 0] = 0.0
    out: Tensor = magnitude.float()
    return out


def resample_magnitude(magnitude: Tensor, h: int, w: int) -> Tensor:
    """``magnitude [3, H, W // 2 + 1]`` of an ``H x W`` image, read at the frequencies of ``h x w``.

    Bilinear in frequency (cycles per pixel), the vertical axis in fftshift order so neighbours
    are neighbours; the identity when the size is the same.
    """
    big_h = magnitude.shape[1]
    if (big_h, magnitude.shape[2]) == (h, w // 2 + 1):
        return magnitude.clone()
    big_w = 2 * (magnitude.shape[2] - 1)  # an even source width (the stored one is 80)
    shifted = torch.fft.fftshift(magnitude.double(), dim=1)
    src_y = torch.fft.fftshift(torch.fft.fftfreq(big_h, dtype=torch.float64))
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)
    # grid_sample's -1..1 spans the first..last source sample (align_corners=True).
    gy = 2 * (fy - src_y[0]) / (src_y[-1] - src_y[0]) - 1
    gx = 2 * fx / 0.5 - 1 if big_w > 0 else torch.zeros_like(fx)
    shape = (fy.shape[0], fx.shape[0])  # the [h, w // 2 + 1] frequency grid both axes broadcast to
    grid = torch.stack((gx[None, :].expand(shape), gy[:, None].expand(shape)), dim=-1)[None]
    out = F.grid_sample(shifted[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    out[:, 0, 0] = 0.0
    return out.float()


def load_magnitude(path: str | Path = DEFAULT_MAGNITUDE) -> Tensor:
    """The stored magnitude spectrum ``[3, H, W // 2 + 1]`` (float32)."""
    try:
        array = np.load(path)
    except OSError as e:
        raise FeatureVisError(f"MACO magnitude spectrum {path} cannot be read ({e}); run bench/maco_spectrum.py") from e
    if array.ndim != 3 or array.shape[0] != 3:
        raise FeatureVisError(f"MACO magnitude spectrum {path} must be [3, H, W // 2 + 1] (got {list(array.shape)})")
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


def phase_to_image(magnitude: Tensor, phase: Tensor, h: int, w: int) -> Tensor:
    """``magnitude [3, h, w // 2 + 1]`` and ``phase [B, 3, h, w // 2 + 1]`` -> standardised ``[B, 3, h, w]``."""
    spectrum = torch.polar(magnitude.expand_as(phase), phase)
    image = torch.fft.irfftn(spectrum, s=(h, w), dim=(-2, -1), norm="ortho")
    image = image - image.mean(dim=(1, 2, 3), keepdim=True)
    standardised: Tensor = image / (image.std(dim=(1, 2, 3), keepdim=True) + 1e-4)
    return standardised


def maco_image(
    batch: int,
    h: int,
    w: int,
    *,
    device: torch.device,
    generator: torch.Generator,
    magnitude: Tensor | None = None,
    phase_sd: float = 1.0,
    phase_scale: float = 4.0,
) -> tuple[list[Tensor], ImageFn]:
    """A batch of MACO images: random phases (sd ``phase_sd`` radians), the magnitude fixed.

    The phase is drawn on the CPU from ``generator`` and moved to ``device``, so a seed gives the
    same start on every device. ``magnitude`` defaults to the stored natural spectrum, resampled
    to ``h x w``.
    """
    if not phase_scale > 0:
        raise FeatureVisError(f"maco_image: phase_scale must be > 0 (got {phase_scale})")
    mag = load_magnitude() if magnitude is None else magnitude
    if mag.ndim != 3 or mag.shape[0] != 3 or mag.shape[2] < 2:
        raise FeatureVisError(f"maco_image: magnitude must be [3, H, W // 2 + 1] (got {list(mag.shape)})")
    mag = resample_magnitude(mag, h, w)
    init = torch.randn((batch, *mag.shape), generator=generator, dtype=torch.float32) * (phase_sd / phase_scale)
    raw = init.to(device).requires_grad_(True)
    mag = mag.to(device)

    def image_fn() -> Tensor:
        return to_valid_rgb(phase_to_image(mag, raw * phase_scale, h, w))

    return [raw], image_fn


@dataclass(frozen=True)
class MacoImage:
    """Factory for :func:`maco_image` (an :class:`.param.ImageParam`)."""

    batch: int
    size: tuple[int, int]
    magnitude: Tensor | None = field(default=None, compare=False)
    phase_sd: float = 1.0
    phase_scale: float = 4.0

    def __post_init__(self) -> None:
        _check_shape(self.batch, self.size)

    def __call__(self, *, device: torch.device, generator: torch.Generator) -> tuple[list[Tensor], ImageFn]:
        h, w = self.size
        return maco_image(
            self.batch,
            h,
            w,
            device=device,
            generator=generator,
            magnitude=self.magnitude,
            phase_sd=self.phase_sd,
            phase_scale=self.phase_scale,
        )
