"""`atlas collect | reduce | grid | plot-layout | render | tiles`: one command per pipeline stage.

Each reads its parameters (:func:`~pipeline.commands.common.config_from_args`), runs the stage's
``run()`` with a progress bar, and prints a one-paragraph summary; the stages do the work.
"""

from __future__ import annotations

import argparse

from pipeline.commands.common import (
    ProgressBar,
    check_output_dir,
    check_output_file,
    cluster_requested,
    config_from_args,
    open_store,
    param_label,
    parse_shard,
    run_on_cluster,
)


def cmd_collect(args: argparse.Namespace) -> int:
    from stages import collect
    from stages.context import StageContext
    from stages.sections import CollectSection

    config = config_from_args(args)
    shard = parse_shard(args.shard)
    check_output_dir(config.data.store, param_label(args, "data.store"))
    if cluster_requested(config):
        return run_on_cluster("collect", args, config)
    with ProgressBar(f"collect {shard[0]}/{shard[1]}", "img", args.quiet) as bar:
        summary = collect.run(
            CollectSection.of(config), StageContext(shard=shard, progress=bar.advance, on_start=bar.start)
        )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "none"
    counts = summary.store_counts
    print(
        f"collect: {summary.stored} inputs stored, skipped: {skipped}; {summary.seconds:.1f} s "
        f"({summary.setup_seconds:.1f} s setup), {summary.inputs_per_second:.1f} inputs/s"
    )
    print(
        f"store {summary.store}: {counts.get('stored', 0)} stored, {counts.get('skipped', 0)} skipped, "
        f"{counts.get('pending', 0)} pending of {counts.get('inputs', 0)} inputs"
        + (f"; {summary.missing_blocks} blocks still missing (other shards?)" if summary.missing_blocks else "")
    )
    return 0


def cmd_reduce(args: argparse.Namespace) -> int:
    from stages import reduce
    from stages.context import StageContext

    config = config_from_args(args)
    with ProgressBar("reduce", "row", args.quiet) as bar:
        result = reduce.run(config.reduce, StageContext(open_store(config), progress=bar.advance, on_start=bar.start))
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(
        f"reduce: {result.method} layout of {result.n_rows} rows ({result.n_fit} fitted, {result.n_placed} "
        f"placed), seed {result.seed}, deterministic {result.deterministic}; {timing}"
    )
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from stages import grid
    from stages.context import StageContext

    config = config_from_args(args)
    with ProgressBar("grid", "row", args.quiet) as bar:
        result = grid.run(config.grid, StageContext(open_store(config), progress=bar.advance, on_start=bar.start))
    cells = ", ".join(f"{n}x{n}: {result.cells[n]} cells" for n in result.levels)
    print(
        f"grid: {cells}; whitening from {result.whitening_rows} rows (ridge {result.whitening_ridge:.3g}); "
        f"{sum(result.seconds.values()):.1f} s"
    )
    return 0


def cmd_plot_layout(args: argparse.Namespace) -> int:
    from stages.grid.layout_plot import plot_layout

    config = config_from_args(args)
    check_output_file(args.out, "--out", writer="matplotlib")
    out = plot_layout(open_store(config), args.level, args.out, color_by=args.color_by)
    print(f"wrote {out}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from stages import render
    from stages.context import StageContext
    from stages.sections import RenderSection

    config = config_from_args(args)
    shard = parse_shard(args.shard)
    if cluster_requested(config):
        return run_on_cluster("render", args, config)
    with ProgressBar(f"render {shard[0]}/{shard[1]}", "icon", args.quiet) as bar:
        ctx = StageContext(open_store(config), shard=shard, progress=bar.advance, on_start=bar.start)
        summary = render.run(RenderSection.of(config), ctx)
    levels = ", ".join(f"{n}x{n}: {k}" for n, k in summary.levels.items())
    print(
        f"render: {summary.icons_run} icons in {summary.seconds:.1f} s ({summary.icons_per_second:.2f} icons/s); "
        f"{summary.icons_done}/{summary.icons_total} done over levels {levels}; icons in {summary.icons_path}"
    )
    return 0


def cmd_tiles(args: argparse.Namespace) -> int:
    from stages import tiles
    from stages.context import StageContext
    from stages.sections import TilesSection

    config = config_from_args(args)
    shard = parse_shard(args.shard)
    check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    if config.tiles.levels is None:  # "every rendered level" must not silently drop a level a shard left unfinished
        from store.progress import require_complete_render

        require_complete_render(open_store(config), needed_by="tiles")
    if cluster_requested(config):
        return run_on_cluster("tiles", args, config)
    with ProgressBar(f"tiles {shard[0]}/{shard[1]}", "file", args.quiet) as bar:
        ctx = StageContext(open_store(config), shard=shard, progress=bar.advance, on_start=bar.start)
        summary = tiles.run(TilesSection.of(config), ctx)
    r = summary.result
    levels = ", ".join(f"{n}x{n}: {k} cells" for n, k in r.cells.items()) or "none new"
    print(
        f"tiles: levels {summary.levels} ({levels}; reused {r.levels_reused or 'none'}), {r.tiles} tiles, "
        f"{r.examples} example thumbnails in {summary.seconds:.1f} s"
    )
    if r.assembled:
        print(f"atlas: {summary.index_html.resolve()} (open it, or `atlas serve` and browse to it)")
    else:
        print(f"atlas {r.atlas_dir}: waiting for the other shards; the last one to finish assembles it")
    return 0
