"""pipeline.api, the notebook API: on arrays with known structure, and on a small real atlas.

In memory: two well-separated clusters must never share a cell, each cell's direction must be the
mean of its members, the counts must add up to the rows kept. On the ``small_atlas`` fixture (real
MobileNetV2 activations of four photos, levels 3 and 6 rendered and exported): ``open_atlas`` must
agree with the store readers and with what the tiles stage exported (the composed level, the
dataset-example thumbnails), and the renders must point at their directions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pipeline
from pipeline import api
from pipeline.api import AtlasError, activation_atlas, compose_level, feature_vis, open_atlas, render_directions
from stages.context import StageContext
from stages.featurevis import Channel, layer_forward
from stages.grid import binning
from stages.grid.whitening import whitening_matrix
from stages.reduce.layout_math import normalize_layout
from stages.render.stage import centre_cossim
from store import derived
from store.atlas_store import AtlasStore


def _two_clusters(n: int = 120, channels: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative activations of two clusters along channels 0 and 1, attributed to classes 0 and 1."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0.0, 0.2, (2 * n, channels))).astype(np.float32)
    x[:n, 0] += 3.0
    x[n:, 1] += 3.0
    attr = np.zeros((2 * n, 3), np.float32)
    attr[:n, 0], attr[n:, 1] = 1.0, 1.0
    attr[:, 2] = rng.normal(0.0, 0.05, 2 * n)  # a noise class that never wins
    return x, attr


def _one_line_naming(err: pytest.ExceptionInfo[AtlasError], *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_the_package_reexports_the_api() -> None:
    assert sorted(pipeline.__all__) == sorted(api.__all__)
    for name in api.__all__:
        assert getattr(pipeline, name) is getattr(api, name)
    assert pipeline.AtlasError is AtlasError


# ===================================================================================== in memory
def test_two_clusters_never_share_a_cell() -> None:
    x, attr = _two_clusters()
    n = len(x) // 2
    result = activation_atlas(x, attr, grid=[4, 8], method="pca", min_count=5, class_names=["a", "b", "noise"])
    assert result.levels == [4, 8]
    assert (
        result.layout.layout.shape == (len(x), 2)
        and result.layout.layout.min() >= 0
        and result.layout.layout.max() <= 1
    )
    for size in result.levels:
        level = result.level(size)
        assert level.n == size and len(level) > 0
        ids = binning.flat_cell_ids(result.layout.layout, size)
        counts = np.bincount(ids, minlength=size * size)
        kept = counts > 5
        assert level.count.sum() == counts[kept].sum()  # counts add up to the rows kept
        assert len(level) == kept.sum()
        for k in range(len(level)):
            members = level.members(k)
            assert len(members) == level.count[k]
            cluster = members < n
            assert cluster.all() or not cluster.any(), f"cell {k} mixes both clusters"
            np.testing.assert_allclose(level.direction[k], x[members].mean(axis=0), rtol=1e-5, atol=1e-6)
            assert level.top_classes(k)[0][0] == ("a" if cluster.all() else "b")
            assert ids[members[0]] == level.j[k] * size + level.i[k]
        rows = np.concatenate([level.members(k) for k in range(len(level))])
        assert len(np.unique(rows)) == len(rows) == level.count.sum()
    with pytest.raises(AtlasError) as err:
        _ = result.cells  # two levels: which one?
    _one_line_naming(err, "level")


def test_single_level_gives_cells_and_directions() -> None:
    x, _ = _two_clusters(n=40)
    result = activation_atlas(x, grid=3, method="pca", min_count=0)
    assert result.levels == [3]
    assert result.cells is result.level(3)
    np.testing.assert_array_equal(result.directions, result.cells.direction)
    assert result.cells.top_idx.shape[1] == 0  # no attributions: no labels
    assert result.cells.count.sum() == len(x)  # min_count 0 keeps every non-empty cell


def test_a_given_embedding_is_normalised_and_binned_like_the_stages() -> None:
    x, attr = _two_clusters(n=60)
    rng = np.random.default_rng(1)
    embedding = rng.normal(0.0, 5.0, (len(x), 2)) + 100.0
    result = activation_atlas(x, attr, grid=5, embedding=embedding, min_count=2)
    np.testing.assert_array_equal(result.layout.layout, normalize_layout(embedding))
    ids = binning.flat_cell_ids(result.layout.layout, 5)
    level = result.cells
    for k in range(len(level)):
        assert set(ids[level.members(k)].tolist()) == {int(level.j[k] * 5 + level.i[k])}


def test_whitening_is_the_grid_stages() -> None:
    x, _ = _two_clusters(n=50)
    result = activation_atlas(x, grid=2, method="pca", ridge=1e-2)
    moment = x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    np.testing.assert_allclose(result.whitening, whitening_matrix(moment, 1e-2), rtol=1e-6)


def test_in_memory_figures() -> None:
    x, attr = _two_clusters(n=60)
    result = activation_atlas(x, attr, grid=4, method="pca", class_names=["a", "b", "noise"])
    fig = result.plot_layout(4)
    assert len(fig.axes) == 1 and fig._repr_png_()[:4] == b"\x89PNG"
    icons = np.zeros((len(result.cells), 8, 8, 3), np.uint8) + 200
    canvas = result.show_level(4, icons, density_scaling=False, background="black")
    assert canvas.size == (32, 32)
    pixels = np.asarray(canvas)
    for i, j in zip(result.cells.i, result.cells.j):
        assert (pixels[j * 8 : (j + 1) * 8, i * 8 : (i + 1) * 8] == 200).all()
    assert (pixels == 0).any()  # the empty cells keep the background


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"activations": np.zeros(10)}, ["activations", "2-D"]),
        ({"activations": np.zeros((2, 8, 3, 3))}, ["activations", "reshape"]),
        ({"activations": np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]])}, ["activations", "NaN", "row 0"]),
        ({"activations": np.ones((1, 4))}, ["activations", "at least 2"]),
        ({"attributions": np.ones((7, 3))}, ["attributions", "7 rows", "one row per sample"]),
        ({"attributions": np.ones((40, 3)), "class_names": ["a"]}, ["class_names", "3 attribution columns"]),
        ({"grid": 0}, ["grid=0", "positive"]),
        ({"grid": [3, 2.5]}, ["grid=", "positive integer"]),
        ({"method": "umap"}, ["n_neighbors=50", "umap", "method='pca'"]),
        ({"method": "isomap"}, ["method", "isomap"]),
        ({"min_dist": -1.0}, ["min_dist", "-1.0"]),
        ({"embedding": np.zeros((40, 3))}, ["embedding", "[samples=40, 2]"]),
    ],
)
def test_bad_arrays_and_settings_name_the_parameter(kwargs: dict, words: list[str]) -> None:
    args = {"activations": np.abs(np.random.default_rng(0).normal(size=(40, 4))), "grid": 3, "method": "pca", **kwargs}
    with pytest.raises(AtlasError) as err:
        activation_atlas(**args)
    _one_line_naming(err, *words)


# ===================================================================================== a stored atlas
def test_open_atlas_agrees_with_the_store_readers(small_atlas) -> None:
    store = small_atlas.store
    atlas = open_atlas(store.path)
    assert str(store.path) in repr(atlas) and atlas.kind == "main"
    layout = derived.read_layout(store)
    np.testing.assert_array_equal(atlas.layout.rows, layout.rows)
    np.testing.assert_array_equal(atlas.layout.layout, layout.layout)
    assert atlas.levels == derived.grid_levels(store) == small_atlas.levels
    assert atlas.rendered_levels == small_atlas.levels
    for n in atlas.levels:
        cells = derived.read_level(store, n)
        level = atlas.level(n)
        for name in ("i", "j", "count", "direction", "top_idx", "top_val", "member_offsets", "member_rows"):
            np.testing.assert_array_equal(getattr(level, name), getattr(cells, name), err_msg=name)
        assert level.n == n and len(level) == len(cells)
        assert [[c for c, _ in level.top_classes(k)] for k in range(len(level))] == cells.top_names()
        assert level.records()[0]["count"] == int(cells.count[0])
        assert atlas.icons(n).shape == (len(cells), 32, 32, 3)
    np.testing.assert_array_equal(atlas.whitening, derived.read_whitening(store).matrix)
    np.testing.assert_array_equal(atlas.activations(), store.row_values("activations", layout.rows).astype(np.float32))
    assert atlas.model_info["layer"] == small_atlas.config.model.layer
    assert atlas.class_atlases == {} and atlas.comparisons == {}


def _biggest_cell(atlas: api.Atlas, n: int) -> tuple[int, int, int]:
    level = atlas.level(n)
    k = int(level.count.argmax())
    return k, int(level.i[k]), int(level.j[k])


def test_cell_has_its_icon_and_real_photo_patches(small_atlas, tmp_path: Path) -> None:
    atlas = open_atlas(small_atlas.store.path)
    n = max(atlas.levels)
    k, i, j = _biggest_cell(atlas, n)
    cell = atlas.cell(n, i, j, examples=3, px=64)
    assert (cell.level, cell.index, cell.i, cell.j) == (n, k, i, j)
    level = atlas.level(n)
    assert cell.count == level.count[k] and cell.top_classes == level.top_classes(k)
    np.testing.assert_array_equal(cell.members, level.members(k))
    np.testing.assert_array_equal(cell.direction, level.direction[k])
    assert isinstance(cell.icon, Image.Image) and cell.icon.size == (32, 32)
    np.testing.assert_array_equal(np.asarray(cell.icon), atlas.icons(n)[k])
    assert np.asarray(cell.icon).std() > 5
    assert 1 <= len(cell.patches) <= 3 and set(cell.examples.tolist()) <= set(cell.members.tolist())
    photos = cell.examples // (
        small_atlas.config.collect.views_per_image * small_atlas.config.collect.positions_per_image
    )
    assert len(set(photos.tolist())) == len(photos)  # one patch per photo
    for patch in cell.patches:
        assert isinstance(patch, Image.Image) and patch.size == (64, 64) and np.asarray(patch).std() > 10
    strip = cell.strip(px=80)
    assert strip.size == ((len(cell.patches) + 1) * 84 - 4, 80)
    strip.save(tmp_path / "cell.png")  # to look at when it fails


def test_cell_patches_are_the_exported_dataset_examples(small_atlas) -> None:
    """The patches are the tiles stage's pick and crop: compare with the exported thumbnails."""
    atlas = open_atlas(small_atlas.store.path)
    tiles = small_atlas.config.tiles

    def read(rel: str) -> np.ndarray:
        return np.asarray(Image.open(small_atlas.atlas_dir / "main" / rel).convert("RGB"), np.float32)

    for n in atlas.levels:
        records = json.loads((small_atlas.atlas_dir / "main" / f"level_{n}" / "cells.json").read_text())
        exported = {rel: read(rel) for rec in records for rel in rec["examples"]}
        for k in np.argsort(-atlas.level(n).count)[:4]:
            rec = records[int(k)]
            cell = atlas.cell(
                n, rec["i"], rec["j"], examples=tiles.examples, px=tiles.example_px, field=tiles.example_field
            )
            assert len(cell.patches) == len(rec["examples"])
            for patch, rel in zip(cell.patches, rec["examples"]):
                diff = {
                    other: float(np.abs(np.asarray(patch, np.float32) - pixels).mean())
                    for other, pixels in exported.items()
                }
                # the same crop up to JPEG (q90 on 48 px of a detailed photo: mean |diff| up to ~6.5) ...
                assert diff[rel] < 8, f"level {n} cell {k}: {rel} differs by {diff[rel]:.1f}"
                # ... and closer to its own exported thumbnail than to any other of the level
                assert min(diff, key=diff.get) == rel, f"level {n} cell {k}: {rel}"


