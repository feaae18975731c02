"""The CLI's inspection and utility commands: render-unit, fidelity, layers, demo-data,
install-weights, info, serve, status. Registered in :mod:`pipeline.cli`'s command table."""

from __future__ import annotations

import argparse

from pipeline.commands.common import check_output_dir, check_output_file, config_from_args, open_store
from store.errors import AtlasError


def cmd_render_unit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stages.model.device import select_device
    from stages.render.targets import check_target, render_unit

    config = config_from_args(args)
    check_output_file(args.out, "--out", writer="pil")
    check_target(args.target)
    r = config.render
    value = render_unit(
        config, args.target, Path(args.out), steps=r.steps, size=r.size, seed=r.seed, device=select_device(r.device)
    )
    print(f"wrote {args.out} ({args.target}, final objective {value:.4g})")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    from stages.model.device import select_device
    from stages.render import fidelity

    config = config_from_args(args)
    report = fidelity.run(config, open_store(config), select_device(config.render.device))
    q = report.cossim_quantiles
    print(f"fidelity of {report.icons} icons (levels {report.levels}):")
    print(
        "  cos-sim of the icon's centre activation with its cell direction: "
        + ", ".join(f"{k} {v:.3f}" for k, v in q.items())
    )
    print(f"  icons with cos-sim >= 0.5: {report.frac_cossim_ge_half:.1%}")
    print(
        f"  cells whose icon's top-5 predictions overlap their top-5 attributed classes: "
        f"{report.frac_overlap:.1%} (of {report.cells_with_classes} cells with attributed classes)"
    )
    if report.cossim_resized_quantiles:
        print(
            f"  (icon resized to the model input: cos-sim >= 0.5 {report.frac_cossim_resized_ge_half:.1%}, "
            f"overlap {report.frac_overlap_resized:.1%})"
        )
    if report.frac_members_overlap == report.frac_members_overlap:  # not nan
        print(
            f"  ceiling: cells whose members' most-predicted classes overlap their attributed classes: "
            f"{report.frac_members_overlap:.1%}"
        )
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from stages.model.registry import list_layers

    if args.image_size < 16:
        raise AtlasError(f"--image-size {args.image_size}: the input side must be at least 16 pixels, e.g. 224")
    for name, kind, shape in list_layers(args.model, args.image_size):
        print(f"{name:40s} {kind:24s} {'x'.join(str(s) for s in shape)}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from pipeline.demo.data import main_demo_data

    check_output_dir(args.out_dir, "out_dir")
    return main_demo_data(args.out_dir, args.deb_root)


def cmd_install_weights(_args: argparse.Namespace) -> int:
    from stages.model.weights import install_default_weights

    print(install_default_weights())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from store.atlas_store import AtlasStore

    config = config_from_args(args)
    store = AtlasStore.open(config.data.store, mode="r")
    model = store.model
    shape = list(model.layer_shape) if model.layer_shape is not None else None
    print(f"store {store.path}: model {model.name} ({model.weights}), layer {model.layer} {shape}")
    print(
        f"rows {store.n_rows}, channels {store.channels}, blocks {store.n_blocks} "
        f"({int(store.done_blocks().sum())} done)"
    )
    for key, value in store.counts().items():
        print(f"  {key}: {value}")
    _print_labels(store)
    return 0


def _print_labels(store) -> None:
    """How many images have a known model class; one warning line when labels map to none."""
    import numpy as np

    from stages.collect.stage import unmatched_labels_warning
    from stages.images.class_names import label_classes

    classes = store.image_label_classes()
    label_names = store.label_names
    dataset = store.dataset
    known = int((classes >= 0).sum())
    mapped = label_classes(label_names, store.class_names)
    print(
        f"images {classes.size}: {known} with a known model class ({100.0 * known / max(classes.size, 1):.1f}%), "
        f"{len(label_names)} labels of which {int((mapped >= 0).sum())} are model classes"
        + (f"; drawn: {dataset.selection}" if dataset.selection else "")
    )
    warning = unmatched_labels_warning(
        label_names, np.asarray(mapped), str(dataset.source if dataset.source is not None else store.path)
    )
    if warning:
        print(f"warning: {warning}")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve an exported atlas folder over HTTP until Ctrl-C (the export also opens from file://)."""
    from pipeline.serve import base_url, make_server

    if not 0 <= args.port <= 65535:
        raise AtlasError(f"--port {args.port}: a TCP port is 0..65535 (0 picks a free one)")
    if not args.host.strip():
        raise AtlasError("--host '': name the interface to bind, e.g. 127.0.0.1 (this machine only)")
    folder = args.folder or config_from_args(args).data.atlas
    server = make_server(folder, args.host, args.port)
    print(f"serving {folder} at {base_url(server)} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Done/total units per shard of collect and render; exit 1 while any is incomplete."""
    from pipeline.commands.cluster import status_lines

    if args.shards is not None and args.shards < 1:
        raise AtlasError(f"--shards {args.shards}: the array job's shard count is at least 1")
    lines, complete = status_lines(config_from_args(args), args.shards)
    print("\n".join(lines))
    return 0 if complete else 1


# ------------------------------------------------------------------------------- parser
