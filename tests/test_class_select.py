"""stages/classes/select.py: the winner / topk / both rules on hand-made top-k arrays (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.classes.select import class_slug, class_values, resolve_class, select_rows, topk_rows, winner_mask
from store.errors import AtlasError

# Six rows, top-3 attributions each (sorted descending, as collect stores them); class 7 is ours.
IDX = np.array(
    [
        [7, 2, 3],  # 0: 7 wins with 0.9
        [2, 7, 3],  # 1: 7 second (0.5), 2 wins
        [7, 1, 2],  # 2: 7 "wins" but every value is negative
        [3, 4, 5],  # 3: 7 not stored
        [1, 7, -1],  # 4: 7 second with 0.8, a missing slot
        [7, 0, 1],  # 5: 7 wins with 0.5
    ],
    np.int16,
)
VAL = np.array(
    [
        [0.9, 0.1, 0.0],
        [1.2, 0.5, 0.2],
        [-0.1, -0.2, -0.3],
        [0.4, 0.3, 0.2],
        [1.0, 0.8, 0.0],
        [0.5, 0.4, 0.1],
    ],
    np.float16,
)


def test_winner_is_the_largest_stored_positive_value() -> None:
    assert winner_mask(IDX, VAL, 7).tolist() == [True, False, False, False, False, True]
    assert winner_mask(IDX, VAL, 2).tolist() == [False, True, False, False, False, False]


def test_winner_ignores_empty_slots_and_unsorted_rows() -> None:
    idx = np.array([[-1, 7], [5, 7]], np.int16)
    val = np.array([[3.0, 0.2], [0.1, 0.6]], np.float32)  # slot -1 holds a fill value; row 1 unsorted
    assert winner_mask(idx, val, 7).tolist() == [True, True]


def test_topk_takes_the_k_largest_positive_values() -> None:
    # values of class 7: row0 0.9, row1 0.5, row2 -0.1 (not positive), row4 0.8, row5 0.5
    assert topk_rows(IDX, VAL, 7, k=2).tolist() == [0, 4]
    assert topk_rows(IDX, VAL, 7, k=3).tolist() == [0, 1, 4]  # tie 0.5 (rows 1, 5): the lower row id
    assert topk_rows(IDX, VAL, 7, k=100).tolist() == [0, 1, 4, 5]
    assert topk_rows(IDX, VAL, 9, k=100).tolist() == []


def test_modes_and_valid_mask() -> None:
    assert select_rows(IDX, VAL, 7, "winner", 10).tolist() == [0, 5]
    assert select_rows(IDX, VAL, 7, "topk", 1).tolist() == [0]
    assert select_rows(IDX, VAL, 2, "both", 1).tolist() == [1]
    assert select_rows(IDX, VAL, 7, "both", 2).tolist() == [0, 4, 5]  # winners 0, 5 + top-2 0, 4
    valid = np.array([False, True, True, True, True, True])
    assert select_rows(IDX, VAL, 7, "both", 2, valid=valid).tolist() == [1, 4, 5]
    with pytest.raises(AtlasError, match="classes.mode 'all' is not one of: winner, topk, both"):
        select_rows(IDX, VAL, 7, "all", 2)


def test_class_values_are_zero_where_not_stored() -> None:
    value, stored = class_values(IDX, VAL, 7)
    np.testing.assert_allclose(value, [0.9, 0.5, -0.1, 0.0, 0.8, 0.5], atol=1e-3)
    assert stored.tolist() == [True, True, True, False, True, True]


NAMES = ["tench", "goldfish", "Arabian camel", "crane", "crane", "tabby"]


def test_resolve_class_by_name_or_index() -> None:
    assert resolve_class("goldfish", NAMES) == 1
    assert resolve_class("arabian_camel", NAMES) == 2
    assert resolve_class("Arabian-Camel", NAMES) == 2
    assert resolve_class("5", NAMES) == 5 and resolve_class(0, NAMES) == 0


def test_resolve_class_errors_name_the_parameter_and_close_matches() -> None:
    with pytest.raises(AtlasError, match=r"classes.names: no class named 'tabbby'.*close matches: tabby"):
        resolve_class("tabbby", NAMES)
    with pytest.raises(AtlasError, match=r"compare.pairs: class 6 is out of range; the model has classes 0..5"):
        resolve_class("6", NAMES, "compare.pairs")
    with pytest.raises(AtlasError, match=r"ambiguous: 3 \(crane\), 4 \(crane\); give the index"):
        resolve_class("crane", NAMES)


def test_slugs_are_folder_safe_and_unique() -> None:
    assert class_slug(2, NAMES) == "arabian_camel"
    assert class_slug(3, NAMES) == "3_crane" and class_slug(4, NAMES) == "4_crane"
    assert class_slug(0, ["Yorkshire terrier's / toy"]) == "yorkshire_terrier_s_toy"
