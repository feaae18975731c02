"""collect.jpeg_draft: large JPEGs decoded at reduced scale, never below what a view needs."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from stages.collect.inputs import ViewDataset, ViewSettings, draft_side, work_items
from stages.images.decoding import decode_rgb, decode_rgb_bytes


def _jpeg(w: int, h: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


def test_draft_side_keeps_every_view_at_least_the_model_size() -> None:
    assert draft_side(False, 224, 1, (0.25, 1.0)) == 0
    assert draft_side(True, 224, 1, (0.25, 1.0)) == 224  # the whole image only
    side = draft_side(True, 224, 12, (0.25, 1.0))
    assert side == 518  # 224 / sqrt(0.75 * 0.25): the smallest crop's short side stays >= 224


def test_large_jpeg_is_decoded_at_reduced_scale_small_ones_and_pngs_are_not(tmp_path) -> None:
    big = _jpeg(1200, 1000)
    full = decode_rgb_bytes(big, 10**8).image
    drafted = decode_rgb_bytes(big, 10**8, draft_side=224).image
    assert full.size == (1200, 1000) and drafted.size == (300, 250)  # 1/4 scale, both sides >= 224
    assert decode_rgb_bytes(_jpeg(400, 300), 10**8, draft_side=224).image.size == (400, 300)  # < 2x: untouched
    assert decode_rgb_bytes(_jpeg(1200, 1000, "PNG"), 10**8, draft_side=224).image.size == (1200, 1000)
    path = tmp_path / "big.jpg"
    path.write_bytes(big)
    assert decode_rgb(path, 10**8, draft_side=224).image.size == (300, 250)
    # the views the model sees: close to the full decode's (same boxes up to rounding, DCT-scaled pixels)
    settings = ViewSettings(1, (0.25, 1.0), 224, 0, 10**8)
    items = work_items({0: range(1)}, 1)
    a = ViewDataset(items, [str(path)], settings)[0][1].astype(float)
    b = ViewDataset(items, [str(path)], ViewSettings(1, (0.25, 1.0), 224, 0, 10**8, 224))[0][1].astype(float)
    assert a.shape == b.shape == (1, 224, 224, 3) and not np.array_equal(a, b)
    assert abs(a.mean() - b.mean()) < 2.0
