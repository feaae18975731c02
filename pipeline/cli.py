"""The ``atlas`` command: one sub-command per stage, every parameter overridable.

Parameters come from ``params.yaml`` (``--params``), then ``--set section.key=value``, then the
sub-command's own flags (generated from the typed config, so a new field gets a flag for free).
The sub-commands are a table (:data:`COMMANDS`): name, help, the parameter sections it takes,
its own arguments, and the function that runs it, imported only when that command runs.
User errors print one line and exit with status 2; the CLI owns the progress bars.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.environment import interpreter_problem

if __name__ == "__main__" and (_problem := interpreter_problem()):
    # `python3 -m pipeline.cli` from an interpreter without the packages (dvc repro from an
    # environment that is not activated): one line, before the imports below would fail
    print(_problem, file=sys.stderr)
    sys.exit(2)

from pydantic import BaseModel

from pipeline.params import list_hint
from pipeline.serve import DEFAULT_HOST, DEFAULT_PORT
from stages.config import Config
from store.errors import AtlasError, storage_error

log = logging.getLogger("atlas")

# flags that read better than --<section-field>
_ALIASES = {
    "data.source": "--source",
    "data.store": "--store",
    "data.atlas": "--atlas",
    "model.name": "--model",
    "model.weights": "--weights",
    "model.layer": "--layer",
    "model.image_size": "--image-size",
}


@dataclass(frozen=True)
class Arg:
    """One command-specific argument: ``add_argument(*flags, **options)``."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """One sub-command: what it is called, what it does, its parameters and its code."""

    name: str
    help: str
    run: str  # "module:function", imported when the command runs
    sections: tuple[str, ...] = ()  # params.yaml sections it reads (each gets its flags)
    args: tuple[Arg, ...] = ()
    params_file: bool = True  # --params / --set / -q


_SHARD = "process shard i of n (array jobs), e.g. 3/64"
_STAGES = "pipeline.commands.stages"
_CLASSES = "pipeline.commands.classes"
_TOOLS = "pipeline.commands.tools"

COMMANDS: tuple[Command, ...] = (
    Command(
        "collect",
        "sample activations, logits and attributions into the store",
        f"{_STAGES}:cmd_collect",
        ("data", "model", "collect", "cluster"),
        (arg("--shard", default="0/1", help=_SHARD),),
    ),
    Command(
        "reduce",
        "lay the collected activations out in 2-D (UMAP / t-SNE / PCA)",
        f"{_STAGES}:cmd_reduce",
        ("data", "reduce"),
    ),
    Command(
        "grid",
        "bin the layout into cells at every zoom level; whitening matrix",
        f"{_STAGES}:cmd_grid",
        ("data", "grid"),
    ),
    Command(
        "plot-layout",
        "PNG scatter/density of the layout with one level's grid",
        f"{_STAGES}:cmd_plot_layout",
        ("data",),
        (
            arg("--out", default="data/layout.png"),
            arg("--level", type=int, default=None, help="grid level to draw (cells per side)"),
            arg("--color-by", choices=["label", "top_class"], default="top_class"),
        ),
    ),
    Command(
        "render",
        "render every kept cell's icon by feature visualization",
        f"{_STAGES}:cmd_render",
        ("data", "model", "render", "cluster"),
        (arg("--shard", default="0/1", help="render shard i of n of the batches, e.g. 3/16"),),
    ),
    Command(
        "render-unit",
        "feature visualization of one neuron/channel/class/direction",
        f"{_TOOLS}:cmd_render_unit",
        ("model", "render"),
        (
            arg("target", help="channel:N | neuron:N[:y:x] | class:NAME_OR_INDEX | direction:PATH.npy"),
            arg("--out", default="unit.png"),
        ),
    ),
    Command(
        "fidelity",
        "feed every icon back through the model; print how faithful it is",
        f"{_TOOLS}:cmd_fidelity",
        ("data", "model", "render"),
    ),
    Command(
        "run",
        "run the whole pipeline (collect -> reduce -> grid -> ...) with params.yaml",
        "pipeline.commands.run:cmd_run",
        ("data", "model", "collect", "reduce", "grid", "render", "cluster", "tiles", "classes", "compare"),
        (arg("--shard", default="0/1", help=argparse.SUPPRESS),),
    ),
    Command(
        "tiles",
        "export the rendered levels as a deep-zoom web atlas (viewer + tiles)",
        f"{_STAGES}:cmd_tiles",
        ("data", "tiles", "cluster"),
        (arg("--shard", default="0/1", help="export shard i of n of the levels, e.g. 1/4 (docs/tiles.md)"),),
    ),
    Command(
        "classes",
        "class-filtered atlases of classes.names (select -> reduce -> grid -> render -> export)",
        f"{_CLASSES}:cmd_classes",
        ("data", "classes", "model", "reduce", "render", "tiles"),
    ),
    Command(
        "compare",
        "class-comparison atlases of compare.pairs (x: attribution a vs b, y: 1-D t-SNE)",
        f"{_CLASSES}:cmd_compare",
        ("data", "compare", "model", "reduce", "render", "tiles"),
    ),
    Command(
        "explain",
        "one image through the atlas: dictionary, NMF building blocks, attribution methods, channels",
        f"{_CLASSES}:cmd_explain",
        ("data", "explain", "model", "render"),
        (arg("image", help="an image file"),),
    ),
    Command(
        "sanity-check",
        "randomization sanity checks of the attribution methods (Adebayo et al. 2018): table + JSON",
        f"{_CLASSES}:cmd_sanity_check",
        ("model", "sanity"),
        (arg("images", nargs="+", help="image files (the figure shows the first)"),),
    ),
    Command(
        "dataset-map",
        "whole photos laid out by the model's pooled features, exported as a photo atlas",
        f"{_CLASSES}:cmd_dataset_map",
        ("data", "model", "dataset_map"),
    ),
    Command(
        "cue-conflict",
        "texture vs shape (Geirhos et al. 2019): shape bias by their recipe, and where the stimuli land on the atlas",
        "pipeline.commands.experiments:cmd_cue_conflict",
        ("data", "model", "collect", "cue_conflict"),
    ),
    Command(
        "patches",
        "patches read off a comparison atlas, pasted on photos of A to flip the model to B "
        "(Carter et al. 2019): dynamic/static success, P(B), noise control",
        "pipeline.commands.patches:cmd_patches",
        ("data", "model", "patches"),
        (
            arg(
                "pair",
                nargs="*",
                metavar="A B",
                help="photos of class A, patches toward class B (default: both directions of every compare.pairs)",
            ),
        ),
    ),
    Command(
        "align",
        "aligned atlases of two models or two layers (same image locations, linear maps, one layout)",
        "pipeline.commands.align:cmd_align",
        ("data", "align", "reduce", "render", "tiles"),
        (
            arg(
                "specs",
                nargs="*",
                metavar="MODEL@LAYER[@WEIGHTS]",
                help="the two sides of one aligned atlas (default: every pair of align.pairs)",
            ),
        ),
    ),
    Command(
        "layers",
        "list a model's layer names and output shapes",
        f"{_TOOLS}:cmd_layers",
        (),
        (
            arg("model", help="torchvision model name (mobilenet_v2, vit_b_16, ...) or package.module:factory"),
            arg("--image-size", type=int, default=224),
        ),
        params_file=False,
    ),
    Command(
        "demo-data",
        "assemble the offline real-photo demo set (ImageFolder)",
        f"{_TOOLS}:cmd_demo_data",
        (),
        (
            arg("out_dir"),
            arg("--deb-root", default="data/debs/root", help="where scripts/fetch_demo_packages.sh unpacked"),
        ),
        params_file=False,
    ),
    Command(
        "install-weights",
        "put the embedded MobileNetV2 weights into torchvision's cache",
        f"{_TOOLS}:cmd_install_weights",
        params_file=False,
    ),
    Command(
        "status",
        "done/total units per shard of collect and render; which shard to rerun",
        f"{_TOOLS}:cmd_status",
        ("data",),
        (
            arg(
                "--shards",
                type=int,
                default=None,
                help="shard count of the array job (default: collect's last recorded run; render: 1)",
            ),
        ),
    ),
    Command("info", "summarise a store", f"{_TOOLS}:cmd_info", ("data",)),
    Command(
        "verify",
        "check every chunk, group and exported file; report corrupt/missing/stale pieces (exit 1)",
        "pipeline.commands.verify:cmd_verify",
        ("data",),
        (
            arg(
                "--repair",
                action="store_true",
                help="mark the damaged collect blocks / render batches / groups for redo by the ordinary commands",
            ),
        ),
    ),
    Command(
        "migrate",
        "rewrite a store of an older schema version (and its groups) with chunk checksums",
        "pipeline.commands.verify:cmd_migrate",
        ("data",),
    ),
    Command(
        "serve",
        "serve an exported atlas folder (viewer) over HTTP on 127.0.0.1",
        f"{_TOOLS}:cmd_serve",
        (),
        (
            arg("folder", nargs="?", default=None, help="the export folder (default: data.atlas from params.yaml)"),
            arg(
                "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)"
            ),
            arg("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST}, this machine only)"),
            arg("--params", default="params.yaml", help="parameters file (for the default folder)"),
        ),
        params_file=False,
    ),
)


def _add_section_flags(parser: argparse.ArgumentParser, section: str) -> None:
    model: type[BaseModel] = Config.model_fields[section].annotation  # type: ignore[assignment]
    group = parser.add_argument_group(f"{section} parameters (params.yaml: {section}.*)")
    for name, info in model.model_fields.items():
        key = f"{section}.{name}"
        flag = _ALIASES.get(key, f"--{name.replace('_', '-')}")
        if flag in parser._option_string_actions:  # e.g. seed in collect and reduce: --reduce-seed
            flag = f"--{section}-{name.replace('_', '-')}"
        hint = list_hint(key)
        group.add_argument(
            flag,
            dest=f"param:{key}",
            metavar="A,B" if hint else "VALUE",
            default=None,
            help=f"{info.description or ''} [built-in default {info.default!r}; "
            f"params.yaml overrides it{'; ' + hint if hint else ''}]".strip(),
        )
        flags = parser.get_default("_param_flags") or {}
        parser.set_defaults(_param_flags={**flags, key: flag})  # names the flag in errors about its value


def _add_command(sub: Any, command: Command) -> None:
    parser = sub.add_parser(command.name, help=command.help)
    for a in command.args:
        parser.add_argument(*a.flags, **a.options)
    if command.params_file:
        parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
        parser.add_argument(
            "--set",
            action="append",
            metavar="SECTION.KEY=VALUE",
            help="override any parameter, e.g. --set collect.batch_size=64 (repeatable)",
        )
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    else:
        parser.set_defaults(set=None)
    for section in command.sections:
        _add_section_flags(parser, section)
    parser.set_defaults(_command=command)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``atlas <command>: error: ...``, exit 2) instead of the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlas", description="Activation atlases of torchvision classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        _add_command(sub, command)
    return parser


def command_function(command: Command) -> Callable[[argparse.Namespace], int]:
    """Import the function that runs ``command`` (commands load their stage code only when run)."""
    module, name = command.run.split(":")
    return getattr(importlib.import_module(module), name)


def _user_errors() -> tuple[type[Exception], ...]:
    """The one-line user errors: AtlasError, and FeatureVisError once the feature-visualization
    engine is loaded. Not imported up front: importing it imports torch, seconds that the commands
    without a model (reduce, grid, tiles, ...) need not pay in every process."""
    featurevis = sys.modules.get("stages.featurevis.errors")
    return (AtlasError,) if featurevis is None else (AtlasError, featurevis.FeatureVisError)


def _exit_code(exc: Exception) -> int:
    """A user error's exit status: AtlasError and FeatureVisError both carry ``exit_code`` (2); the
    engine's class is found at run time (see ``_user_errors``), so the type is read from the instance."""
    code = getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # torch's own internals trigger this on import; it is not about this program's code
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    try:
        return command_function(args._command)(args)
    except _user_errors() as exc:
        print(f"atlas {args.command}: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except OSError as exc:  # a write the filesystem refused outside store/ (full, read-only): one line
        error = storage_error(exc, exc.filename or "a file")
        if not isinstance(error, AtlasError):
            raise
        print(f"atlas {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"atlas {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
