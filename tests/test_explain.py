"""stages/explain/groups.py and stages/explain/stage.py: nearest cells, NMF groups, the explain PNG.

Real activations (MobileNetV2 on a scikit-image photo) against the real cells and icons of the
session's ``small_atlas`` (read only); group renders are tiny (4 steps, 32 px) on one thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.config import Config
from stages.context import StageContext
from stages.explain import stage as explain
from stages.explain.groups import group_assignment, group_strength, nearest_cells, nmf_groups
from stages.model.registry import LoadedModel
from stages.sections import ExplainSection
from store import derived
from store.errors import AtlasError
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def photo_path(photo_folder: Path) -> Path:
    return next(photo_folder.glob("tabby/*.jpg"))


@pytest.fixture(scope="module")
def photo_acts(photo_path: Path, mobilenet: LoadedModel) -> np.ndarray:
    """``[H*W, C]`` real activations of the cat photo at the atlas layer."""
    acts = explain.layer_activations(mobilenet, explain.load_photo(photo_path, Config()), torch.device("cpu"))
    assert acts.shape == (14, 14, 576)
    return acts.reshape(-1, 576)


def test_nearest_cells_equal_brute_force_cosine(photo_acts: np.ndarray, small_atlas: SmallAtlas) -> None:
    directions = derived.read_level(small_atlas.store, small_atlas.levels[-1], with_attribution=False).direction
    cell, cosine = nearest_cells(photo_acts, directions)
    a = photo_acts.astype(np.float64)
    d = directions.astype(np.float64)
    brute = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(cell, brute.argmax(axis=1))
    np.testing.assert_allclose(cosine, brute.max(axis=1), atol=1e-5)


def test_zero_activation_has_no_cell() -> None:
    cell, cosine = nearest_cells(np.array([[0.0, 0.0], [1.0, 0.1]]), np.array([[0.0, 2.0], [3.0, 0.0]]))
    assert cell.tolist() == [-1, 1] and cosine[0] == 0.0


def test_nmf_groups_shapes_nonnegative_and_partition(photo_acts: np.ndarray) -> None:
    groups = nmf_groups(photo_acts, 4, seed=0, max_iter=200)
    assert groups.weights.shape == (196, 4) and groups.components.shape == (4, 576)
    assert (groups.weights >= 0).all() and (groups.components >= 0).all()
    assert groups.clipped_fraction == 0.0  # ReLU6 output: nothing to clip
    # every position has exactly one label, and a labelled position's group has its largest weight
    assert groups.assignment.shape == (196,) and set(groups.assignment.tolist()) <= {-1, 0, 1, 2, 3}
    hit = groups.assignment >= 0
    assert (groups.weights[hit].argmax(axis=1) == groups.assignment[hit]).all()
    assert not groups.weights[~hit].any()
    # the factorisation explains the activations better than their mean does
    a = photo_acts.astype(np.float64)
    assert groups.reconstruction_error < np.linalg.norm(a - a.mean(axis=0))


def test_negative_activations_are_clipped_and_reported() -> None:
    a = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]])  # negative mass 1 of |a| total 7
    groups = nmf_groups(a, 1, seed=0)
    assert groups.clipped_fraction == pytest.approx(1 / 7)
    assert (groups.components >= 0).all()


def test_assignment_and_strength_by_hand() -> None:
    w = np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 4.0], [0.5, 0.0]])
    assert group_assignment(w).tolist() == [-1, 0, 1, 0]
    np.testing.assert_allclose(group_strength(w, group_assignment(w)), [0.0, 1.0, 1.0, 0.25])


def test_explain_writes_one_png(
    photo_path: Path, small_atlas: SmallAtlas, mobilenet: LoadedModel, tmp_path: Path, one_thread
) -> None:
    cfg = small_atlas.config.model_copy(deep=True)
    e = cfg.explain
    e.level, e.groups, e.steps, e.size, e.icon_px, e.image_px = small_atlas.levels[-1], 3, 4, 32, 16, 224
    e.methods, e.channels, e.page = ["saliency"], 0, False  # the other figures: tests/test_explain_figures.py
    result = explain.run(
        ExplainSection.of(
            cfg, image=photo_path, explain=cfg.explain.model_copy(update={"out": str(tmp_path / "explain.png")})
        ),
        StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
    )
    image = Image.open(result.out)
    # photo (224) + mosaic (14 x 16 = 224) side by side, two rows, with pads and titles
    assert image.size == (12 + 224 + 12 + 224 + 12, 12 + 18 + 224 + 12 + 18 + 224 + 12)
    assert result.grid == (14, 14) and len(result.group_labels) == 3
    n_cells = len(derived.read_level(small_atlas.store, e.level, with_attribution=False))
    assert ((result.cell >= -1) & (result.cell < n_cells)).all()
    pixels = np.asarray(image, dtype=np.float32)
    assert pixels[30:254, 248:472].std() > 10  # the mosaic panel holds icons, not background


def test_explain_refuses_an_unknown_level_and_an_unreadable_image(
    photo_path: Path, small_atlas: SmallAtlas, mobilenet: LoadedModel, tmp_path: Path
) -> None:
    cfg = small_atlas.config.model_copy(deep=True)
    cfg.explain.level = 4
    with pytest.raises(AtlasError, match="no grid level 4"):
        explain.run(
            ExplainSection.of(
                cfg, image=photo_path, explain=cfg.explain.model_copy(update={"out": str(tmp_path / "x.png")})
            ),
            StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
        )
    with pytest.raises(AtlasError, match="cannot read the image"):
        explain.run(
            ExplainSection.of(cfg, image=tmp_path / "missing.jpg"),
            StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
        )
