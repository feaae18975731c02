"""`atlas explain` end to end on the session's small atlas: every figure, the building blocks, the
channel view, and the HTML page inside the atlas folder with its links to the main atlas's cells.

Real MobileNetV2, a real photo, the real small atlas (copied: the page is written into it); the
settings are tiny (4 render steps, a coarse occlusion grid) to stay within seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.context import StageContext
from stages.explain import stage as explain
from stages.explain.channels import strongest_channels, top_rows_per_channel
from stages.explain.groups import group_attribution
from stages.model.registry import LoadedModel
from stages.sections import ExplainSection
from store import derived
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture


def test_group_attribution_by_hand() -> None:
    weights = np.array([[1.0, 0.0], [0.5, 2.0]])  # 2 positions, 2 groups
    components = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # 2 groups, 3 channels
    grads = np.array([[[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]])  # 1 class
    # group 0: 1*(1+3) + 0.5*(0+1) = 4.5; group 1: 0*2 + 2*(-1) = -2
    np.testing.assert_allclose(group_attribution(weights, components, grads), [[4.5], [-2.0]])
    # the groups add up to the gradient . reconstruction (W H)
    recon = weights @ components
    np.testing.assert_allclose(group_attribution(weights, components, grads).sum(), (recon * grads[0]).sum())


def test_strongest_channels_and_their_top_rows(small_atlas: SmallAtlas) -> None:
    acts = np.zeros((2, 2, 5))
    acts[..., 3], acts[0, 0, 1], acts[..., 4] = 2.0, 9.0, 2.0
    assert strongest_channels(acts, 3).tolist() == [1, 3, 4]  # means 2.25, 2, 2: ties go to the smaller index
    store = small_atlas.store
    channels = np.array([0, 17, 300])
    rows = top_rows_per_channel(store, channels, 3, distinct_photos=False)
    a = np.asarray(store.activations().compute(), np.float32)[:, channels]
    a[~np.asarray(store.valid_mask(), bool)] = -np.inf
    for k in range(len(channels)):
        np.testing.assert_array_equal(np.sort(a[rows[k], k])[::-1], np.sort(a[:, k])[::-1][:3])
    distinct = top_rows_per_channel(store, channels, 3, distinct_photos=True)
    per_photo = 8 * 4  # small_atlas: 8 views x 4 positions per photo
    for line in distinct:
        kept = line[line >= 0]
        assert len(set((kept // per_photo).tolist())) == len(kept)  # one row per photo


def test_explain_writes_every_figure_and_a_linked_page(
    small_atlas: SmallAtlas, mobilenet: LoadedModel, photo_folder: Path, tmp_path: Path, one_thread
) -> None:
    atlas = tmp_path / "atlas"
    shutil.copytree(small_atlas.atlas_dir, atlas)
    cfg = small_atlas.config.model_copy(deep=True)
    cfg.data.atlas = str(atlas)
    e = cfg.explain
    level = small_atlas.levels[-1]
    e.level, e.groups, e.steps, e.size, e.icon_px, e.image_px = level, 3, 4, 32, 16, 224
    e.occlusion_window, e.occlusion_stride, e.channels, e.channel_patches, e.patch_px = 112, 112, 2, 2, 32
    e.classes = ["space shuttle"]
    photo = next(photo_folder.glob("tabby/*.jpg"))
    result = explain.run(
        ExplainSection.of(cfg, image=photo, explain=cfg.explain.model_copy(update={"out": str(tmp_path / "x.png")})),
        StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
    )

    # classes: the top 5, then the one asked for by name
    assert len(result.classes) == 6 and mobilenet.class_names[result.classes[-1]] == "space shuttle"
    assert result.probabilities[:5] == sorted(result.probabilities[:5], reverse=True)
    assert set(result.maps.maps) == set(e.methods) and not result.maps.skipped  # MobileNetV2 admits CAM
    assert result.maps.grad_cam_layer == "features.18.2"
    assert result.group_contributions.shape == (3, 6)
    expected = {
        "dictionary_groups",
        "dictionary",
        "attribution",
        "blocks",
        "channels",
        *(f"method:{m}" for m in e.methods),
    }
    assert set(result.figures) == expected
    for name, path in result.figures.items():
        pixels = np.asarray(Image.open(path).convert("L"), np.float32)
        assert pixels.std() > 8, f"{name} looks blank"  # a white (blank) figure: std ~0
    # the page: inside the atlas, listed in atlases.json, one link per position to its cell at this level
    assert result.page is not None and result.page.parent.parent == atlas / "explain"
    text = result.page.read_text()
    links = re.findall(r'href="\.\./\.\./index\.html#atlas=main&amp;level=(\d+)&amp;cell=(\d+):(\d+)"', text)
    n_cells = len(derived.read_level(small_atlas.store, level, with_attribution=False))
    positions = int((result.cell >= 0).sum())
    groups_linked = int((result.group_cells >= 0).sum())
    assert len(links) == positions + groups_linked
    assert all(int(a) == level and int(b) == level and 0 <= int(k) < n_cells for a, b, k in links)
    position_cells = [int(k) for _, _, k in links[:positions]]
    assert position_cells == result.cell[result.cell >= 0].tolist()
    for name in ("dictionary.png", "x_attribution.png", "x_blocks.png", "x_channels.png", "x.png"):
        assert (result.page.parent / name).is_file() and name in text
    index = json.loads((atlas / "atlases.json").read_text())
    entry = next(a for a in index["atlases"] if a["kind"] == "explain")
    assert (atlas / entry["page"]) == result.page and any(a["id"] == "main" for a in index["atlases"])


def test_explain_refuses_an_unknown_class(
    small_atlas: SmallAtlas, mobilenet: LoadedModel, photo_folder: Path, tmp_path: Path
) -> None:
    from store.errors import AtlasError

    cfg = small_atlas.config.model_copy(deep=True)
    cfg.explain.level, cfg.explain.classes = small_atlas.levels[-1], ["not a class"]
    with pytest.raises(AtlasError, match="explain.classes: no class named 'not a class'"):
        explain.run(
            ExplainSection.of(
                cfg,
                image=next(photo_folder.glob("tabby/*.jpg")),
                explain=cfg.explain.model_copy(update={"out": str(tmp_path / "x.png")}),
            ),
            StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
        )
