import numpy as np

from stages.images.class_names import label_classes

CLASSES = ["tench", "goldfish", "great white shark", "tabby", "Egyptian cat"]


def test_names_indices_and_unknowns() -> None:
    labels = ["tabby", "Great_White_Shark", "4_egyptian-cat", "1", "landscape", "99"]
    assert label_classes(labels, CLASSES).tolist() == [3, 2, 4, 1, -1, -1]


def test_empty() -> None:
    assert label_classes([], CLASSES).dtype == np.int32
