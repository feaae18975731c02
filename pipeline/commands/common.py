"""What every CLI command shares: parameters from the arguments, the store, shards, progress bars, dask.

The command modules (:mod:`pipeline.commands.stages`, ``classes``, ``tools``, ``run``) and the
parser (:mod:`pipeline.cli`) all import this module and nothing imports them back, so there is
no import circle between the parser and its commands.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Self

from pipeline.params import Override, load_config
from stages.config import Config
from store.errors import AtlasError

if TYPE_CHECKING:
    from store.atlas_store import AtlasStore


def overrides(args: argparse.Namespace) -> list[str | Override]:
    """``--set`` items, then the per-field flags (``--batch-size 64`` -> ``collect.batch_size=64``), each
    knowing where it came from (the flag's name goes into the error message of a bad value)."""
    out: list[str | Override] = list(getattr(args, "set", None) or [])
    flags = getattr(args, "_param_flags", None) or {}
    for dest, value in vars(args).items():
        if dest.startswith("param:") and value is not None:
            key = dest[len("param:") :]
            flag = flags.get(key, f"--{key.split('.')[-1].replace('_', '-')}")
            out.append(Override(key, str(value), origin=flag, flag=flag))
    return out


def config_from_args(args: argparse.Namespace) -> Config:
    """params.yaml (``--params``), then ``--set``, then the command's own flags, validated."""
    return load_config(args.params, overrides(args))


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8), with a one-line error for anything else."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise AtlasError(f"--shard {text!r}: expected i/n with integers, e.g. --shard 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise AtlasError(f"--shard {text!r}: need 0 <= i < n, e.g. --shard 0/4")
    return i, n


def open_store(config: Config) -> AtlasStore:
    """The collect store named by ``data.store``."""
    from store.atlas_store import AtlasStore

    return AtlasStore.open(config.data.store)


class ProgressBar:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._bar.close()


class MultiAtlasBar(ProgressBar):
    """One bar over the icons of several atlases rendered in a row (class atlases, comparisons, the
    sides of aligned pairs): the stages report ``on_start(name, icons)`` per atlas."""

    def __init__(self, desc: str, quiet: bool) -> None:
        super().__init__(desc, "icon", quiet)
        self._total = 0

    def start_atlas(self, name: str, icons: int) -> None:
        self._total += icons
        self._bar.set_description(name)
        self._bar.total = self._total
        self._bar.refresh()


def cluster_requested(config: Config) -> bool:
    """Whether ``cluster.workers``/``cluster.scheduler`` asks for dask instead of this process."""
    from pipeline.cluster import cluster_requested as requested

    return requested(config.cluster)


def run_on_cluster(stage: str, args: argparse.Namespace, config: Config) -> int:
    """collect/render/tiles as one dask task per shard (--scheduler ADDRESS or --workers N); docs/cluster.md."""
    from pipeline.commands.cluster import run_on_cluster as run_sharded_stage

    with ProgressBar(f"{stage} on dask", "shard", args.quiet) as bar:
        line = run_sharded_stage(stage, config, args.shard, on_start=bar.start, progress=bar.advance)
    print(line)
    return 0


# ------------------------------------------------------------------------------- outputs, checked before any work


def _first_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str, what: str) -> None:
    """Refuse, before any work, a folder that is to be written but cannot be: an empty name, an existing
    file, a folder under a file, a folder without write permission. Nothing is created here."""
    if not str(path).strip():
        raise AtlasError(f"{what}: empty path; name the folder to write")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise AtlasError(f"{what} {path}: is a file, not a folder; name a folder (or remove the file)")
    base = _first_existing(p)
    if not base.is_dir():
        raise AtlasError(f"{what} {path}: cannot create it, {base} is a file; name a folder elsewhere")
    if not os.access(base, os.W_OK | os.X_OK):
        raise AtlasError(f"{what} {path}: {base} is not writable; make it writable or name another folder")


def image_formats(writer: str) -> set[str]:
    """File extensions (``.png``) an image can be written with: ``"pil"`` (Image.save) or ``"matplotlib"``."""
    if writer == "pil":
        from PIL import Image

        Image.init()
        return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    from matplotlib.backend_bases import FigureCanvasBase

    return {f".{ext}" for ext in FigureCanvasBase.get_supported_filetypes()}


def check_output_file(path: str | None, what: str, writer: str | None = None) -> None:
    """Refuse, before any work, a file that is to be written but cannot be: an empty name, an existing
    folder, a folder that cannot be created or written, and for an image (``writer``: ``"pil"`` or
    ``"matplotlib"``) an extension it has no format for."""
    if path is None:
        return
    if not str(path).strip():
        raise AtlasError(f"{what}: empty path; name the file to write")
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise AtlasError(f"{what} {path}: is a folder; name a file in it, e.g. {p / 'out.png'}")
    if writer is not None:
        formats = image_formats(writer)
        if p.suffix.lower() not in formats:
            known = ", ".join(
                sorted(
                    e
                    for e in formats
                    if e in {".png", ".jpg", ".jpeg", ".webp", ".pdf", ".svg", ".tif", ".tiff", ".bmp", ".gif"}
                )
            )
            got = f"extension {p.suffix!r}" if p.suffix else "no extension"
            raise AtlasError(
                f"{what} {path}: {got} is not an image format it can write; end the name with one of "
                f"{known}, e.g. {p.with_suffix('.png')}"
            )
    if p.exists() and not os.access(p, os.W_OK):
        raise AtlasError(f"{what} {path}: the file is not writable; make it writable or name another file")
    base = _first_existing(p.parent)
    if not base.is_dir():
        raise AtlasError(f"{what} {path}: cannot create its folder, {base} is a file; name a file elsewhere")
    if not os.access(base, os.W_OK | os.X_OK):
        raise AtlasError(f"{what} {path}: {base} is not writable; make it writable or name another file")


def check_input_file(path: str, what: str) -> None:
    """Refuse, before any work, an input file that is not there (or is a folder)."""
    if not str(path).strip():
        raise AtlasError(f"{what}: empty path; name an existing file")
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"{what} {path}: not found; name an existing file")
    if not p.is_file():
        raise AtlasError(f"{what} {path}: is not a file; name an image file")


def param_label(args: argparse.Namespace, key: str) -> str:
    """How an error names the parameter ``key``: its flag and its name, e.g. ``--out (explain.out)``."""
    flag = (getattr(args, "_param_flags", None) or {}).get(key)
    return f"{flag} ({key})" if flag else key
