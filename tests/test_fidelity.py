"""stages/render/fidelity.py: per-icon cos-sim and top-5 overlap, checked against a direct computation.

The direct computation does not use ``layer_forward``: it runs MobileNetV2's modules by hand up
to ``features.13.conv.0`` for the activation, and the whole model for the logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.context import StageContext
from stages.model.registry import LoadedModel
from stages.render import fidelity
from stages.render import stage as render
from stages.sections import RenderSection
from store import derived
from store.errors import AtlasError
from store.icons import IconStore
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture
from tests.test_render import LEVELS, tiny_atlas, tiny_config


def _direct(model: LoadedModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer activation ``[B, C, h, w]`` and logits, without hooks."""
    net = model.module
    with torch.no_grad():
        z = model.normalize(x)
        h = net.features[:13](z)
        acts = net.features[13].conv[0](h)
        logits = net(z)
    return acts, logits


def _expected(model: LoadedModel, icons: np.ndarray, cells: derived.CellLevel, size: int | None):
    x = torch.as_tensor(icons).permute(0, 3, 1, 2).float() / 255.0
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    acts, logits = _direct(model, x)
    h = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2].numpy().astype(np.float64)
    v = cells.direction.astype(np.float64)
    cos = (h * v).sum(1) / (np.linalg.norm(h, axis=1) * np.linalg.norm(v, axis=1))
    top = logits.topk(5, dim=1).indices.numpy()
    overlap = np.array([bool(set(t.tolist()) & set(c[c >= 0].tolist())) for t, c in zip(top, cells.top_idx)])
    return cos, top, overlap


def test_fidelity_matches_direct_computation(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    cfg = tiny_config(steps=12, size=48, batch_size=4)
    with pytest.raises(AtlasError, match="atlas render"):
        fidelity.run(cfg, store, torch.device("cpu"), model=mobilenet)
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    report = fidelity.run(cfg, store, torch.device("cpu"), model=mobilenet)

    icons = IconStore.open(store.derived_path("icons"))
    all_cos, all_overlap = [], []
    for n in LEVELS:
        stored = icons.read_fidelity(n)
        cells = derived.read_level(store, n)
        pixels = icons.read_level(n).icons
        cos, top, overlap = _expected(mobilenet, pixels, cells, None)
        np.testing.assert_allclose(stored.cossim, cos, atol=1e-4)
        np.testing.assert_array_equal(stored.top_pred, top)
        np.testing.assert_array_equal(stored.overlap, overlap)
        assert stored.overlap.dtype == bool and stored.overlap_resized.dtype == bool
        cos_big, _, overlap_big = _expected(mobilenet, pixels, cells, mobilenet.image_size)
        np.testing.assert_allclose(stored.cossim_resized, cos_big, atol=1e-4)
        np.testing.assert_array_equal(stored.overlap_resized, overlap_big)
        # the render stage's own cos-sim is the same measurement (icon at its own size)
        np.testing.assert_allclose(icons.read_level(n).cossim, cos, atol=1e-4)
        all_cos.append(cos)
        all_overlap.append(overlap)
    cos, overlap = np.concatenate(all_cos), np.concatenate(all_overlap)
    assert report.icons == 7 and report.levels == LEVELS and report.cells_with_classes == 7
    assert -1 <= report.cossim_quantiles["q05"] <= report.cossim_quantiles["q50"] <= report.cossim_quantiles["q95"] <= 1
    assert report.cossim_quantiles["q50"] == pytest.approx(np.quantile(cos, 0.5), abs=1e-4)
    assert report.frac_cossim_ge_half == pytest.approx((cos >= 0.5).mean())
    assert report.frac_overlap == pytest.approx(overlap.mean())
    assert 0 <= report.frac_overlap_resized <= 1 and 0 <= report.frac_cossim_resized_ge_half <= 1


def test_overlap_ignores_padding() -> None:
    top_pred = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    cell = np.array([[-1, -1, 5, -1, -1], [-1, -1, -1, -1, -1]])
    np.testing.assert_array_equal(fidelity.overlaps(top_pred, cell), [True, False])


def test_members_overlap_uses_the_members_most_predicted_classes() -> None:
    # cell 0: members predict 7, 7, 7, 3 -> common {7, 3}; cell top {3, ...} -> overlap
    # cell 1: members predict 9, 9 -> common {9}; cell top {1, 2} -> none; cell 2 has no members' match
    row_top1 = np.array([7, 7, 3, 7, 9, 9, 4])
    cells = derived.CellLevel(
        n=2,
        i=np.zeros(3, np.int32),
        j=np.zeros(3, np.int32),
        count=np.array([4, 2, 1]),
        direction=np.zeros((3, 2), np.float32),
        attribution=None,
        top_idx=np.array([[3, -1, -1, -1, -1], [1, 2, -1, -1, -1], [-1, -1, -1, -1, -1]], np.int32),
        top_val=np.zeros((3, 5), np.float32),
        member_offsets=np.array([0, 4, 6, 7]),
        member_rows=np.array([0, 1, 2, 3, 4, 5, 6]),
    )
    np.testing.assert_array_equal(fidelity.members_overlap(cells, row_top1), [True, False, False])
