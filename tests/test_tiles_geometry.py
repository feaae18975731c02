"""stages/tiles/geometry.py: density-scaled icons, cell/icon rectangles and the DZI pyramid, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from stages.tiles.geometry import (
    DziGeometry,
    box_fractions,
    cell_pixel_boxes,
    icon_pixel_boxes,
    icon_pixel_sides,
    icon_scale,
)


def test_icon_scale_follows_the_reference_formula() -> None:
    # counts 2, 4, 6, 8: mean n = 5; side = min(1, sqrt(density * n / 5))
    counts = np.array([2, 4, 6, 8])
    np.testing.assert_allclose(icon_scale(counts), [0.6324555, 0.8944272, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(icon_scale(counts, density=0.5), [0.4472136, 0.6324555, 0.7745967, 0.8944272], rtol=1e-6)
    np.testing.assert_array_equal(icon_scale(counts, enabled=False), [1, 1, 1, 1])
    assert icon_scale(np.array([7, 7, 7])).tolist() == [1.0, 1.0, 1.0]  # every cell at the mean: full side
    with pytest.raises(ValueError, match="density"):
        icon_scale(counts, density=0.0)


def test_icon_boxes_are_centred_whole_pixels() -> None:
    sides = icon_pixel_sides(np.array([1.0, 0.5, 0.6324555, 0.001]), 80)
    assert sides.tolist() == [80, 40, 51, 1]  # rounded, at least one pixel
    i, j = np.array([0, 2, 1, 0]), np.array([0, 1, 3, 0])
    assert cell_pixel_boxes(i, j, 80).tolist() == [
        [0, 0, 80, 80],
        [160, 80, 240, 160],
        [80, 240, 160, 320],
        [0, 0, 80, 80],
    ]
    boxes = icon_pixel_boxes(i, j, 80, sides)
    # 40 px in an 80 px cell: 20 px margin; 51 px: 29 left, 14 on the left/top and 15 right/bottom
    assert boxes.tolist() == [[0, 0, 80, 80], [180, 100, 220, 140], [94, 254, 145, 305], [39, 39, 40, 40]]
    np.testing.assert_allclose(box_fractions(boxes[1:2], 320), [[0.5625, 0.3125, 0.6875, 0.4375]])


def test_dzi_levels_sizes_and_tiles_by_hand() -> None:
    g = DziGeometry(1000, 600, tile_size=256, overlap=1)
    assert g.max_level == 10 and g.n_levels == 11  # ceil(log2(1000)) = 10, plus level 0
    assert [g.level_size(z) for z in (10, 9, 8, 2, 1, 0)] == [
        (1000, 600),
        (500, 300),
        (250, 150),
        (4, 3),
        (2, 2),
        (1, 1),
    ]
    assert g.tile_grid(10) == (4, 3) and g.tile_grid(9) == (2, 2) and g.tile_grid(8) == (1, 1)
    # first tile: overlap only toward its right/bottom neighbours
    assert g.tile_box(10, 0, 0) == (0, 0, 257, 257)
    # interior tile: overlap on both sides
    assert g.tile_box(10, 1, 1) == (255, 255, 513, 513)
    # edge tile: cut at the image border (233 x 89 px plus the left/top overlap)
    assert g.tile_box(10, 3, 2) == (767, 511, 1000, 600)
    assert g.tile_box(9, 1, 1) == (255, 255, 500, 300)
    assert g.n_tiles() == 12 + 4 + 1 + 8  # levels 10, 9, 8, then one tile each for levels 0..7
    with pytest.raises(ValueError, match="outside"):
        g.tile_box(10, 4, 0)
    with pytest.raises(ValueError, match="level"):
        g.level_size(11)


def test_dzi_corner_cases() -> None:
    one = DziGeometry(1, 1)
    assert one.max_level == 0 and one.n_levels == 1 and one.tile_box(0, 0, 0) == (0, 0, 1, 1)
    exact = DziGeometry(256, 256, tile_size=256, overlap=2)
    assert exact.max_level == 8 and exact.tile_grid(8) == (1, 1) and exact.tile_box(8, 0, 0) == (0, 0, 256, 256)
    no_overlap = DziGeometry(512, 300, tile_size=256, overlap=0)
    assert no_overlap.tile_box(9, 1, 1) == (256, 256, 512, 300)
    xml = DziGeometry(96, 96, tile_size=64, overlap=1).dzi_xml("jpg")
    assert 'Format="jpg"' in xml and 'Overlap="1"' in xml and 'TileSize="64"' in xml
    assert '<Size Width="96" Height="96"/>' in xml
    with pytest.raises(ValueError):
        DziGeometry(0, 10)
