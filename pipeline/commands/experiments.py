"""Commands of the experiments the atlas serves as an instrument for (docs/experiments.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.commands.common import (
    ProgressBar,
    check_output_dir,
    check_output_file,
    config_from_args,
    open_store,
    param_label,
)

log = logging.getLogger(__name__)


def cmd_cue_conflict(args: argparse.Namespace) -> int:
    from stages.context import StageContext
    from stages.cue_conflict import stage as cue_conflict
    from stages.sections import CueConflictSection

    config = config_from_args(args)
    cfg = config.cue_conflict
    check_output_file(cfg.out, param_label(args, "cue_conflict.out"))
    store = None
    if Path(config.data.store).exists():
        store = open_store(config)
        if cfg.page:
            check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    else:
        log.warning("no store at %s: the shape bias only, no atlas placement (pass --store)", config.data.store)
    with ProgressBar("stimuli", "image", args.quiet) as bar:
        ctx = StageContext(store, progress=bar.advance, on_start=bar.start)
        r = cue_conflict.run(CueConflictSection.of(config), ctx)
    o = r.bias.overall
    lo, hi = o.interval
    bias = "n/a" if o.bias is None else f"{100 * o.bias:.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"
    print(
        f"cue-conflict: {r.model} shape bias {bias}: shape {o.shape}, texture {o.texture}, other {o.other} of "
        f"{o.total} cue-conflict stimuli ({o.left_out} same-category left out) in {r.seconds:.1f} s"
    )
    print("  published (all 1,280 stimuli): ResNet-50 21.4%, AlexNet 25.3%, VGG-16 9.2%, humans ~96%")
    if r.atlas is not None:
        p = r.atlas["positions"]
        assert isinstance(p, dict)
        share = "n/a" if p["shape_share"] is None else f"{100 * p['shape_share']:.1f}%"
        print(
            f"  on the atlas (level {r.level}, {r.layer}): positions read as shape {p['shape']}, texture {p['texture']}, "
            f"neither {p['neither']}, dropped cell {p['off']}; shape share {share} "
            f"(95% CI {100 * p['interval95'][0]:.0f}-{100 * p['interval95'][1]:.0f}%); stimuli leaning "
            f"shape/texture/tie: {r.atlas['stimuli']}"
        )
    print(f"  report: {r.out}" + (f"; page: {r.page} (in the viewer's atlas picker)" if r.page else ""))
    return 0
