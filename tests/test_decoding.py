"""decode_rgb on every kind of bad and unusual file, each generated here in tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.images.decoding import BACKGROUND, SKIP_REASONS, Decoded, decode_rgb, decode_rgb_bytes

BIG = 10_000_000


def _ok(result: Decoded) -> np.ndarray:
    assert result.reason is None, (result.reason, result.detail)
    assert result.image is not None and result.image.mode == "RGB"
    return np.asarray(result.image)


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def test_missing_path_is_reported_not_raised(tmp_path: Path) -> None:
    result = decode_rgb(str(tmp_path / "nope.jpg"), BIG)
    assert result.image is None and result.reason == "missing"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert decode_rgb(str(path), BIG).reason == "empty_file"
    assert decode_rgb_bytes(b"", BIG).reason == "empty_file"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "page.jpg"
    path.write_text("<html><body>403 Forbidden</body></html>\n")
    result = decode_rgb(str(path), BIG)
    assert result.image is None and result.reason == "not_an_image"


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    assert decode_rgb(str(tmp_path / "dir.jpg"), BIG).reason == "not_an_image"


def test_truncated_jpeg_is_a_decode_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = _jpeg_bytes(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    result = decode_rgb(str(path), BIG)
    assert result.image is None and result.reason == "decode_error"
    assert result.detail  # says which exception


def test_bomb_refused_from_header_with_our_own_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (200, 100), (10, 20, 30)).save(path)
    result = decode_rgb(str(path), max_pixels=200 * 100 - 1)
    assert result.image is None and result.reason == "too_many_pixels"
    assert "200x100" in result.detail
    assert _ok(decode_rgb(str(path), max_pixels=200 * 100)).shape == (100, 200, 3)


def test_pillow_global_limit_untouched(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(path)
    decode_rgb(str(path), max_pixels=10)
    decode_rgb(str(path), max_pixels=BIG)
    assert Image.MAX_IMAGE_PIXELS == before


def test_sixteen_bit_gradient_is_scaled_not_saturated(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    path = tmp_path / "gradient16.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode in {"I;16", "I"}
    pixels = _ok(decode_rgb(str(path), BIG))[..., 0].astype(int)
    row = pixels[0]
    assert row[0] == 0 and row[-1] == 255
    assert (row == 255).mean() < 0.05  # clipping would make ~all of it white
    assert np.all(np.diff(row) >= 0)  # ordering preserved
    assert 120 <= row[128] <= 135  # mid-grey in the middle: linear scaling


def test_dark_sixteen_bit_stays_dark(tmp_path: Path) -> None:
    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(path)
    assert _ok(decode_rgb(str(path), BIG)).max() <= 5


def test_cmyk_jpeg_to_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(_jpeg_bytes(cmyk))
    assert Image.open(path).mode == "CMYK"
    r, g, b = _ok(decode_rgb(str(path), BIG))[16, 16].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_composited_on_background(tmp_path: Path) -> None:
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 black, 1 blue
    image.paste(1, (10, 0, 20, 10))
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    pixels = _ok(decode_rgb(str(path), BIG))
    assert tuple(pixels[5, 2]) == BACKGROUND  # transparent black -> background, not black
    assert tuple(pixels[5, 15]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited(tmp_path: Path, mode: str) -> None:
    array = np.zeros((10, 20, 4 if mode == "RGBA" else 2), dtype=np.uint8)
    array[:, 10:, :-1] = 100  # right half opaque grey, left half transparent black
    array[:, 10:, -1] = 255
    path = tmp_path / f"alpha_{mode}.png"
    Image.fromarray(array, mode=mode).save(path)
    pixels = _ok(decode_rgb(str(path), BIG))
    assert tuple(pixels[5, 2]) == BACKGROUND
    assert tuple(pixels[5, 15]) == (100, 100, 100)


def test_grayscale_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    pixels = _ok(decode_rgb(str(path), BIG))
    assert pixels.shape == (8, 8, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 2]) and pixels[7, 7, 1] == 63


def test_exif_rotation_applied(tmp_path: Path) -> None:
    # A 40x20 landscape with a red top-left corner, tagged "rotate 90 CW to display" (6).
    array = np.full((20, 40, 3), 255, dtype=np.uint8)
    array[:6, :6] = (255, 0, 0)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_bytes(image, exif=exif.tobytes()))
    pixels = _ok(decode_rgb(str(path), BIG))
    assert pixels.shape == (40, 20, 3)  # width and height swapped
    # Rotating 90 degrees clockwise moves the top-left corner to the top-right.
    r, g, b = pixels[2, 17].astype(int)
    assert r > 200 and g < 80 and b < 80
    assert pixels[2, 2].min() > 200


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    r, g, b = _ok(decode_rgb(str(path), BIG))[8, 8].astype(int)
    assert r > 200 and g < 50 and b < 50


def test_result_is_independent_of_the_closed_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (12, 10), (1, 2, 3)).save(path)
    image = decode_rgb(str(path), BIG).image
    assert image is not None
    path.unlink()
    assert image.resize((4, 4)).size == (4, 4)  # usable after the file is gone


def test_skip_reasons_are_the_documented_ones(tmp_path: Path) -> None:
    assert set(SKIP_REASONS) == {"missing", "empty_file", "not_an_image", "decode_error", "too_many_pixels"}