def test_show_level_is_the_exported_canvas(small_atlas, tmp_path: Path) -> None:
    atlas = open_atlas(small_atlas.store.path)
    for n in atlas.levels:
        canvas = atlas.show_level(n)
        assert canvas.size == (n * 32, n * 32)
        pixels = np.asarray(canvas, np.float32)
        assert pixels.std() > 10
        canvas.save(tmp_path / f"level_{n}.png")
        # the full-resolution DZI level of the export holds the same pixels (JPEG aside)
        dzi = small_atlas.atlas_dir / "main" / f"level_{n}_files"
        top = max(int(p.name) for p in dzi.iterdir())
        tile = small_atlas.config.tiles.tile_size
        for path in (dzi / str(top)).glob("*.jpg"):
            col, row = (int(v) for v in path.stem.split("_"))
            x0, y0 = max(0, col * tile - 1), max(0, row * tile - 1)
            exported = np.asarray(Image.open(path).convert("RGB"), np.float32)
            mine = pixels[y0 : y0 + exported.shape[0], x0 : x0 + exported.shape[1]]
            assert np.abs(mine - exported).mean() < 6, f"level {n} tile {path.name}"
        level = atlas.level(n)
        flat = compose_level(level, atlas.icons(n), density_scaling=False)
        assert flat.size == canvas.size and np.asarray(flat).std() > 10


