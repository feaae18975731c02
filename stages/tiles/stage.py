"""The tiles stage: export the rendered atlas as a deep-zoom web atlas (docs/method.md §7).

Production cut every zoom level into 800 px JPEG tiles of 10 x 10 cells with a per-level JSON of
each cell's position, count and top classes, and the viewer scaled each icon by its cell's
density. The modern equivalent written here (docs/export_format.md, docs/tiles.md): per level a
standard DZI pyramid (OpenSeadragon), ``cells.json`` with each cell's bounds, density-scaled
icon bounds, count, top-5 attributed classes, fidelity and dataset examples, plus the mini-map
layout, the atlas manifest and the export's index, all with ``.js`` twins so the folder opens
from ``file://``. The viewer's static files are copied in by :mod:`stages.tiles.viewer_assets`.

The work and its atomicity/sharding live in :mod:`stages.tiles.export`; this module picks the
main atlas's levels from the store (``tiles.levels``) and hands it over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from stages.context import StageContext
from stages.sections import TilesSection
from stages.tiles.export import ExportResult, export_atlas
from stages.tiles.source import AtlasSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilesSummary:
    """What one (shard of a) tiles run did."""

    atlas: Path  # the export folder (config.data.atlas)
    index_html: Path
    result: ExportResult
    levels: list[int]  # every level of the atlas (this shard's are in result)
    seconds: float


def run(config: TilesSection, ctx: StageContext) -> TilesSummary:
    """Export the main atlas of ``ctx.store`` into ``config.data.atlas``.

    ``ctx.on_start(total)`` is called once with the tiles + example thumbnails this run writes,
    ``ctx.progress(k)`` as they are written (like :func:`stages.render.stage.run`). With ``ctx.shard``
    ``i/n`` only a slice of the levels is written; the shard that completes the set assembles the atlas.
    """
    store, shard = ctx.require_store("tiles"), ctx.shard
    t0 = time.perf_counter()
    source = AtlasSource.from_store(store, config.tiles.levels)
    out = Path(config.data.atlas)
    log.info("exporting levels %s of %s into %s (shard %d/%d)", source.levels, store.path, out, *shard)
    result = export_atlas(source, out, config.tiles, shard=shard, progress=ctx.progress, on_start=ctx.on_start)
    return TilesSummary(
        atlas=out, index_html=out / "index.html", result=result, levels=source.levels, seconds=time.perf_counter() - t0
    )
