"""`atlas align`: aligned atlases of two models or two layers (stages/align; docs/align.md).

Registered in :mod:`pipeline.cli`'s command table. The sides come from ``align.pairs`` or from two
specs on the command line, ``MODEL@LAYER`` or ``MODEL@LAYER@WEIGHTS`` (a factory path such as
``stages.model.factories:efficientnet_lite0`` is a MODEL). Prints the held-out R^2 of both linear
maps, the per-level agreement and each side's label ceiling (the share of its labelled cells whose top
attributed classes meet its members' own predictions), which are also in ``align.json`` next to the
exported pair.
"""

from __future__ import annotations

import argparse

from pipeline.commands.common import MultiAtlasBar, check_output_dir, config_from_args, param_label
from store.errors import AtlasError


def parse_spec(text: str) -> dict[str, str]:
    """``MODEL@LAYER[@WEIGHTS]`` -> the fields of one side (``stages.config.AlignModel``)."""
    parts = text.split("@", 2)
    if len(parts) < 2 or not all(parts):
        raise AtlasError(
            f"spec {text!r}: expected MODEL@LAYER or MODEL@LAYER@WEIGHTS, e.g. mobilenet_v2@features.17.conv.0"
        )
    side = {"name": parts[0], "layer": parts[1]}
    if len(parts) == 3:
        side["weights"] = parts[2]
    return side


def _fmt(value: object, pct: bool = False) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return "n/a"
    if pct:
        return f"{100 * value:.1f}%" if abs(value) < 0.1 else f"{100 * value:.0f}%"
    return f"{value:.3f}"


def cmd_align(args: argparse.Namespace) -> int:
    from stages.align import stage as align
    from stages.config import AlignPair
    from stages.context import StageContext
    from stages.model.device import select_device
    from stages.sections import AlignSection

    config = config_from_args(args)
    check_output_dir(config.align.folder, param_label(args, "align.folder"))
    check_output_dir(config.data.atlas, param_label(args, "data.atlas"))
    section = AlignSection.of(config)
    if args.specs:
        if len(args.specs) != 2:
            raise AtlasError(f"give two specs (MODEL@LAYER MODEL@LAYER), got {len(args.specs)}")
        pairs = [AlignPair.model_validate({"a": parse_spec(args.specs[0]), "b": parse_spec(args.specs[1])})]
        section = section.model_copy(update={"align": config.align.model_copy(update={"pairs": pairs})})
    with MultiAtlasBar("align", args.quiet) as bar:
        ctx = StageContext(
            device=select_device(config.collect.device),
            progress=bar.advance,
            on_atlas=bar.start_atlas,
            on_step=lambda label: print(f"== align: collect {label}", flush=True),
        )
        results = align.run(section, ctx)
    for r in results:
        m = r.maps
        print(f"align {r.name}: {r.rows} aligned rows, {r.icons_rendered} icons rendered in {r.seconds:.1f} s")
        print(
            f"  linear maps, held-out R^2 ({m['n_test']} rows of {m['test_fraction']:.0%} of the photos): "
            f"a->b {_fmt(m['a_to_b']['r2_test'])}, b->a {_fmt(m['b_to_a']['r2_test'])} "
            f"(fit rows: {_fmt(m['a_to_b']['r2_fit'])}, {_fmt(m['b_to_a']['r2_fit'])})"
        )
        chance = r.report.get("knn_chance")
        print(
            f"  level  cells a/b  matched  kNN overlap a/b (chance {_fmt(chance, True)})  same cell a/b  "
            f"top-1 agree  top-5 meet  label ceiling a/b (of cells)"
        )
        for lv in r.levels:
            print(
                f"  {lv['n']:>5}  {lv['cells_a']:>4}/{lv['cells_b']:<4}  {lv['matched']:>7}  "
                f"{_fmt(lv['knn_overlap_a'], True):>8}/{_fmt(lv['knn_overlap_b'], True):<8}"
                f"{'':19}{_fmt(lv['same_cell_a'], True):>5}/{_fmt(lv['same_cell_b'], True):<6}  "
                f"{_fmt(lv['top1_agree'], True):>11}  {_fmt(lv['top5_overlap'], True):>10}  "
                f"{_fmt(lv.get('ceiling_a'), True):>5} ({lv.get('labelled_a', 0)}) / "
                f"{_fmt(lv.get('ceiling_b'), True)} ({lv.get('labelled_b', 0)})"
            )
        for key, side in r.report.get("sides", {}).items():  # a label is never shown without its credibility
            ceiling = side.get("label_ceiling") or {}
            print(
                f"  label ceiling {key} ({side.get('label', '?')}): {_fmt(ceiling.get('fraction'), True)} of its "
                f"labelled cells ({ceiling.get('meet', 0)} of {ceiling.get('cells', 0)}) meet its own model's "
                f"predictions for their members"
            )
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r.phases.items()))
        if r.export is not None:
            print(f"  synced viewer: {r.export.resolve()} (align.json beside it)")
    return 0
