"""``atlas explain IMAGE --layers``: how understanding evolves across layers (stages/explain/layers.py).

Pure functions on constructed arrays (pooling geometry, filter normalisation, strongest channels),
then the real MobileNetV2 with tiny renders: every layer's panel is not blank, bad layer names are
one-line errors naming the parameter and the closest layers, and the CLI reads the comma list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import cli
from pipeline.commands.common import config_from_args
from stages.config import Config
from stages.context import StageContext
from stages.explain import layers as L
from stages.model.registry import LoadedModel
from stages.sections import ExplainSection
from store.errors import AtlasError
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def assert_not_blank(pixels: np.ndarray, what: str, min_colours: int = 100) -> None:
    """As tests/test_viewer_browser.py: pixel std and distinct colours at 5 bits per channel."""
    colours = len(np.unique((pixels // 8).reshape(-1, 3), axis=0))
    assert pixels.std() > 15, f"{what} looks blank (pixel std {pixels.std():.1f})"
    assert colours > min_colours, f"{what} has only {colours} distinct colours"


# ----------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    "side, cap, expected",
    [
        (56, 8, (7, 8, 8)),
        (28, 8, (4, 7, 7)),
        (14, 8, (2, 7, 7)),
        (7, 8, (1, 7, 7)),
        (56, 14, (4, 14, 14)),
        (28, 14, (2, 14, 14)),
        (10, 3, (4, 3, 3)),
    ],
)
def test_pool_geometry(side: int, cap: int, expected: tuple[int, int, int]) -> None:
    assert L.pool_geometry(side, side, cap) == expected


def test_pooled_cells_are_exact_block_means_with_cut_edge_blocks() -> None:
    h, w, c = 5, 7, 2
    acts = np.arange(h * w * c, dtype=np.float32).reshape(h, w, c)
    pooled, f = L.pool_positions(acts, 3)  # f = ceil(7 / 3) = 3 -> 2 x 3 cells
    assert f == 3 and pooled.shape == (2, 3, 2)
    for i, rows in enumerate([(0, 3), (3, 5)]):
        for j, cols in enumerate([(0, 3), (3, 6), (6, 7)]):
            block = acts[rows[0] : rows[1], cols[0] : cols[1]].reshape(-1, c)
            np.testing.assert_allclose(pooled[i, j], block.mean(axis=0))
    one = np.zeros((56, 56, 3), np.float32)
    one[7:14, 0:7, 1] = 2.0  # exactly cell (1, 0) of the 8 x 8 grid
    pooled, f = L.pool_positions(one, 8)
    assert f == 7 and pooled.shape == (8, 8, 3)
    assert pooled[1, 0, 1] == 2.0 and np.count_nonzero(pooled) == 1
    np.testing.assert_allclose(L.magnitudes(pooled)[1, 0], 2.0)


def test_filter_grid_shape_and_per_filter_normalisation() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 3, 4)).astype(np.float32)
    w[1] *= 100.0  # a big filter does not dim the others
    w[4] = 0.7  # a constant filter is mid-grey
    out = L.filter_grid(torch.as_tensor(w))
    assert out.shape == (5, 3, 4, 3)
    for k in range(4):
        assert out[k].min() == pytest.approx(0.0) and out[k].max() == pytest.approx(1.0)
    assert np.all(out[4] == 0.5)
    k, y, x, ch = 2, 1, 3, 2  # [K, 3, kh, kw] -> [K, kh, kw, 3], min-max of filter k
    expected = (w[k, ch, y, x] - w[k].min()) / (w[k].max() - w[k].min())
    assert out[k, y, x, ch] == pytest.approx(expected)
    grid = L.tile(out, cols=3, scale=4, gap=2)
    assert grid.shape == (2 * 12 + 3 * 2, 3 * 16 + 4 * 2, 3)
    with pytest.raises(ValueError):
        L.filter_grid(np.zeros((2, 1, 3, 3)))


def test_strongest_maps_pick_the_channels_with_the_largest_mean() -> None:
    acts = np.zeros((4, 6, 10), np.float32)
    acts[:, :, 7] = 1.0  # mean 1
    acts[0, 0, 2] = 30.0  # one hot spot, mean 1.25: the strongest
    acts[:, :3, 5] = 1.5  # mean 0.75
    acts[:, :, 9] = -5.0
    channels, maps = L.strongest_maps(acts, 3)
    assert channels.tolist() == [2, 7, 5]
    assert maps.shape == (3, 4, 6)
    np.testing.assert_array_equal(maps[0], acts[:, :, 2])
    np.testing.assert_array_equal(maps[2], acts[:, :, 5])


def test_magnitude_sets_the_icon_size() -> None:
    icons = np.random.default_rng(1).integers(0, 255, (4, 10, 10, 3), dtype=np.uint8)
    norms = np.array([[2.0, 1.0], [0.0, 0.5]], np.float32)
    panel = L.layer_panel(icons, norms, 40)
    assert panel.shape == (40, 40, 3)
    assert np.all(panel[20:, :20] == 255)  # zero norm: empty cell
    assert np.any(panel[:20, :20] != 255, axis=2).all()  # the largest fills its cell
    drawn = np.any(panel[:20, 20:] != 255, axis=2)
    assert drawn.sum() == 10 * 10  # half the norm: half the side


# ----------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.Resampling.BILINEAR)


def _config(tmp_path: Path, **explain: object) -> Config:
    base = {
        "layers": ["features.3.conv.0", "features.13.conv.0"],
        "layer_cells": 4,
        "layer_icon_px": 24,
        "layer_steps": 8,
        "layer_panel_px": 128,
        "maps_channels": 4,
        "out": str(tmp_path / "cat.png"),
    }
    return Config.model_validate({"explain": {**base, **explain}})


def test_layers_figure_is_not_blank_per_layer(
    mobilenet: LoadedModel, photo: Image.Image, tmp_path: Path, one_thread: None
) -> None:
    config = _config(tmp_path)
    result = L.run(config, photo, mobilenet, torch.device("cpu"), config.explain.out, image_name="cat")
    assert [v.layer for v in result.views] == ["features.3.conv.0", "features.13.conv.0"]
    geometry = {v.layer: (v.block, v.norms.shape, v.shape) for v in result.views}
    assert geometry == {
        "features.3.conv.0": (14, (4, 4), (144, 56, 56)),
        "features.13.conv.0": (4, (4, 4), (576, 14, 14)),
    }
    for v in result.views:
        assert v.icons.shape == (16, 24, 24, 3) and v.source == "rendered"
        assert_not_blank(v.panel, f"the {v.layer} panel")
    assert result.filters_layer == "features.0.0" and result.maps_layer == mobilenet.layer
    assert len(result.maps_channels) == 4
    assert set(result.figures) == {"layers", "filters", "activation_maps"}
    for name, path in result.figures.items():
        assert path.parent == tmp_path and path.name.startswith("cat_")
        assert_not_blank(np.asarray(Image.open(path).convert("RGB")), f"the {name} figure")


def test_bad_layer_lists_are_one_line_errors(mobilenet: LoadedModel) -> None:
    valid = L.conv_layers(mobilenet)
    with pytest.raises(AtlasError) as info:
        L.resolve_layers(["features.3.conv.0", "features.3.conv0"], mobilenet, valid)
    text = str(info.value)
    assert "\n" not in text and text.startswith("explain.layers: 'features.3.conv0'")
    assert "features.3.conv.0" in text.split("closest:")[1]
    with pytest.raises(AtlasError, match=r"^explain.layers is empty; .*--layers features.3.conv.0,") as info:
        L.resolve_layers([], mobilenet, valid)
    assert "\n" not in str(info.value)
    assert L.resolve_layers(None, mobilenet, valid) == []
    assert L.resolve_layers(["default", "features.3.conv.0", "features.1"], mobilenet, valid) == L.DEFAULT_LAYERS[
        "mobilenet_v2"
    ] + ["features.1"]
    config = Config.model_validate({"explain": {"layers": ["features.3.conv.0"], "maps_layer": "classifier"}})
    with pytest.raises(AtlasError, match=r"^explain.maps_layer: 'classifier' is not a convolutional layer"):
        L.check_layers(config, mobilenet)


def test_cli_reads_the_comma_list_and_reports_bad_names_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        [
            "explain",
            "photo.jpg",
            "--params",
            str(PARAMS),
            "--layers",
            "features.3.conv.0,features.17.conv.0",
            "--maps-layer",
            "features.6.conv.0",
        ]
    )
    config = config_from_args(args)
    assert config.explain.layers == ["features.3.conv.0", "features.17.conv.0"]
    assert config.explain.maps_layer == "features.6.conv.0"
    assert config_from_args(parser.parse_args(["explain", "photo.jpg", "--params", str(PARAMS)])).explain.layers is None
    # no store at data.store: the layer figures alone; the bad name stops it before any render
    image = tmp_path / "cat.jpg"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(image)
    code = cli.main(
        [
            "explain",
            str(image),
            "--params",
            str(PARAMS),
            "--store",
            str(tmp_path / "none.zarr"),
            "--out",
            str(tmp_path / "e.png"),
            "--layers",
            "features.3.conv.0,features.99",
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1
    assert err[0].startswith("atlas explain: error: explain.layers: 'features.99' is not a convolutional layer")
    assert not list(tmp_path.glob("e_*.png"))


def test_full_explain_draws_the_atlas_layer_with_its_cells_and_pages_the_figures(
    small_atlas, mobilenet: LoadedModel, photo_folder: Path, tmp_path: Path, one_thread: None
) -> None:
    import shutil

    from stages.explain import stage as explain

    atlas = tmp_path / "atlas"
    shutil.copytree(small_atlas.atlas_dir, atlas)
    cfg = small_atlas.config.model_copy(deep=True)
    cfg.data.atlas = str(atlas)
    e = cfg.explain
    e.level, e.groups, e.steps, e.size, e.icon_px, e.image_px = small_atlas.levels[-1], 2, 2, 16, 8, 64
    e.methods, e.channels, e.channel_patches = ["saliency"], 0, 0
    e.layers, e.layer_cells, e.layer_icon_px, e.layer_steps, e.layer_panel_px = (
        ["features.3.conv.0", mobilenet.layer],
        4,
        24,
        2,
        96,
    )
    photo = next(photo_folder.glob("tabby/*.jpg"))
    result = explain.run(
        ExplainSection.of(cfg, image=photo, explain=cfg.explain.model_copy(update={"out": str(tmp_path / "x.png")})),
        StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet),
    )
    assert [v.source for v in result.layers.views] == ["rendered", f"atlas level {e.level}"]
    text = result.page.read_text()
    for name in ("x_layers.png", "x_filters.png", "x_activation_maps.png"):
        assert (result.page.parent / name).is_file() and name in text
