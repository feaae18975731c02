"""Turn any image file into an RGB ``PIL.Image`` or a recorded reason why not.

A collection run over a real photo folder meets empty files, HTML pages saved as ``.jpg``,
truncated downloads, 16-bit scans, CMYK print files, cut-outs with alpha and decompression
bombs. None of them may stop the run: :func:`decode_rgb` never raises for a bad file, it returns
a :class:`Decoded` whose ``reason`` (one of :data:`SKIP_REASONS`) the collect stage stores next
to the image, so a skipped file is counted and explained, never silently dropped.

Nothing here changes Pillow's global state (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``): the pipeline shares the process with user code and
DataLoader workers, and a truncated file must be reported, not padded with grey.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.images.archives import MEMBER_SEP, member_bytes

SKIP_REASONS: tuple[str, ...] = ("missing", "empty_file", "not_an_image", "decode_error", "too_many_pixels")

#: Transparent pixels are composited on white. Cut-out objects (the tuxpaint stamps, product
#: shots) are shown on white by every viewer and browser, so the atlas's sample thumbnails look
#: like what the user sees, and ImageNet's isolated-object photos are overwhelmingly on white
#: backgrounds, so the classifier sees the familiar case rather than an unusual grey studio.
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Decoded:
    """An RGB image, or why there is none."""

    image: Image.Image | None  # always mode "RGB" when not None
    reason: str | None  # one of SKIP_REASONS when image is None
    detail: str = ""  # short human text (e.g. the exception's class)

    @property
    def ok(self) -> bool:
        return self.image is not None


def _skip(reason: str, detail: str = "") -> Decoded:
    assert reason in SKIP_REASONS, reason
    return Decoded(image=None, reason=reason, detail=detail[:200])


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _composite(image: Image.Image) -> Image.Image:
    """Alpha-composite on :data:`BACKGROUND` so transparent areas do not turn black."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, BACKGROUND)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _integer_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grayscale to 8 bit by scaling, never by clipping.

    ``Image.convert("L")`` clips I-mode values above 255, which turns a 16-bit scan white. Values
    within 0..65535 are divided by 257 (65535 -> 255) so absolute brightness is kept (a dark
    16-bit image stays dark); anything outside that range is stretched min-to-max.
    """
    values = np.asarray(image).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode in _SIXTEEN_BIT_MODES or (low >= 0.0 and high <= 65535.0 and high > 255.0):
        scaled = values / 257.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Float images: [0, 1] is taken as intensity, anything else is stretched min-to-max."""
    values = np.asarray(image).astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to a new, independent mode-"RGB" image.

    Palette images with a transparent index, and every mode with alpha, are composited on
    :data:`BACKGROUND`; CMYK goes through Pillow's conversion (which already undoes Adobe's
    inverted CMYK JPEGs); high bit-depth grayscale is scaled, not clipped.
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return _composite(image)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _integer_to_rgb(image)
    if mode == "F":
        return _float_to_rgb(image)
    return image.convert("RGB")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phones store portraits as rotated landscapes)."""
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return image  # the common case: skip exif_transpose's full copy
        return ImageOps.exif_transpose(image) or image
    except Exception:  # a malformed EXIF block is not a reason to lose the photo
        return image


def _decode_stream(stream: str | Path | IO[bytes], max_pixels: int, draft_side: int = 0) -> Decoded:
    """Header first, then the pixels: the size check runs before any pixel is decoded.

    ``draft_side`` > 0: a JPEG whose both sides are at least twice that is decoded at 1/2, 1/4 or
    1/8 scale by libjpeg's DCT scaling (Pillow's draft mode), the smallest that keeps both sides
    >= ``draft_side``; far less work than decoding every pixel of a 12-megapixel photo only to
    shrink it to 224 (``collect.jpeg_draft``, docs/collect.md)."""
    with warnings.catch_warnings():
        # Our own max_pixels check below replaces Pillow's global bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(stream) as image:  # lazy: reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    return _skip(
                        "too_many_pixels", f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}"
                    )
                image.seek(0)  # animated GIF / multi-page TIFF: the first frame
                if draft_side > 0 and image.format == "JPEG" and min(width, height) >= 2 * draft_side:
                    image.draft(None, (draft_side, draft_side))
                image.load()
                return Decoded(image=to_rgb(_upright(image)), reason=None)
        except Image.DecompressionBombError as exc:  # beyond Pillow's hard limit (2x its global)
            return _skip("too_many_pixels", _describe(exc))
        except UnidentifiedImageError:
            return _skip("not_an_image", "not a format Pillow can read")
        except Exception as exc:  # truncated data, corrupt chunks, unsupported modes ...
            return _skip("decode_error", _describe(exc))


def decode_rgb(path: str | Path, max_pixels: int, draft_side: int = 0) -> Decoded:
    """Decode ``path`` to RGB with EXIF orientation applied, or say why it was skipped.

    Never raises for a bad file. Images with more than ``max_pixels`` pixels are refused from
    their header alone (the decompression-bomb guard); images beyond Pillow's own hard limit
    (twice ``Image.MAX_IMAGE_PIXELS``) are refused too, since that limit is not changed here.
    """
    file = Path(path)
    try:
        if not file.exists() and MEMBER_SEP in str(path):  # inside a tar shard or a saved dataset
            return decode_member(str(path), max_pixels, draft_side)
        if not file.exists():
            return _skip("missing", "no such file")
        if file.is_dir():
            return _skip("not_an_image", "a folder, not a file")
        if file.stat().st_size == 0:
            return _skip("empty_file", "0 bytes")
    except OSError as exc:
        return _skip("missing", _describe(exc))
    return _decode_stream(file, max_pixels, draft_side)


def decode_member(path: str, max_pixels: int, draft_side: int = 0) -> Decoded:
    """:func:`decode_rgb` for a member path ``container!/member`` (stages/images/archives.py)."""
    data = member_bytes(path)
    if isinstance(data, str):
        return _skip("missing" if data.startswith("no ") else "decode_error", data)
    return decode_rgb_bytes(data, max_pixels, draft_side)


def decode_rgb_bytes(data: bytes, max_pixels: int, draft_side: int = 0) -> Decoded:
    """:func:`decode_rgb` for bytes already in memory (e.g. a file read from a wheel)."""
    if not data:
        return _skip("empty_file", "0 bytes")
    return _decode_stream(io.BytesIO(data), max_pixels, draft_side)
