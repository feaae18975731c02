"""stages/render/stage.py + store/icons.py on a tiny store whose cells are real MobileNetV2 activations.

The store holds the real activations of four scikit-image photos; the grid is written directly
(two levels, 3 + 4 cells, each direction the mean of a patch of one photo's activations), so no
reduce/grid run is needed. Renders are tiny (8 steps, 32 px) and run on one thread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from stages.config import Config
from stages.context import StageContext
from stages.featurevis import layer_forward
from stages.grid.whitening import whitening_matrix
from stages.model.registry import LoadedModel
from stages.render import stage as render
from stages.sections import RenderSection
from store import derived
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from store.icons import IconStore
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]
LEVELS = {2: 3, 3: 4}  # level -> cells


def photo_activations(model: LoadedModel) -> np.ndarray:
    """``[4, 14, 14, C]`` activations of four real photos at the model's input size."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()]
    size = model.image_size
    x = torch.stack([torch.from_numpy(np.array(Image.fromarray(p).resize((size, size)))) for p in photos])
    x = x.permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad(), layer_forward(model.module, model.layer, normalize=model.normalize) as forward:
        acts = forward(x)[model.layer].float()
    return acts.permute(0, 2, 3, 1).contiguous().numpy()


def tiny_atlas(path: Path, model: LoadedModel, scale: float = 1.0) -> AtlasStore:
    """A store of real activations with a hand-written grid (levels 2 and 3) and whitening."""
    acts = photo_activations(model)
    rows = acts[:, 1:-1, 1:-1].reshape(-1, acts.shape[-1])  # interior positions, like collect's border 1
    store = AtlasStore.create_synthetic_for_tests(path, rows.astype(np.float32), class_names=model.class_names)
    store.group.attrs["model"] = {"name": model.name, "layer": model.layer, "weights_sha256": model.weights_sha256}
    store = AtlasStore.open(path)  # metadata is parsed when a store opens
    levels = []
    for n, k in LEVELS.items():
        directions, members = [], []
        for c in range(k):
            photo, corner = c % 4, 2 + 3 * (c // 4) + n
            patch = acts[photo, corner : corner + 4, corner : corner + 4].reshape(-1, acts.shape[-1])
            directions.append(patch.mean(0) * scale)
            members.append(np.arange(16) + 16 * c)
        # cell labels: ImageNet classes near each photo (cat, astronaut, coffee, rocket)
        top = np.array(
            [
                [281, 282, 285, 287, 478],
                [834, 457, 652, 400, 655],
                [967, 968, 504, 925, 809],
                [812, 744, 657, 403, 908],
            ],
            np.int32,
        )
        levels.append(
            derived.CellLevel(
                n=n,
                i=np.arange(k, dtype=np.int32) % n,
                j=np.arange(k, dtype=np.int32) // n,
                count=np.full(k, 16, np.int64),
                direction=np.stack(directions).astype(np.float32),
                attribution=None,
                top_idx=top[np.arange(k) % 4],
                top_val=np.ones((k, 5), np.float32),
                member_offsets=np.arange(k + 1, dtype=np.int64) * 16,
                member_rows=np.concatenate(members).astype(np.int64),
                class_names=model.class_names,
                attrs={"min_count": 5},
            )
        )
    derived.write_grid(store, levels, attrs={"layout_id": "hand-made"})
    moment = rows.astype(np.float64).T @ rows / len(rows)
    derived.write_whitening(store, derived.Whitening(matrix=whitening_matrix(moment, 0.1), second_moment=moment))
    return store


def tiny_config(steps: int = 8, size: int = 32, batch_size: int = 2) -> Config:
    cfg = Config()
    cfg.model.layer = "features.13.conv.0"  # tiny_atlas's (a run without model= loads it from the config)
    cfg.render.steps, cfg.render.size, cfg.render.batch_size, cfg.render.levels = steps, size, batch_size, None
    return cfg


def _hooks(model: LoadedModel) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.module.modules())


