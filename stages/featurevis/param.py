"""Image parameterisations: what the optimiser actually changes.

Each parameterisation is a small factory that, given a ``torch.device`` and a seeded
``torch.Generator``, returns ``(parameters, image_fn)`` in lucent's style: ``parameters`` is the
list of leaf tensors Adam updates, ``image_fn()`` maps them to a batch of RGB images
``[B, 3, H, W]`` in (0, 1). One image per objective item: the batch size here must match the
batch of directions the objective scores.

The Fourier parameterisation copies lucid (``lucid/optvis/param/spatial.py::fft_image`` and
``color.py::to_valid_rgb``), as docs/method.md §6 describes: a random spectrum (sd 0.01),
each frequency scaled by ``1 / max(f, 1 / max(w, h))`` (decay power 1), an orthonormal inverse
real FFT, lucid's ``/ 4`` constant, the fixed colour-decorrelation matrix, then a sigmoid. The
spectrum scaling whitens the gradient so low frequencies (shapes) are learned as fast as high
ones (noise); without it results come out as high-frequency noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from stages.featurevis.errors import FeatureVisError

ImageFn = Callable[[], Tensor]

# lucid's ``color_correlation_svd_sqrt``: the square root of ImageNet's RGB colour covariance.
_COLOR_CORRELATION_SVD_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

# lucid's unexplained constant dividing the Fourier image (``image_t / 4.0``); kept so the
# initial contrast and the effective learning rate match lucid's.
_FFT_MAGIC = 4.0


class ImageParam(Protocol):
    """A factory of fresh, randomly initialised image parameters (one call per attempt).

    :class:`FourierImage` and :class:`PixelImage` are two; ``functools.partial(fft_image, B, H, W)``
    is another.
    """

    def __call__(self, *, device: torch.device, generator: torch.Generator) -> tuple[list[Tensor], ImageFn]: ...


def color_decorrelation_matrix() -> Tensor:
    """lucid's colour matrix divided by its largest column norm (``_linear_decorelate_color``)."""
    matrix = torch.tensor(_COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
    normalised: Tensor = matrix / torch.linalg.vector_norm(matrix, dim=0).max()
    return normalised


def to_valid_rgb(t: Tensor, *, decorrelate: bool = True) -> Tensor:
    """Map an unconstrained ``[B, 3, H, W]`` tensor to RGB in (0, 1), as lucid's ``to_valid_rgb``.

    With ``decorrelate`` the channels are read as coordinates in a decorrelated colour space and
    mapped to RGB by the matrix (lucid: ``t_flat @ M.T`` per pixel); a sigmoid then squashes to
    (0, 1) (lucid's default ``sigmoid=True``).
    """
    if decorrelate:
        matrix = color_decorrelation_matrix().to(device=t.device, dtype=t.dtype)
        t = torch.einsum("ij,bjhw->bihw", matrix, t)
    return torch.sigmoid(t)


def rfft2d_freqs(h: int, w: int) -> Tensor:
    """Frequency magnitude of each coefficient of a real 2-D FFT of an ``h x w`` image.

    lucid's ``rfft2d_freqs``, but for odd ``w`` with ``w // 2 + 1`` columns (lucent's choice,
    exact for every size) rather than lucid's extra column that its irfft2d later crops; for
    even sizes, such as the 80 px icons, the two are identical.
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> Tensor:
    """``1 / max(f, 1 / max(w, h)) ** decay_power`` per coefficient (lucid ``fft_image``).

    The floor ``1 / max(w, h)`` keeps the DC term finite. lucid also multiplies by
    ``sqrt(w * h)`` to undo TensorFlow's unnormalised ``irfft2d``; here the inverse FFT uses
    ``norm="ortho"``, which is the same unitary transform.
    """
    freqs = rfft2d_freqs(h, w)
    return (1.0 / torch.clamp(freqs, min=1.0 / max(w, h)) ** decay_power).to(torch.float32)


def spectrum_to_image(spectrum: Tensor, scale: Tensor, h: int, w: int) -> Tensor:
    """Real/imaginary spectrum ``[B, 3, h, w // 2 + 1, 2]`` -> linear image ``[B, 3, h, w]``."""
    scaled = torch.view_as_complex(spectrum) * scale
    image: Tensor = torch.fft.irfftn(scaled, s=(h, w), dim=(-2, -1), norm="ortho") / _FFT_MAGIC
    return image


def fft_image(
    batch: int,
    h: int,
    w: int,
    *,
    device: torch.device,
    generator: torch.Generator,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
) -> tuple[list[Tensor], ImageFn]:
    """Fourier-space image with decorrelated colour (lucid ``param.image(fft=True)``).

    The spectrum is drawn on the CPU from ``generator`` and then moved to ``device``, so a seed
    gives the same start on every device.
    """
    scale = spectrum_scale(h, w, decay_power)
    shape = (batch, 3, *scale.shape, 2)
    init = torch.randn(shape, generator=generator, dtype=torch.float32) * sd
    spectrum = init.to(device).requires_grad_(True)
    scale = scale[None, None].to(device)

    def image_fn() -> Tensor:
        return to_valid_rgb(spectrum_to_image(spectrum, scale, h, w), decorrelate=decorrelate)

    return [spectrum], image_fn


def pixel_image(
    batch: int,
    h: int,
    w: int,
    *,
    device: torch.device,
    generator: torch.Generator,
    sd: float = 0.01,
    decorrelate: bool = True,
) -> tuple[list[Tensor], ImageFn]:
    """Plain pixel-space image (lucid ``param.image(fft=False)``: ``pixel_image`` + ``to_valid_rgb``).

    Mostly a baseline: without the spectrum scaling it drifts to high-frequency patterns.
    """
    init = torch.randn((batch, 3, h, w), generator=generator, dtype=torch.float32) * sd
    pixels = init.to(device).requires_grad_(True)

    def image_fn() -> Tensor:
        return to_valid_rgb(pixels, decorrelate=decorrelate)

    return [pixels], image_fn


@dataclass(frozen=True)
class FourierImage:
    """Factory for :func:`fft_image`; the default parameterisation of docs/method.md §6."""

    batch: int
    size: tuple[int, int]
    sd: float = 0.01
    decay_power: float = 1.0
    decorrelate: bool = True

    def __post_init__(self) -> None:
        _check_shape(self.batch, self.size)

    def __call__(self, *, device: torch.device, generator: torch.Generator) -> tuple[list[Tensor], ImageFn]:
        h, w = self.size
        return fft_image(
            self.batch,
            h,
            w,
            device=device,
            generator=generator,
            sd=self.sd,
            decay_power=self.decay_power,
            decorrelate=self.decorrelate,
        )


@dataclass(frozen=True)
class PixelImage:
    """Factory for :func:`pixel_image`."""

    batch: int
    size: tuple[int, int]
    sd: float = 0.01
    decorrelate: bool = True

    def __post_init__(self) -> None:
        _check_shape(self.batch, self.size)

    def __call__(self, *, device: torch.device, generator: torch.Generator) -> tuple[list[Tensor], ImageFn]:
        h, w = self.size
        return pixel_image(
            self.batch, h, w, device=device, generator=generator, sd=self.sd, decorrelate=self.decorrelate
        )


def _check_shape(batch: int, size: tuple[int, int]) -> None:
    if batch < 1:
        raise FeatureVisError(f"image batch must be >= 1 (got {batch})")
    if len(size) != 2 or min(size) < 8:
        raise FeatureVisError(f"image size must be (height, width) with both >= 8 px (got {tuple(size)})")