def test_plot_layout_is_a_coloured_figure(small_atlas, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    atlas = open_atlas(small_atlas.store.path)
    fig = atlas.plot_layout(level=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert "level 3" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "layout.png")
    rgb = np.asarray(Image.open(tmp_path / "layout.png").convert("RGB")).reshape(-1, 3).astype(int)
    assert (np.ptp(rgb, axis=1) > 60).sum() > 50  # coloured points, not only grey ones
    assert atlas.plot_layout(color_by="label")._repr_png_()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda a: a.level(5), ["level=5", "[3, 6]"]),
        (lambda a: a.icons(4), ["level=4", "[3, 6]"]),
        (lambda a: a.show_level(7), ["level=7"]),
        (lambda a: a.cell(6, 6, 0), ["(i=6, j=0)", "0 <= i, j < 6"]),
        (lambda a: a.cell(3, 0, 0, examples=-1), ["examples=-1"]),
        (lambda a: a.plot_layout(color_by="size"), ["color_by='size'", "top_class"]),
        (lambda a: a.activations([10**9]), ["rows"]),
        (lambda a: compose_level(a.level(3), np.zeros((2, 8, 8, 3), np.uint8)), ["icons", "cells="]),
        (lambda a: a.show_level(3, background="blurple"), ["background='blurple'"]),
    ],
)
def test_bad_requests_name_the_parameter(small_atlas, call, words) -> None:
    atlas = open_atlas(small_atlas.store.path)
    with pytest.raises(AtlasError) as err:
        call(atlas)
    _one_line_naming(err, *words)


