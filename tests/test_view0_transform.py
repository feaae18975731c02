"""collect.view0: view 0 as the plain resize of the whole image (default) or the weights' evaluation crop.

Geometry on constructed images (exact boxes), the pixels against torchvision's own Resize + CenterCrop,
the declared resize per weights, and end to end on real photos and the real MobileNetV2: the setting is
recorded in the store's sampling parameters, a store made with the other setting is refused, and the
default records nothing new (its bytes are the golden ones: tests/test_golden.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image
from torchvision import transforms

from pipeline.params import load_config
from stages.collect import stage as collect
from stages.collect.inputs import ViewDataset, ViewSettings, draft_side, eval_crop_for, to_normalized_input, work_items
from stages.config import Config
from stages.context import StageContext
from stages.images.crops import eval_center_box, render_view, view_box
from stages.sections import CollectSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.records import Fields, Sampling

SCALE = (0.25, 1.0)


# ------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize(
    "width,height,box",
    [
        (448, 448, (28.0, 28.0, 420.0, 420.0)),  # resized to 256 x 256, crop offset 16 = 28 px of the photo
        (896, 448, (252.0, 28.0, 644.0, 420.0)),  # 512 x 256: the middle 224 of 512 (offset 144 = 252 px)
        (448, 896, (28.0, 252.0, 420.0, 644.0)),  # portrait: the same, transposed
        (256, 256, (16.0, 16.0, 240.0, 240.0)),  # already at R: a plain crop
    ],
)
def test_eval_center_box_exact(width: int, height: int, box: tuple[float, ...]) -> None:
    assert eval_center_box(width, height, 256, 224) == box
    assert view_box(width, height, 5, 0, 1, SCALE, 0, eval_crop=(256, 224)) == box
    assert view_box(width, height, 5, 0, 12, SCALE, 0, eval_crop=(256, 224)) == box


def test_eval_center_box_follows_torchvision_rounding() -> None:
    # 640 x 480 -> Resize(256) gives 341 x 256 (long side truncated); crop left round(58.5) = 58 (half to even)
    left, top, right, bottom = eval_center_box(640, 480, 256, 224)
    assert (left, top, right, bottom) == (58 * 640 / 341, 30.0, 282 * 640 / 341, 450.0)
    assert eval_center_box(300, 300, 224, 224) == (0.0, 0.0, 300.0, 300.0)  # resize == crop: the whole square


def test_resize_default_and_crops_unchanged() -> None:
    assert view_box(640, 480, 3, 0, 12, SCALE, 0) == (0, 0, 640, 480)  # the paper's view 0
    for view in range(1, 12):  # views 1.. are the same random crops whatever view 0 is
        assert view_box(640, 480, 3, view, 12, SCALE, 0) == view_box(
            640, 480, 3, view, 12, SCALE, 0, eval_crop=(256, 224)
        )
    with pytest.raises(ValueError):
        eval_center_box(640, 480, 200, 224)


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1000, 333), (257, 256)])
def test_eval_view_is_torchvisions_resize_then_center_crop(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    photo = Image.fromarray(smooth).resize(size, Image.Resampling.BICUBIC)
    ours = np.asarray(render_view(photo, view_box(*size, 0, 0, 1, SCALE, 0, eval_crop=(256, 224)), 224), np.int16)
    theirs = np.asarray(transforms.CenterCrop(224)(transforms.Resize(256)(photo)), np.int16)
    diff = np.abs(ours - theirs)
    # one resample over the fractional box vs resize-then-crop: the same sampling grid; Pillow's
    # fixed-point coefficients may round a value differently (seen: <0.2% of values, by 1)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    squashed = np.asarray(render_view(photo, view_box(*size, 0, 0, 1, SCALE, 0), 224), np.int16)
    assert np.abs(squashed - theirs).mean() > 5 * max(diff.mean(), 0.1)  # the two settings really differ


def test_declared_eval_resize_per_weights() -> None:
    assert eval_crop_for("mobilenet_v2", "IMAGENET1K_V1", 224) == (256, 224)
    assert eval_crop_for("mobilenet_v2", "IMAGENET1K_V2", 224) == (232, 224)  # its recipe's resize
    assert eval_crop_for("mobilenet_v2", "IMAGENET1K_V1", 112) == (128, 112)  # scaled to the input size
    assert eval_crop_for("stages.model.factories:efficientnet_lite0", "DEFAULT", 224) == (256, 224)  # none declared
    assert eval_crop_for("mobilenet_v2", "/nowhere/weights.pth", 224) == (256, 224)


def test_draft_side_keeps_the_eval_resize() -> None:
    assert draft_side(True, 224, 1, SCALE) == 224
    assert draft_side(True, 224, 1, SCALE, (256, 224)) == 256  # the short side must reach R, not 224
    assert draft_side(True, 224, 12, SCALE, (256, 224)) == draft_side(True, 224, 12, SCALE) == 518
    assert _eval_crop({"seed": 0}) is None
    assert _eval_crop({"view0": {"transform": "resize"}}) is None
    assert _eval_crop({"view0": {"transform": "eval", "resize": 232, "crop": 224}}) == (232, 224)


def _eval_crop(sampling: dict) -> tuple[int, int] | None:
    """View 0's crop as a store with these sampling parameters records it (store/records.py)."""
    geometry = Fields({"views_per_image": 1, "positions_per_image": 1}, "store")
    return Sampling.parse(geometry, Fields(sampling, "store", "sampling.")).eval_crop