def test_icons_written_with_objective_and_cossim(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    started, seen = [], []
    summary = render.run(
        RenderSection.of(tiny_config()),
        StageContext(store, device=torch.device("cpu"), model=mobilenet, progress=seen.append, on_start=started.append),
    )
    assert started == [7] and sum(seen) == 7 and seen == [2, 1, 2, 2]  # batches of 2 per level
    assert summary.icons_run == summary.icons_done == summary.icons_total == 7 and summary.batches_run == 4
    assert _hooks(mobilenet) == 0
    icons = IconStore.open(store.derived_path("icons"))
    assert icons.levels == [2, 3]
    for n, k in LEVELS.items():
        level = icons.read_level(n)
        assert level.icons.shape == (k, 32, 32, 3) and level.icons.dtype == np.uint8
        assert level.done.all() and icons.complete(n)
        assert all(icon.std() > 5 for icon in level.icons.astype(np.float32))  # not constant
        assert np.isfinite(level.objective).all() and ((level.cossim >= -1) & (level.cossim <= 1)).all()
        # stored cos-sim is the centre activation of the stored icon vs the raw direction
        with layer_forward(mobilenet.module, mobilenet.layer, normalize=mobilenet.normalize) as forward:
            direct = render.centre_cossim(
                forward,
                mobilenet.layer,
                level.icons,
                torch.as_tensor(derived.read_level(store, n).direction),
                torch.device("cpu"),
            )
        np.testing.assert_allclose(level.cossim, direct, atol=1e-5)
    # the icons group records what made it
    attrs = icons.group.attrs
    assert attrs["grid"]["layout_id"] == "hand-made" and attrs["model"]["layer"] == mobilenet.layer
    assert attrs["params"]["steps"] == 8 and attrs["params"]["seed"] == 0
    assert icons.group["level_2/done"].chunks == (1,) and icons.group["level_2/icons"].chunks[0] == 2


def test_rendering_improves_the_objective(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    cfg = tiny_config(steps=1)
    cfg.render.levels = [2]
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    before = IconStore.open(store.derived_path("icons")).read_level(2).objective
    cfg.render.steps = 24  # new params: the group is recreated, not refused
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    after = IconStore.open(store.derived_path("icons")).read_level(2)
    assert after.done.all() and (after.objective > before).mean() >= 2 / 3


def test_refuses_icons_of_another_grid(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    cfg = tiny_config(steps=1)
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    tiny_atlas(tmp_path / "s.zarr", mobilenet, scale=2.0)  # same shape, other directions
    with pytest.raises(AtlasError, match="another atlas.*fingerprint"):
        render.run(
            RenderSection.of(cfg),
            StageContext(AtlasStore.open(tmp_path / "s.zarr"), device=torch.device("cpu"), model=mobilenet),
        )
    cfg.render.levels = [5]
    with pytest.raises(AtlasError, match="render.levels"):
        render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))


def test_shards_and_seeds(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    whole = tiny_atlas(tmp_path / "a" / "s.zarr", mobilenet)
    render.run(RenderSection.of(tiny_config()), StageContext(whole, device=torch.device("cpu"), model=mobilenet))
    sharded = tiny_atlas(tmp_path / "b" / "s.zarr", mobilenet)
    first = render.run(
        RenderSection.of(tiny_config()),
        StageContext(sharded, device=torch.device("cpu"), shard=(0, 2), model=mobilenet),
    )
    assert first.batches_run == 2 and first.icons_done < first.icons_total
    render.run(
        RenderSection.of(tiny_config()),
        StageContext(sharded, device=torch.device("cpu"), shard=(1, 2), model=mobilenet),
    )
    for n in LEVELS:
        a = IconStore.open(whole.derived_path("icons")).read_level(n)
        b = IconStore.open(sharded.derived_path("icons")).read_level(n)
        np.testing.assert_array_equal(a.icons, b.icons)
    assert len({render.batch_seed(0, n, b) for n in (2, 3) for b in range(3)}) == 6


_CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {repo!r})
    from stages.config import ModelConfig
    from stages.model.registry import load_model
    from stages.context import StageContext
    from stages.render import stage as render
    from stages.sections import RenderSection
    from store.atlas_store import AtlasStore
    from tests.test_render import tiny_config
    torch.set_num_threads(1)
    model = load_model(ModelConfig(layer="features.13.conv.0"), torch.device("cpu"))
    store = AtlasStore.open({store!r})
    # held after each batch until the parent kills us (between batches)
    ctx = StageContext(store, device=torch.device("cpu"), model=model, progress=lambda k: time.sleep(600))
    render.run(RenderSection.of(tiny_config()), ctx)
""")


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    reference = tiny_atlas(tmp_path / "ref" / "s.zarr", mobilenet)
    render.run(RenderSection.of(tiny_config()), StageContext(reference, device=torch.device("cpu"), model=mobilenet))
    store = tiny_atlas(tmp_path / "killed" / "s.zarr", mobilenet)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(repo=str(REPO), store=str(store.path))],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    icons_path = store.derived_path("icons")
    try:
        deadline = time.monotonic() + 600  # a ceiling for the child to finish its first batch, not a speed requirement
        while time.monotonic() < deadline and child.poll() is None:
            if (icons_path / "level_2" / "done").exists() and zarr.open_group(str(icons_path))["level_2/done"][0]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"child never finished a batch (exit code {child.poll()})")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = IconStore.open(icons_path)
    assert 1 <= sum(int(killed.done(n).sum()) for n in LEVELS) < 4
    summary = render.run(
        RenderSection.of(tiny_config()),
        StageContext(AtlasStore.open(store.path), device=torch.device("cpu"), model=mobilenet),
    )
    assert summary.icons_run < 7 and summary.icons_done == 7
    for n in LEVELS:
        a = IconStore.open(reference.derived_path("icons")).read_level(n)
        b = IconStore.open(icons_path).read_level(n)
        assert b.done.all()
        np.testing.assert_array_equal(a.icons, b.icons)
        np.testing.assert_array_equal(a.objective, b.objective)


def test_param_maco_renders_phase_only_icons_and_a_new_param_rerenders(
    tmp_path: Path, mobilenet: LoadedModel, one_thread
) -> None:
    """``render.param: maco`` reaches the engine (MacoImage), is recorded, and switching it re-renders."""
    from stages.featurevis.maco import MacoImage
    from stages.featurevis.param import FourierImage

    cfg = tiny_config(steps=4)
    cfg.render.levels = [2]
    assert isinstance(render.image_param(cfg.render, 3), FourierImage)  # the default: lucid's Fourier image
    store = tiny_atlas(tmp_path / "s.zarr", mobilenet)
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    fourier = IconStore.open(store.derived_path("icons")).read_level(2).icons
    cfg.render.param = "maco"
    assert isinstance(render.image_param(cfg.render, 3), MacoImage)
    render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=mobilenet))
    icons = IconStore.open(store.derived_path("icons"))
    maco = icons.read_level(2)
    assert icons.group.attrs["params"]["param"] == "maco" and maco.done.all()
    # the magnitude is natural from the first step: MACO icons have far more contrast after 4 steps
    assert maco.icons.astype(np.float32).std() > 2 * fourier.astype(np.float32).std()
