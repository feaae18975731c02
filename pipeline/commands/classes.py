"""`atlas classes`, `atlas compare`, `atlas explain`: the class-level commands of the CLI.

Registered in :mod:`pipeline.cli`'s command table; the stages do
the work (:mod:`stages.classes.atlas`, :mod:`stages.classes.compare`, :mod:`stages.explain.stage`).
"""

from __future__ import annotations

import argparse

from pipeline.commands.common import ProgressBar, config_from_args, open_store


class _PerAtlasBar(ProgressBar):
    """One bar over all icons of several subset atlases; the stages report ``on_start(name, icons)``."""

    def __init__(self, desc: str, quiet: bool) -> None:
        super().__init__(desc, "icon", quiet)
        self._total = 0

    def start_atlas(self, name: str, icons: int) -> None:
        self._total += icons
        self._bar.set_description(name)
        self._bar.total = self._total
        self._bar.refresh()


def _subset_atlases(args: argparse.Namespace, stage: str) -> list:
    """Run ``stages.classes.atlas`` or ``stages.classes.compare`` with one bar over all their icons."""
    from importlib import import_module

    from stages.model.device import select_device

    config = config_from_args(args)
    module = import_module(f"stages.{'class_atlas' if stage == 'classes' else 'class_compare'}")
    with _PerAtlasBar(stage, args.quiet) as bar:
        return module.run(config, open_store(config), select_device(config.render.device),
                          progress=bar.advance, on_start=bar.start_atlas)


def cmd_classes(args: argparse.Namespace) -> int:
    for r in _subset_atlases(args, "classes"):
        print(f"class {r.index} {r.name!r}: {r.rows} rows, {r.cells} cells, {r.icons_rendered} icons rendered "
              f"in {r.seconds:.1f} s" + (f"; exported to {r.export}" if r.export else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    for r in _subset_atlases(args, "compare"):
        print(f"compare {r.a[1]!r} vs {r.b[1]!r}: {r.rows} rows ({r.rows_a_only} / {r.rows_b_only} one-sided), "
              f"axis scale {r.scale:.3g}, {r.cells} cells, {r.icons_rendered} icons in {r.seconds:.1f} s"
              + (f"; exported to {r.export}" if r.export else ""))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from stages.model.device import select_device
    from stages.explain import stage as explain

    config = config_from_args(args)
    result = explain.run(config, args.image, open_store(config), select_device(config.render.device))
    print(f"explain: {result.out} (level {result.level}, {result.grid[0]}x{result.grid[1]} positions, "
          f"{len(result.group_labels)} NMF groups: {', '.join(result.group_labels)}) in {result.seconds:.1f} s")
    return 0
