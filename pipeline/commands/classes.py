"""`atlas classes`, `compare`, `explain`, `sanity-check`, `dataset-map`: the class- and image-level commands.

Registered in :mod:`pipeline.cli`'s command table; the stages do the work
(:mod:`stages.classes.atlas`, :mod:`stages.classes.compare`, :mod:`stages.explain.stage`,
:mod:`stages.explain.sanity`, :mod:`stages.explain.dataset_map`).
"""

from __future__ import annotations

import argparse

from pipeline.commands.common import (
    MultiAtlasBar,
    ProgressBar,
    check_input_file,
    check_output_dir,
    check_output_file,
    config_from_args,
    open_store,
    param_label,
)


def _subset_atlases(args: argparse.Namespace, stage: str) -> list:
    """Run ``stages.classes.atlas`` or ``stages.classes.compare`` with one bar over all their icons."""
    from stages.classes import stage as classes
    from stages.context import StageContext
    from stages.sections import ClassesSection

    config = config_from_args(args)
    check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    section = ClassesSection.of(config, atlases="classes" if stage == "classes" else "compare")
    with MultiAtlasBar(stage, args.quiet) as bar:
        return classes.run(section, StageContext(open_store(config), progress=bar.advance, on_atlas=bar.start_atlas))


def cmd_classes(args: argparse.Namespace) -> int:
    for r in _subset_atlases(args, "classes"):
        print(
            f"class {r.index} {r.name!r}: {r.rows} rows, {r.cells} cells, {r.icons_rendered} icons rendered "
            f"in {r.seconds:.1f} s" + (f"; exported to {r.export}" if r.export else "")
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    for r in _subset_atlases(args, "compare"):
        print(
            f"compare {r.a[1]!r} vs {r.b[1]!r}: {r.rows} rows ({r.rows_a_only} / {r.rows_b_only} one-sided), "
            f"axis scale {r.scale:.3g}, {r.cells} cells, {r.icons_rendered} icons in {r.seconds:.1f} s"
            + (f"; exported to {r.export}" if r.export else "")
        )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from stages.context import StageContext
    from stages.explain import stage as explain
    from stages.sections import ExplainSection

    config = config_from_args(args)
    check_output_file(config.explain.out, param_label(args, "explain.out"), writer="pil")
    if config.explain.layers is not None and not _has_store(config):
        check_input_file(args.image, "image")
        return _explain_layers_only(args, config)
    if config.explain.page:
        check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    check_input_file(args.image, "image")
    result = explain.run(ExplainSection.of(config, image=args.image), StageContext(open_store(config)))
    print(
        f"explain: {result.out} (level {result.level}, {result.grid[0]}x{result.grid[1]} positions, "
        f"{len(result.group_labels)} NMF groups: {', '.join(result.group_labels)}) in {result.seconds:.1f} s"
    )
    if result.maps is not None:
        drawn = ", ".join(result.maps.maps) or "none"
        print(f"  methods: {drawn}" + "".join(f"; {m} skipped: {why}" for m, why in result.maps.skipped.items()))
    for name, path in result.figures.items():
        if name != "dictionary_groups":
            print(f"  {name}: {path}")
    if result.page is not None:
        print(f"  page: {result.page} (listed in the viewer's atlas picker)")
    return 0


def _has_store(config) -> bool:
    from pathlib import Path

    return Path(config.data.store).exists()


def _explain_layers_only(args: argparse.Namespace, config) -> int:
    """``atlas explain IMAGE --layers ...`` without a store: the layer figures, which need no atlas."""
    from stages.context import StageContext
    from stages.explain import stage as explain
    from stages.sections import ExplainSection

    r = explain.run_layers(ExplainSection.of(config, image=args.image), StageContext())
    print(
        f"explain --layers: {', '.join(r.layers) or 'no layers'} in {r.seconds:.1f} s (no store at "
        f"{config.data.store}: the atlas figures and the page need one, `atlas collect`)"
    )
    for name, path in r.figures.items():
        print(f"  {name}: {path}")
    return 0


def cmd_sanity_check(args: argparse.Namespace) -> int:
    from stages.explain import sanity
    from stages.model.device import select_device

    config = config_from_args(args)
    check_output_file(config.sanity.out, param_label(args, "sanity.out"))
    check_output_file(config.sanity.figure, param_label(args, "sanity.figure"), writer="matplotlib")
    for image in args.images:
        check_input_file(image, "image")
    with ProgressBar("randomized blocks", "block", args.quiet) as bar:
        result = sanity.run(config, list(args.images), select_device(config.sanity.device), progress=bar)
    for report in result.reports:
        print(sanity.format_table(report))
    print(
        f"sanity-check: {result.out}"
        + (f", figure {result.figure}" if result.figure else "")
        + f" in {result.seconds:.1f} s"
    )
    return 0


def cmd_dataset_map(args: argparse.Namespace) -> int:
    from stages.explain import dataset_map
    from stages.model.device import select_device

    config = config_from_args(args)
    check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    with ProgressBar("photos", "photo", args.quiet) as bar:
        r = dataset_map.run(config, select_device(config.dataset_map.device), progress=bar)
    print(
        f"dataset map: {r.items} items of {r.images} photos on a {r.grid}x{r.grid} grid -> {r.export} "
        f"(atlas '{dataset_map.ATLAS_ID}' in the viewer's picker) in {r.seconds:.1f} s"
        + (f"; {len(r.skipped)} unreadable photos left out" if r.skipped else "")
    )
    return 0
