"""`atlas run`: every stage in order on one machine, with a timing summary and where the atlas is.

Each stage resumes or skips work already in the store, so a killed `atlas run` is restarted by
running it again. Class atlases and comparisons run when ``classes.names`` / ``compare.pairs``
are set (the demo's params.yaml sets one of each). One process runs everything, so what numba
compiles for UMAP the first time (docs/reduce_grid.md; cached on disk afterwards) is paid once.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.commands.common import config_from_args

Command = Callable[[argparse.Namespace], int]


def stage_plan(args: argparse.Namespace) -> list[tuple[str, Command]]:
    """The stages `atlas run` executes for this configuration, in order."""
    from pipeline.commands import stages as s
    from pipeline.commands.classes import cmd_classes, cmd_compare

    config = config_from_args(args)
    plan: list[tuple[str, Command]] = [
        ("collect", s.cmd_collect),
        ("reduce", s.cmd_reduce),
        ("grid", s.cmd_grid),
        ("render", s.cmd_render),
        ("tiles", s.cmd_tiles),
    ]
    if config.classes.names:
        plan.append(("classes", cmd_classes))
    if config.compare.pairs:
        plan.append(("compare", cmd_compare))
    return plan


def summary_lines(timings: list[tuple[str, float]], atlas: Path) -> list[str]:
    """The closing summary: seconds per stage, the total, and how to open the viewer."""
    total = sum(seconds for _, seconds in timings)
    lines = ["", "stage       seconds"]
    lines += [f"{name:10s} {seconds:8.1f}" for name, seconds in timings]
    lines += [f"{'total':10s} {total:8.1f}  ({total / 60:.1f} min)", ""]
    index = (atlas / "index.html").resolve()
    lines += [
        f"atlas: {index}",
        f"  open it in a browser (file://{index}), or serve it: atlas serve {atlas} (http://127.0.0.1:8000/)",
    ]
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.commands.common import check_output_dir, param_label

    config = config_from_args(args)  # every output is checked before the first stage starts
    check_output_dir(config.data.store, param_label(args, "data.store"))
    check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    timings: list[tuple[str, float]] = []
    for name, command in stage_plan(args):
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        status = command(args)
        timings.append((name, time.perf_counter() - t0))
        if status:
            print(f"atlas run: stopped at {name} (exit {status}); fix it and rerun `atlas run` to resume")
            return status
    print("\n".join(summary_lines(timings, Path(config_from_args(args).data.atlas))))
    return 0
