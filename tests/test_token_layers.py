"""Token layers ([B, N, C] transformer outputs) sampled, attributed, rendered and tiled like conv layers.

Mechanics only: torchvision's ``vit_b_16`` architecture (no weights needed to list its layers) and a
small **random-init** ``VisionTransformer`` (tests/vit_factory.py, seed 0: not a trained model, and
nothing here is a result). A real ViT atlas needs the user's weights file (README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stages.config import Config, ModelConfig
from stages.context import StageContext
from stages.featurevis import layer_forward
from stages.featurevis.tokens import leading_tokens, spatial, token_layout, tokens_from_grid
from stages.model.registry import list_layers, load_model
from stages.sections import CollectSection, RenderSection, TilesSection
from store import derived
from tests.vit_factory import FACTORY, GRID, IMAGE_SIZE, LAYER, WIDTH


@pytest.fixture(scope="module")
def random_vit():
    """The random-init ViT cut at a token layer (a test fixture, not a model of anything)."""
    return load_model(
        ModelConfig(name=FACTORY, weights="random-init", layer=LAYER, image_size=IMAGE_SIZE), torch.device("cpu")
    )


def test_token_layout_and_the_patch_grid_view() -> None:
    assert token_layout(197) == (1, 14)  # vit_b_16: class token + 14 x 14 patches
    assert token_layout(196) == (0, 14)  # no class token
    assert token_layout(50) == (1, 7)
    assert token_layout(24) is None  # 16 + 8 leftover tokens: not a grid with a few leading tokens
    t = torch.randn(2, 50, 3)
    grid = spatial(t)
    assert grid.shape == (2, 3, 7, 7)
    for b, y, x in [(0, 0, 0), (1, 3, 5), (0, 6, 6)]:
        assert torch.equal(grid[b, :, y, x], t[b, 1 + y * 7 + x])  # row-major patches after the class token
    assert torch.equal(tokens_from_grid(grid, leading_tokens(t)), t)
    grid[1, :, 2, 4] = 7.0  # a view: writing the grid writes the tokens
    assert torch.all(t[1, 1 + 2 * 7 + 4] == 7.0)
    assert spatial(torch.zeros(2, 1000)).shape == (2, 1000)  # logits pass through


def test_vit_b_16_encoder_layers_are_token_layers() -> None:
    shapes = {name: shape for name, _, shape in list_layers("vit_b_16")}
    assert shapes["encoder.layers.encoder_layer_5"] == (197, 768) and token_layout(197) == (1, 14)
    assert shapes["conv_proj"] == (768, 14, 14)


def test_random_init_vit_trunk_head_and_jvp_attribution_against_autograd(random_vit) -> None:
    """The grid the trunk returns is the layer's patch tokens at mapped positions; head(trunk) is the
    model; the one-JVP attribution h . d logit_k / d h at a token equals autograd through the whole model."""
    from stages.collect.attribution import logits_and_attribution

    m = random_vit
    assert m.layer_shape == (WIDTH, GRID, GRID) and m.tokens == 1 and m.fixed_size
    assert m.identity()["tokens"] == {"leading": 1, "grid": [GRID, GRID]}
    torch.manual_seed(1)
    x = m.normalize(torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE))
    captured = {}
    layer = dict(m.module.named_modules())[LAYER]
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.setdefault("tokens", out))
    try:
        logits = m.module(x)
    finally:
        handle.remove()
    tokens = captured["tokens"]
    yx = torch.tensor([[0, 0], [3, 4], [6, 2]])
    token = 1 + yx[:, 0] * GRID + yx[:, 1]
    with torch.no_grad():
        grid, *cuts = m.trunk(x)
        for b in range(3):
            assert torch.allclose(grid[b, :, yx[b, 0], yx[b, 1]], tokens[b, token[b]], atol=1e-5)
        assert torch.allclose(m.head(grid, *cuts), logits, atol=1e-4)
        jvp_logits, attribution = logits_and_attribution(m.head, grid, tuple(cuts), yx)
    assert torch.allclose(jvp_logits, logits, atol=1e-4)
    rows = torch.arange(3)
    for k in (0, 17, 512):
        (grad,) = torch.autograd.grad(logits[:, k].sum(), tokens, retain_graph=True)
        want = (tokens[rows, token] * grad[rows, token]).sum(dim=1)
        assert torch.allclose(attribution[:, k], want, rtol=1e-3, atol=1e-6), (attribution[:, k], want)
    assert attribution.abs().max() > 1e-3  # a real signal, not two zeros agreeing


def _vit_config(root: Path, photos: Path, store: str) -> Config:
    cfg = Config()
    cfg.data.source, cfg.data.store, cfg.data.atlas = str(photos), str(root / store), str(root / "atlas")
    cfg.model.name, cfg.model.weights, cfg.model.layer, cfg.model.image_size = FACTORY, "random-init", LAYER, IMAGE_SIZE
    c = cfg.collect
    c.views_per_image, c.positions_per_image, c.rows_per_chunk, c.num_workers, c.batch_size, c.device = (
        3,
        2,
        4,
        0,
        4,
        "cpu",
    )
    return cfg


def _collect_whole_and_in_two_shards(tmp_path: Path, photo_folder: Path) -> tuple[Config, Any]:
    """The ViT collected in one run and in two shards (then rerun as a no-op): the same rows."""
    from stages.collect import stage as collect
    from store.atlas_store import AtlasStore

    whole_cfg = _vit_config(tmp_path, photo_folder, "whole.zarr")
    collect.run(CollectSection.of(whole_cfg), StageContext(device=torch.device("cpu")))
    sharded = _vit_config(tmp_path, photo_folder, "sharded.zarr")
    first = collect.run(CollectSection.of(sharded), StageContext(device=torch.device("cpu"), shard=(0, 2)))
    assert first.missing_blocks > 0
    collect.run(CollectSection.of(sharded), StageContext(device=torch.device("cpu"), shard=(1, 2)))
    again = collect.run(CollectSection.of(sharded), StageContext(device=torch.device("cpu")))
    assert again.blocks_run == 0 and again.missing_blocks == 0
    whole, parts = AtlasStore.open(whole_cfg.data.store), AtlasStore.open(sharded.data.store)
    assert whole.channels == WIDTH and whole.attrs["model"]["tokens"] == {"leading": 1, "grid": [GRID, GRID]}
    for name in ("activations", "yx", "attr_idx", "attr_val", "top_pred_idx"):
        assert np.array_equal(whole.row_values(name), parts.row_values(name)), name
    return whole_cfg, whole


def _check_rows_are_the_patch_tokens(whole: Any, m: Any) -> None:
    """View 0 is the whole photo: its stored rows are the patch tokens at the stored (interior) positions."""
    from PIL import Image

    from stages.images.crops import render_view

    yx = whole.row_values("yx")
    assert yx.min() >= 1 and yx.max() <= GRID - 2  # interior patches (collect.border 1)
    paths = whole.image_paths()
    image = Image.open(paths[0]).convert("RGB")
    view = np.asarray(render_view(image, (0, 0, *image.size), IMAGE_SIZE), np.float32) / 255.0
    with torch.no_grad():
        tokens = spatial(dict_forward(m, torch.from_numpy(view).permute(2, 0, 1)[None]))
    acts = whole.row_values("activations")
    for r in range(whole.positions_per_image):  # rows 0..P-1: image 0, view 0
        y, x = yx[r]
        assert np.allclose(acts[r].astype(np.float32), tokens[0, :, y, x].numpy(), atol=2e-2)


def test_random_init_vit_collect_positions_shards_resume_render_and_tiles(
    tmp_path: Path, photo_folder: Path, random_vit
) -> None:
    """Token layer through the stages: positions on the patch grid, stored rows = the patch tokens, two
    shards = one run, a rerun resumes as a no-op; reduce, grid, render (the objective reads tokens) and tiles."""
    from stages.grid import stage as grid
    from stages.reduce import stage as reduce
    from stages.render import stage as render
    from stages.tiles import stage as tiles
    from store.icons import IconStore

    cfg, whole = _collect_whole_and_in_two_shards(tmp_path, photo_folder)
    m = random_vit
    _check_rows_are_the_patch_tokens(whole, m)

    cfg.reduce.method, cfg.reduce.n_neighbors = "pca", 5
    cfg.grid.levels, cfg.grid.min_count = [2], 0
    cfg.render.size, cfg.render.steps, cfg.render.batch_size, cfg.render.levels, cfg.render.device = (
        24,
        12,
        8,
        None,
        "cpu",
    )
    cfg.tiles.tile_size, cfg.tiles.examples = 64, 1
    reduce.run(cfg.reduce, StageContext(whole))
    grid.run(cfg.grid, StageContext(whole))
    summary = render.run(RenderSection.of(cfg), StageContext(whole, device=torch.device("cpu"), model=m))
    icons = IconStore.open(whole.derived_path("icons")).read_level(2)
    assert summary.icons_run == len(icons.icons) > 0
    assert icons.icons.std() > 5 and np.isfinite(icons.cossim).all()
    # the objective read the tokens: the icons match their cells' directions better than noise does
    noise = torch.rand(len(icons.icons), 3, 24, 24, generator=torch.Generator().manual_seed(0))
    directions = torch.as_tensor(derived.read_level(whole, 2).direction)

    with layer_forward(m.module, LAYER, normalize=m.normalize) as forward:
        noise_cos = render.centre_cossim(
            forward, LAYER, (noise.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), directions, torch.device("cpu")
        )
    assert icons.cossim.mean() > noise_cos.mean() + 0.05, (icons.cossim, noise_cos)
    result = tiles.run(TilesSection.of(cfg), StageContext(whole))
    assert (result.atlas / "main" / "level_2" / "cells.json").is_file()


def dict_forward(m, images01: torch.Tensor) -> torch.Tensor:
    """The layer's token output for images in [0, 1] (a hook on the module, removed after)."""
    captured = {}
    layer = dict(m.module.named_modules())[LAYER]
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.setdefault("tokens", out))
    try:
        m.module(m.normalize(images01))
    finally:
        handle.remove()
    return captured["tokens"]