# ------------------------------------------------------------------------------- collect, end to end
def _config(source: Path, store: Path, *sets: str) -> Config:
    base = [
        f"data.source={source}",
        f"data.store={store}",
        "model.layer=features.13.conv.0",  # the mobilenet fixture's, whose activations the rows are compared with
        "collect.views_per_image=1",
        "collect.positions_per_image=1",
        "collect.rows_per_chunk=4",
        "collect.batch_size=4",
        "collect.num_workers=0",
        "collect.top_k=3",
    ]
    return load_config(None, base + list(sets))


def test_eval_is_recorded_fed_to_the_model_and_a_mismatch_refused(
    photo_folder: Path, tmp_path: Path, mobilenet
) -> None:
    eval_store, plain_store = tmp_path / "eval.zarr", tmp_path / "plain.zarr"
    cpu = torch.device("cpu")
    assert (
        collect.run(
            CollectSection.of(_config(photo_folder, eval_store, "collect.view0=eval")), StageContext(device=cpu)
        ).stored
        == 4
    )
    assert collect.run(CollectSection.of(_config(photo_folder, plain_store)), StageContext(device=cpu)).stored == 4

    stored = AtlasStore.open(eval_store, mode="r")
    assert stored.attrs["sampling"]["view0"] == {"transform": "eval", "resize": 256, "crop": 224}
    assert stored.sampling.eval_crop == (256, 224)
    assert "view0" not in AtlasStore.open(plain_store, mode="r").attrs["sampling"]  # the default adds nothing

    # the rows are the model's activations on the evaluation crop of each photo
    paths = list(stored.group["images"]["path"][:])
    yx = zarr.open_group(str(eval_store), mode="r")["samples"]["yx"][:]
    acts = zarr.open_group(str(eval_store), mode="r")["samples"]["activations"][:]
    plain_acts = zarr.open_group(str(plain_store), mode="r")["samples"]["activations"][:]
    views = []
    for path in paths:
        photo = Image.open(str(path)).convert("RGB")
        views.append(np.asarray(render_view(photo, eval_center_box(*photo.size, 256, 224), 224), np.uint8))
    with torch.inference_mode():
        act = mobilenet.trunk(to_normalized_input(np.stack(views), cpu, mobilenet.mean, mobilenet.std))[0]
    expected = np.stack([act[i, :, y, x].numpy() for i, (y, x) in enumerate(yx[:, :])]).astype(np.float16)
    np.testing.assert_allclose(acts.astype(np.float32), expected.astype(np.float32), rtol=1e-2, atol=1e-2)
    assert not np.array_equal(acts, plain_acts)  # the photos are not square: the settings differ

    with pytest.raises(AtlasError, match=r"view0"):
        collect.run(CollectSection.of(_config(photo_folder, eval_store)), StageContext(device=cpu))
    with pytest.raises(AtlasError, match=r"view0"):
        collect.run(
            CollectSection.of(_config(photo_folder, plain_store, "collect.view0=eval")), StageContext(device=cpu)
        )


def test_view_dataset_default_is_the_whole_image(photo_folder: Path) -> None:
    path = sorted(photo_folder.rglob("*.jpg"))[0]
    photo = Image.open(path).convert("RGB")
    settings = ViewSettings(1, SCALE, 224, 0, 89_478_485)
    _, views, _ = ViewDataset(work_items({0: range(1)}, 1), [str(path)], settings)[0]
    np.testing.assert_array_equal(views[0], np.asarray(render_view(photo, (0, 0, *photo.size), 224)))


def test_dataset_example_thumbnails_cut_view_0_where_collect_saw_it() -> None:
    """An eval store's view-0 rows are crops of the centre square: the tiles stage's thumbnails must be too."""
    import numpy as np
    from PIL import Image

    from stages.images.crops import view_box
    from stages.tiles.dataset_examples import RowGeometry, example_crop_box, example_thumbnail

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    plain = RowGeometry(
        views_per_image=2, positions_per_image=1, view_scale=(0.5, 1.0), seed=0, max_pixels=10**8, layer_hw=(7, 7)
    )
    evaluated = RowGeometry(**{**plain.__dict__, "eval_crop": (256, 224)})
    box = view_box(400, 300, 0, 0, 2, (0.5, 1.0), 0, eval_crop=(256, 224))
    want = photo.resize((32, 32), resample=Image.Resampling.LANCZOS, box=example_crop_box(box, (3, 3), (7, 7), 0.33))
    got = example_thumbnail(photo, evaluated, 0, (3, 3), 32, 0.33)
    assert np.array_equal(np.asarray(got), np.asarray(want))
    assert not np.array_equal(np.asarray(example_thumbnail(photo, plain, 0, (3, 3), 32, 0.33)), np.asarray(want))
