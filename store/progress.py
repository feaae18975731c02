"""Is a sharded stage finished? Done/total units per shard, and which shard to rerun.

Collect and render split their work into units (collect: store blocks; render: icon batches) and
give shard ``i/n`` the contiguous range :func:`store.shards.shard_blocks` returns. Each unit
has a done flag written last (the store is the contract between array-job tasks), so counting the
flags per shard range says which task died or never ran: ``shard 3/8 missing 12 blocks: rerun
atlas collect --shard 3/8``. The next stage (reduce after collect) refuses an incomplete input
with that one line (:func:`require_complete`) rather than laying out a silently partial store.

The shard count is not part of the store (any ``n`` fills the same store); it comes from the
caller, else from the last collect run recorded in the store, else 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from store.errors import AtlasError
from store.shards import shard_blocks

if TYPE_CHECKING:
    from store.atlas_store import AtlasStore


@dataclass(frozen=True)
class ShardProgress:
    """Done units of one shard's range."""

    shard: int
    n_shards: int
    done: int
    total: int

    @property
    def missing(self) -> int:
        return self.total - self.done


@dataclass(frozen=True)
class StageProgress:
    """Per-shard progress of one stage over one store."""

    stage: str  # collect | render
    unit: str  # what a done flag counts: blocks | batches
    where: str  # the store or icons path
    shards: list[ShardProgress]

    @property
    def done(self) -> int:
        return sum(s.done for s in self.shards)

    @property
    def total(self) -> int:
        return sum(s.total for s in self.shards)

    @property
    def complete(self) -> bool:
        return self.done == self.total

    @property
    def incomplete_shards(self) -> list[ShardProgress]:
        return [s for s in self.shards if s.missing]

    def rerun_command(self, shard: ShardProgress) -> str:
        suffix = f" --shard {shard.shard}/{shard.n_shards}" if shard.n_shards > 1 else ""
        return f"atlas {self.stage}{suffix}"

    def message(self) -> str:
        """One line: what is done, and for the first incomplete shard what to run."""
        head = f"{self.stage} of {self.where}: {self.done}/{self.total} {self.unit} done"
        missing = self.incomplete_shards
        if not missing:
            return f"{head}, complete"
        first = missing[0]
        which = f"shard {first.shard}/{first.n_shards} " if first.n_shards > 1 else ""
        line = f"{head}; {which}missing {first.missing} {self.unit}: rerun `{self.rerun_command(first)}`"
        if len(missing) > 1:
            line += f" ({len(missing)} shards incomplete: {', '.join(str(s.shard) for s in missing)})"
        return line


def shard_progress(done: NDArray[np.bool_], n_shards: int) -> list[ShardProgress]:
    """Done/total of every shard of ``n_shards`` over the unit flags ``done`` (in unit order)."""
    flags = np.asarray(done, dtype=bool)
    out = []
    for i in range(n_shards):
        units = shard_blocks(len(flags), i, n_shards)
        out.append(ShardProgress(i, n_shards, int(flags[units.start : units.stop].sum()), len(units)))
    return out


def recorded_shards(store: AtlasStore) -> int:
    """The shard count of the store's last collect run (1 if none was recorded)."""
    last = store.attrs.get("last_run") or {}
    shard = last.get("shard") or [0, 1]
    return max(1, int(shard[1]))


def collect_progress(store: AtlasStore, n_shards: int | None = None) -> StageProgress:
    """Done store blocks per collect shard."""
    n = n_shards or recorded_shards(store)
    return StageProgress("collect", "blocks", str(store.path), shard_progress(store.done_blocks(), n))


def render_progress(store: AtlasStore, n_shards: int | None = None) -> StageProgress | None:
    """Done icon batches per render shard, in render's unit order (levels ascending, then batches);
    None when nothing was rendered yet."""
    from store.icons import IconStore

    path = store.derived_path("icons")
    if not (Path(path) / "zarr.json").exists():
        return None
    icons = IconStore.open(path)
    flags = np.concatenate([icons.done(n) for n in icons.levels]) if icons.levels else np.zeros(0, bool)
    return StageProgress("render", "batches", str(path), shard_progress(flags, n_shards or 1))


def require_complete(progress: StageProgress, needed_by: str) -> None:
    """Refuse to start ``needed_by`` on an incomplete input, with the one line that says what to rerun."""
    if not progress.complete:
        raise AtlasError(f"{needed_by} needs a complete {progress.stage}: {progress.message()}")


def require_complete_render(store: AtlasStore, needed_by: str) -> None:
    """Refuse ``needed_by`` while a started render has unfinished batches (nothing rendered: the
    stage's own check says to run render)."""
    progress = render_progress(store)
    if progress is not None:
        require_complete(progress, needed_by)
