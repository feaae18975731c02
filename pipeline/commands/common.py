"""What every CLI command shares: parameters from the arguments, the store, shards, progress bars, dask.

The command modules (:mod:`pipeline.commands.stages`, ``classes``, ``tools``, ``run``) and the
parser (:mod:`pipeline.cli`) all import this module and nothing imports them back, so there is
no import circle between the parser and its commands.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipeline.params import load_config
from stages.config import Config
from store.errors import AtlasError

if TYPE_CHECKING:
    from store.atlas_store import AtlasStore


def overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then the per-field flags (``--batch-size 64`` -> ``collect.batch_size=64``)."""
    out = list(getattr(args, "set", None) or [])
    for dest, value in vars(args).items():
        if dest.startswith("param:") and value is not None:
            out.append(f"{dest[len('param:'):]}={value}")
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


def open_store(config: Config) -> "AtlasStore":
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

    def __enter__(self) -> "ProgressBar":
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
