"""``atlas patches [A B]``: patches found on a comparison atlas, pasted on photos of A (docs/experiments.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.commands.common import (
    ProgressBar,
    check_output_dir,
    check_output_file,
    config_from_args,
    open_store,
    param_label,
)
from store.errors import AtlasError


def _pct(d: dict[str, Any] | None) -> str:
    """A rate's report entry (:meth:`stages.patches.protocol.Rate.as_dict`) as ``57% (4/7, 95% CI 25-84%)``."""
    if not d or not d["n"]:
        return "n/a"
    lo, hi = d["interval95"]
    return f"{100 * float(d['rate']):.0f}% ({d['k']}/{d['n']}, 95% CI {100 * lo:.0f}-{100 * hi:.0f}%)"


def cmd_patches(args: argparse.Namespace) -> int:
    from stages.context import StageContext
    from stages.patches import stage as patches
    from stages.patches.stage import direction_report
    from stages.sections import PatchesSection

    config = config_from_args(args)
    cfg = config.patches
    check_output_file(cfg.out, param_label(args, "patches.out"))
    if cfg.photos is not None:
        from stages.patches.photos import folder_photos

        folder_photos(cfg.photos)  # a missing or empty folder stops here, before the model loads
    if not Path(config.data.store).exists():
        raise AtlasError(
            f"--store {config.data.store}: no store there; the patches are read off its comparison atlas "
            "(run `atlas run`, or `atlas compare` on an existing store)"
        )
    if cfg.page:
        check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    store = open_store(config)
    total = 0
    with ProgressBar("patches", "image", args.quiet) as bar:

        def on_direction(_name: str, n: int) -> None:
            nonlocal total
            total += n
            bar._bar.total = total
            bar._bar.refresh()

        ctx = StageContext(store, progress=bar.advance, on_atlas=on_direction)
        r = patches.run(PatchesSection.of(config, pair=args.pair or None), ctx)
    for d in r.directions:
        rep = direction_report(d)
        o, ph, c = rep["overall"], rep["photos"], rep["controls"]
        print(
            f"patches {d.a[1]} -> {d.b[1]} ({d.atlas_id}): {ph['classified_a']} of {ph['given']} photos classified "
            f"{d.a[1]!r}; {len(ph['rank'])} rank the {len(rep['candidates'])} candidates, {len(ph['test'])} measured"
        )
        print(f"  {'patch':<22} {'dynamic':<28} {'static':<28} P(B) before -> dyn / static  works")
        for p in rep["patches"]:
            print(
                f"  {p['name']:<22} {_pct(p['dynamic']):<28} {_pct(p['static']):<28} "
                f"{p['p_b_before']:.2f} -> {p['p_b_after_dynamic']:.2f} / {p['p_b_after_static']:.2f}   "
                f"{'yes' if p['works'] else 'no'}"
            )
        for kind in ("noise", "random_cell"):
            if c[kind]:
                print(
                    f"  {('control: ' + kind):<22} {_pct(c[kind]['dynamic']):<28} {_pct(c[kind]['static']):<28} "
                    f"{o['p_b_before']:.2f} -> {c[kind]['p_b_after_dynamic']:.2f} / {c[kind]['p_b_after_static']:.2f}"
                )
        print(
            f"  overall: dynamic {_pct(o['dynamic'])}, static {_pct(o['static'])} (patch x photo pairs); "
            f"{o['works']} of {o['patches']} patches beat the noise control; figure {d.figure}"
            + (f"; page {d.page}" if d.page else "")
        )
    print(f"  published: {patches.PUBLISHED}")
    print(f"  report: {r.out} ({r.seconds:.0f} s)")
    return 0
