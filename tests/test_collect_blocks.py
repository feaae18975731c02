import numpy as np

from stages.collect.blocks import interior_positions


def test_positions_are_interior_uniform_and_independent_of_chunking() -> None:
    pos = interior_positions(range(0, 20000), 2, 14, 14, 1, seed=3)
    assert pos.shape == (20000, 2, 2)
    assert pos.min() == 1 and pos.max() == 12, "a 1-cell border is excluded on every side"
    counts = np.bincount(pos[..., 0].ravel(), minlength=14)[1:13]
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    split = np.concatenate(
        [interior_positions(range(0, 777), 2, 14, 14, 1, 3), interior_positions(range(777, 20000), 2, 14, 14, 1, 3)]
    )
    np.testing.assert_array_equal(pos, split)
    assert not np.array_equal(pos, interior_positions(range(0, 20000), 2, 14, 14, 1, seed=4))


def test_non_square_and_zero_border() -> None:
    pos = interior_positions(range(5000), 1, 7, 3, 0, seed=0)
    assert pos[..., 0].max() == 6 and pos[..., 1].max() == 2 and pos.min() == 0
