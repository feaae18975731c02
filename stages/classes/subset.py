"""The shared tail of the class and comparison atlases: grid -> whitening -> render on a subset.

Both atlases are the main pipeline run on a :class:`store.subset.SubsetStore` with their own
settings (docs/method.md §8): one grid level (8 x 8 for a class, 10 x 10 for a comparison),
then the render stage unchanged. The only step added here is the whitening choice: the grid stage
computes ``S`` from the rows it bins, but a class subset has a few hundred rows for a 576 x 576
second moment (rank < C), whose inverse would blow up the directions the samples never span. With
``whitening: store`` (the default) the grid stage writes the whole store's matrix as the subset's
whitening instead, i.e. the same ``S`` the main atlas's icons use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from stages.config import RenderOverrides
from stages.context import StageContext
from stages.grid import stage as grid
from stages.model.registry import LoadedModel
from stages.render import stage as render
from stages.sections import ClassesSection, RenderSection
from store import derived
from store.atomic import remove_tree
from store.errors import AtlasError
from store.icons import IconStore
from store.subset import ROWS, SubsetStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubsetAtlas:
    """What grid + render made of one subset."""

    level: int
    cells: int
    rows_in_cells: int
    icons_rendered: int
    whitening: str


def subset_config(config: ClassesSection, level: int, min_count: int, overrides: RenderOverrides) -> ClassesSection:
    """``config`` with one grid level, the subset's ``min_count`` and the render overrides applied."""
    g = config.grid.model_copy(update={"levels": [level], "min_count": min_count})
    return config.model_copy(update={"grid": g, "render": overrides.apply(config.render)})


def choose_whitening(subset: SubsetStore, source: Literal["store", "subset"]) -> derived.Whitening | None:
    """The parent store's whitening when ``source`` is ``store`` and it has one; None: the subset's own."""
    if source == "subset":
        return None
    try:
        whole = derived.read_whitening(subset.parent)
    except AtlasError:
        log.warning(
            "store %s has no whitening (run `atlas grid`); %s uses its own rows' whitening",
            subset.parent.path,
            subset.name,
        )
        return None
    return derived.Whitening(
        matrix=whole.matrix,
        second_moment=whole.second_moment,
        attrs={**whole.metadata(), "source": str(subset.parent.derived_path("whitening"))},
    )


def drop_stale_icons(subset: SubsetStore, level: int) -> None:
    """Delete the subset's icons when they were rendered from another grid.

    The render stage refuses icons of another grid (store/icons.py) so that a main atlas's
    icons are never thrown away by accident; a subset's icons are a cache of this stage, and a
    changed selection or layout parameter is how one asks for new ones.
    """
    path = subset.derived_path("icons")
    if not IconStore.exists(path):
        return
    cells = {level: derived.read_level(subset, level, with_attribution=False)}
    if not derived.icons_current(IconStore.open(path).record, subset, cells):
        log.info("%s: icons were rendered from another grid; deleting them", subset.name)
        remove_tree(path)  # renamed away first: never seen half deleted


def grid_and_render(
    config: ClassesSection,
    subset: SubsetStore,
    device: torch.device,
    *,
    what: str,
    whitening: Literal["store", "subset"],
    model: LoadedModel | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> SubsetAtlas:
    """Bin the subset's layout at ``config.grid.levels[0]``, choose the whitening, render every cell.

    ``what`` names the atlas in errors (``class 'tabby'``). A grid that keeps no cell is an
    error that says which parameter to change.
    """
    whole = choose_whitening(subset, whitening)
    result = grid.run(config.grid, StageContext(subset, whitening=whole))
    level = result.levels[0]
    if result.cells[level] == 0:
        raise AtlasError(
            f"{what}: none of the {level} x {level} cells holds more than {config.grid.min_count} of its "
            f"{result.rows} rows; lower min_count or select more rows (top_k, mode)"
        )
    source = "subset" if whole is None else "store"
    drop_stale_icons(subset, level)
    ctx = StageContext(subset, device=device, model=model, progress=progress, on_start=on_start)
    summary = render.run(RenderSection(model=config.model, render=config.render), ctx)
    log.info(
        "%s: %d of %d rows in %d kept cells, %d icons rendered (whitening: %s)",
        what,
        result.rows_in_kept_cells[level],
        result.rows,
        result.cells[level],
        summary.icons_run,
        source,
    )
    return SubsetAtlas(
        level=level,
        cells=result.cells[level],
        rows_in_cells=result.rows_in_kept_cells[level],
        icons_rendered=summary.icons_run,
        whitening=source,
    )


def export_subset(
    config: ClassesSection,
    subset: SubsetStore,
    *,
    kind: str,
    slug: str,
    title: str,
    extra: dict[str, Any],
    axes: dict[str, str | None] | None = None,
) -> Path:
    """Export the subset's one level into ``<atlas>/<kind>/<slug>/`` with the tiles exporter.

    Same code and format as the main atlas (docs/export_format.md); dataset examples come from
    the subset's own rows, ``extra`` becomes this atlas's fields in ``atlases.json``.
    """
    from stages.tiles.export import export_atlas
    from stages.tiles.source import AtlasSource, store_minimap

    icons = IconStore.open(subset.derived_path("icons"))
    source = AtlasSource(
        id=f"{kind}/{slug}",
        kind=kind,
        title=title,
        levels=list(config.grid.levels),
        cell_level=lambda n: derived.read_level(subset, n, with_attribution=False),
        icon_level=icons.read_level,
        minimap=lambda k, seed: store_minimap(subset, k, seed),
        class_names=list(subset.class_names),
        model=subset.model.entry(),
        icon_px=icons.size,
        store=subset,
        axes=axes or {"x": None, "y": None},
        index=extra,
        fingerprint=icons.record.export_fingerprint("subset", subset.path),
    )
    result = export_atlas(source, Path(config.data.atlas), config.tiles)
    return Path(result.atlas_dir)


def built_subsets(folder: Path) -> list[str]:
    """Names of the subsets persisted in ``folder`` (``classes_folder`` / ``compare_folder``), sorted.

    A subset is there once :meth:`SubsetStore.create` wrote its ``<name>.rows.zarr``; whether its
    layout, grid and icons are finished is for the readers to check.
    """
    suffix = f".{ROWS}.zarr"
    if not Path(folder).is_dir():
        return []
    return sorted(p.name[: -len(suffix)] for p in Path(folder).glob(f"*{suffix}") if p.is_dir())
