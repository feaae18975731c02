"""view_box / render_view: deterministic, distinct, inside the image, area in range."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.images.crops import render_view, view_box

SCALE = (0.25, 1.0)


def _boxes(width: int, height: int, image_index: int, views: int, scale=SCALE, seed: int = 0):
    return [view_box(width, height, image_index, v, views, scale, seed) for v in range(views)]


def test_single_view_and_view_zero_are_the_whole_image() -> None:
    assert view_box(640, 480, 7, 0, 1, SCALE, 0) == (0, 0, 640, 480)
    assert view_box(640, 480, 7, 0, 16, SCALE, 123) == (0, 0, 640, 480)


def test_deterministic_and_independent_of_call_order() -> None:
    forward = _boxes(640, 480, 3, 12)
    backward = [view_box(640, 480, 3, v, 12, SCALE, 0) for v in reversed(range(12))][::-1]
    assert forward == backward == _boxes(640, 480, 3, 12)


def test_views_depend_on_seed_image_and_view() -> None:
    boxes = _boxes(640, 480, 3, 12)
    assert len(set(boxes[1:])) == 11  # distinct views differ
    assert _boxes(640, 480, 4, 12)[1:] != boxes[1:]  # another image, other crops
    assert _boxes(640, 480, 3, 12, seed=1)[1:] != boxes[1:]  # another seed, other crops
    # views_per_image does not change a given view's box (adding views keeps the old ones)
    assert _boxes(640, 480, 3, 24)[:12] == boxes


@pytest.mark.parametrize("width,height", [(640, 480), (300, 900), (1000, 40), (7, 5), (1, 1)])
@pytest.mark.parametrize("scale", [(0.25, 1.0), (0.05, 0.1), (1.0, 1.0)])
def test_boxes_inside_image_with_area_in_range(width: int, height: int, scale: tuple[float, float]) -> None:
    total = width * height
    for image_index in range(20):
        for left, top, right, bottom in _boxes(width, height, image_index, 6, scale)[1:]:
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            fraction = (right - left) * (bottom - top) / total
            # Rounding to whole pixels: allow one pixel row/column of slack (and at least 1 px).
            slack = (width + height + 1) / total
            assert scale[0] - slack <= fraction <= scale[1] + slack or (right - left) * (bottom - top) == 1


def test_aspect_ratio_limited_for_ordinary_images() -> None:
    for image_index in range(50):
        for left, top, right, bottom in _boxes(800, 600, image_index, 4)[1:]:
            aspect = (right - left) / (bottom - top)
            assert 0.74 <= aspect <= 1.35


def test_area_fraction_spreads_over_the_range() -> None:
    fractions = [
        (r - left) * (b - t) / (1000 * 1000) for i in range(200) for left, t, r, b in _boxes(1000, 1000, i, 2)[1:]
    ]
    assert min(fractions) < 0.35 and max(fractions) > 0.9


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        view_box(10, 10, 0, 5, 5, SCALE, 0)
    with pytest.raises(ValueError):
        view_box(0, 10, 0, 0, 1, SCALE, 0)
    with pytest.raises(ValueError):
        view_box(10, 10, 0, 1, 2, (0.5, 0.2), 0)


def test_negative_seed_is_accepted_and_deterministic() -> None:
    assert _boxes(64, 64, 0, 4, seed=-5) == _boxes(64, 64, 0, 4, seed=-5)


def test_render_view_crops_then_resizes() -> None:
    array = np.zeros((100, 200, 3), dtype=np.uint8)
    array[:, 100:] = (255, 0, 0)  # right half red
    image = Image.fromarray(array)
    whole = render_view(image, (0, 0, 200, 100), 32)
    assert whole.size == (32, 32) and whole.mode == "RGB"
    out = np.asarray(whole)
    assert out[16, 2].max() == 0 and tuple(out[16, 29]) == (255, 0, 0)  # aspect not kept
    right = np.asarray(render_view(image, (120, 10, 180, 90), 16))
    assert np.all(right[..., 0] == 255) and right[..., 1].max() == 0
    with pytest.raises(ValueError):
        render_view(image, (150, 0, 250, 100), 16)