def test_a_cell_that_is_not_kept_says_which_are(small_atlas) -> None:
    atlas = open_atlas(small_atlas.store.path)
    level = atlas.level(6)
    kept = set(zip(level.i.tolist(), level.j.tolist()))
    i, j = next((i, j) for j in range(6) for i in range(6) if (i, j) not in kept)
    with pytest.raises(AtlasError) as err:
        atlas.cell(6, i, j)
    _one_line_naming(err, f"(i={i}, j={j})", "not kept", "min_count")


def test_open_atlas_refuses_a_folder_that_is_no_store(tmp_path: Path) -> None:
    with pytest.raises(AtlasError) as err:
        open_atlas(tmp_path / "nothing.zarr")
    _one_line_naming(err, "store_path=", "data/store.zarr")


def test_class_atlases_and_comparisons_it_holds(small_atlas, tmp_path: Path, mobilenet) -> None:
    """Build one class subset and one comparison next to a copy of the store, then open them."""
    from stages.classes.atlas import classes_folder
    from stages.classes.compare import compare_folder
    from stages.classes.subset import grid_and_render, subset_config
    from stages.config import RenderOverrides
    from stages.reduce import stage as reduce
    from stages.sections import ClassesSection
    from store.subset import SubsetStore

    source = small_atlas.store.path
    for path in source.parent.glob(f"{source.stem}.*zarr"):
        shutil.copytree(path, tmp_path / path.name)
    store = AtlasStore.open(tmp_path / source.name)
    section = ClassesSection.of(small_atlas.config)
    config = subset_config(section, 3, 1, RenderOverrides(size=16, steps=2))  # any icon will do here
    per_photo = store.n_rows // 4
    made = {}
    for kind, folder, name, rows, selection in (
        (
            "class",
            classes_folder(store),
            "tabby",
            np.arange(per_photo),
            {"kind": "class", "class": {"index": 281, "name": "tabby"}},
        ),
        (
            "compare",
            compare_folder(store),
            "tabby--coffee_mug",
            np.arange(2 * per_photo),
            {"kind": "compare", "classes": [{"index": 281, "name": "tabby"}, {"index": 504, "name": "coffee mug"}]},
        ),
    ):
        subset = SubsetStore.create(store, name, rows, selection, base=folder)
        reduce.run(config.reduce, StageContext(subset))
        grid_and_render(config, subset, torch.device("cpu"), what=name, whitening="store", model=mobilenet)
        made[kind] = name

    atlas = open_atlas(store.path)
    assert list(atlas.class_atlases) == ["tabby"] and list(atlas.comparisons) == ["tabby--coffee_mug"]
    tabby, pair = atlas.class_atlases["tabby"], atlas.comparisons["tabby--coffee_mug"]
    assert (tabby.kind, tabby.title) == ("class", "tabby")
    assert (pair.kind, pair.title) == ("compare", "tabby vs coffee mug")
    for sub, rows in ((tabby, per_photo), (pair, 2 * per_photo)):
        assert sub.levels == sub.rendered_levels == [3]
        assert len(sub.layout.rows) == rows
        canvas = sub.show_level(3)
        assert canvas.size == (48, 48) and np.asarray(canvas).std() > 5
        level = sub.level(3)
        assert set(level.member_rows.tolist()) <= set(sub.layout.rows.tolist())
        cell = sub.cell(3, int(level.i[0]), int(level.j[0]), examples=2, px=32)
        assert cell.icon is not None and cell.patches
        assert sub.class_atlases == {} and "tabby" in repr(sub)
    assert "class atlases: ['tabby']" in repr(atlas)


