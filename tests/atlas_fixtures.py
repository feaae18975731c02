"""``small_atlas``: one real, small atlas built end to end with the stage code, shared by the session.

Real MobileNetV2 weights, the four scikit-image photos of ``photo_folder``, and every stage as a
user runs it: collect (8 views x 4 positions per photo = 128 rows) -> reduce (PCA, the fastest
real reducer: no numba compile) -> grid (levels 3 and 6, whitening) -> render (32 px, 16 steps)
-> tiles (exported with dataset examples into ``atlas_dir``). About 15-25 s on one thread.

Use it from any test module (it is registered in ``tests/conftest.py``)::

    def test_something(small_atlas):
        small_atlas.store        # AtlasStore (data/store.zarr equivalent) with layout, grid, icons
        small_atlas.atlas_dir    # the export folder: index.html, atlases.js, main/level_3.dzi, ...
        small_atlas.config       # the Config every stage ran with (data.store / data.atlas point here)

The folder is shared by every test of the session: treat it as read-only (copy it before
changing anything; ``shutil.copytree(small_atlas.atlas_dir, tmp_path / "atlas")``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from stages.config import Config
from stages.context import StageContext
from stages.model.registry import LoadedModel
from stages.sections import CollectSection, RenderSection, TilesSection
from store.atlas_store import AtlasStore

LEVELS = [3, 6]


@dataclass(frozen=True)
class SmallAtlas:
    """What ``small_atlas`` built (all paths inside one session temp folder)."""

    config: Config  # data.source / data.store / data.atlas point at the folders below
    store: AtlasStore  # collected store with layout, grid (LEVELS), whitening and icons
    atlas_dir: Path  # the exported atlas (config.data.atlas)
    photos: Path  # the ImageFolder the store was collected from
    levels: list[int]  # exported levels, coarse to fine
    seconds: float  # how long building it took

    @property
    def index_html(self) -> Path:
        return self.atlas_dir / "index.html"


def small_atlas_config(root: Path, photos: Path) -> Config:
    """Tiny but complete settings: every stage does real work on real data, in seconds."""
    cfg = Config()
    cfg.data.source, cfg.data.store, cfg.data.atlas = str(photos), str(root / "store.zarr"), str(root / "atlas")
    cfg.model.layer = "features.13.conv.0"  # the ``mobilenet`` fixture's layer (tests/conftest.py)
    c = cfg.collect
    c.views_per_image, c.positions_per_image, c.rows_per_chunk, c.num_workers, c.batch_size = 8, 4, 64, 0, 16
    c.device = "cpu"
    cfg.reduce.method, cfg.reduce.n_neighbors = "pca", 10
    cfg.grid.levels, cfg.grid.min_count = LEVELS, 1
    r = cfg.render
    r.size, r.steps, r.batch_size, r.levels, r.device = 32, 16, 16, None, "cpu"
    cfg.tiles.tile_size, cfg.tiles.examples, cfg.tiles.example_px = 64, 2, 48
    return cfg


def build_small_atlas(root: Path, photos: Path, model: LoadedModel) -> SmallAtlas:
    """Run collect -> reduce -> grid -> render -> tiles on one thread."""
    from stages.collect import stage as collect
    from stages.grid import stage as grid
    from stages.reduce import stage as reduce
    from stages.render import stage as render
    from stages.tiles import stage as tiles

    t0 = time.perf_counter()
    cfg = small_atlas_config(root, photos)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu")))
        store = AtlasStore.open(cfg.data.store)
        reduce.run(cfg.reduce, StageContext(store))
        grid.run(cfg.grid, StageContext(store))
        render.run(RenderSection.of(cfg), StageContext(store, device=torch.device("cpu"), model=model))
        tiles.run(TilesSection.of(cfg), StageContext(store))
    finally:
        torch.set_num_threads(threads)
    return SmallAtlas(
        config=cfg,
        store=store,
        atlas_dir=Path(cfg.data.atlas),
        photos=photos,
        levels=LEVELS,
        seconds=time.perf_counter() - t0,
    )


@pytest.fixture(scope="session")
def small_atlas(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path, mobilenet: LoadedModel) -> SmallAtlas:
    """A real exported atlas of four photos (see the module docstring); read-only, session-wide."""
    return build_small_atlas(tmp_path_factory.mktemp("small_atlas"), photo_folder, mobilenet)