# ===================================================================================== rendering
def test_render_directions_point_at_their_directions(small_atlas, mobilenet, tmp_path: Path) -> None:
    atlas = open_atlas(small_atlas.store.path)
    directions = atlas.level(3).direction[:3]
    icons = render_directions(mobilenet, None, directions, whitening=atlas.whitening, steps=16, size=32)
    assert icons.dtype == np.uint8 and icons.shape == (3, 32, 32, 3)
    Image.fromarray(np.concatenate(list(icons), axis=1)).save(tmp_path / "icons.png")
    v = torch.as_tensor(directions)
    with layer_forward(mobilenet.module, mobilenet.layer, normalize=mobilenet.normalize) as forward:
        cos = centre_cossim(forward, mobilenet.layer, icons, v, mobilenet.device)
        grey = centre_cossim(forward, mobilenet.layer, np.full_like(icons, 128), v, mobilenet.device)
    assert (cos > 0).all() and (cos > grey + 0.05).all(), (cos, grey)


def test_render_directions_is_seeded(mobilenet) -> None:
    v = np.ones((1, 576), np.float32)
    first, again = (render_directions(mobilenet, None, v, steps=2, size=16, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, render_directions(mobilenet, None, v, steps=2, size=16, seed=4))


def _channel_mean(model, image: np.ndarray, channel: int) -> float:
    x = torch.as_tensor(np.array(image)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad(), layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        return float(forward(x)[model.layer][0, channel].mean())


def test_feature_vis_raises_its_channel(mobilenet) -> None:
    image = feature_vis(mobilenet, "channel:7", steps=8, size=48)
    assert isinstance(image, Image.Image) and image.size == (48, 48) and image.mode == "RGB"
    grey = _channel_mean(mobilenet, np.full((48, 48, 3), 128, np.uint8), 7)
    assert _channel_mean(mobilenet, np.asarray(image), 7) > 2 * grey + 0.1
    # an Objective is rendered by the same engine and seed: the same image
    by_objective = feature_vis(mobilenet, Channel(mobilenet.layer, 7), steps=8, size=48)
    np.testing.assert_array_equal(np.asarray(by_objective), np.asarray(image))


def test_models_by_name_and_other_layers(mobilenet) -> None:
    image = feature_vis("mobilenet_v2", "neuron:3", layer="features.6.conv.0", steps=4, size=32)  # loaded by name
    assert image.size == (32, 32)
    icons = render_directions(mobilenet, "features.6.conv.0", np.ones(192, np.float32), steps=2, size=32)
    assert icons.shape == (1, 32, 32, 3)  # another layer than the loaded model's (192 channels there)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda m: render_directions(m, "features.99", np.ones((1, 576))), ["layer='features.99'", "atlas layers"]),
        (lambda m: render_directions(m, None, np.ones((2, 10))), ["directions", "[K, 576]"]),
        (lambda m: render_directions(m, None, np.ones(576), whitening=np.eye(3)), ["whitening", "[576, 576]"]),
        (lambda m: render_directions(m, None, np.ones(576), steps=0), ["steps=0"]),
        (
            lambda m: render_directions(m, None, np.ones(576), device=torch.device("meta")),
            ["device=meta", "model is on cpu"],
        ),
        (lambda m: render_directions(object(), None, np.ones(576)), ["model must be", "mobilenet_v2"]),
        (lambda m: feature_vis(m, "chanel:7"), ["target 'chanel:7'", "channel:N"]),
        (lambda m: feature_vis(m, "channel:9999"), ["channel 9999", "576"]),
        (lambda m: feature_vis(m, 42), ["target", "Objective"]),
        (lambda m: feature_vis(m, Channel("features.2.conv.0", 1), steps=1), ["features.2.conv.0"]),
        (lambda m: feature_vis(m, "channel:1", layer="classifier.9"), ["layer='classifier.9'"]),
    ],
)
def test_bad_render_inputs_name_the_parameter(mobilenet, call, words) -> None:
    with pytest.raises(AtlasError) as err:
        call(mobilenet)
    _one_line_naming(err, *words)
