"""What every stage's ``run(section, ctx)`` gets besides its parameters: where and how to run.

A stage is called the same way from the CLI, the dask cluster, the public API and other stages:
``run(section, ctx)``. ``section`` is *what* to compute (typed parameters, :mod:`stages.sections`);
``ctx`` is *where and how*: the store it reads and writes, the torch device, the shard, an
already loaded model, and the callbacks that drive a progress bar. Every field has a default, so
a caller names only what it has. A missing device falls back to the section's own ``device``
setting; a stage that reads a store it cannot open by itself asks for ``store`` in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from stages.images.sources import ImageSource
    from stages.model.registry import LoadedModel
    from store.atlas_store import AtlasStore
    from store.derived import Whitening
    from store.view import RowStore


@dataclass(frozen=True)
class StageContext:
    """Where and how a stage runs; never a tunable parameter (those live in the section).

    ``progress(n)`` is called with the units finished since the last call and ``on_start(total)``
    once with the units of this run (stages that report ``(done, total)`` go through
    :meth:`done_of_total`); ``on_atlas(name, units)`` when a stage that builds several atlases
    starts one, ``on_step(label)`` when it starts a named step (the align stage collecting a side).
    """

    store: RowStore | None = None  # the store read and written (collect and verify open data.store themselves)
    device: torch.device | None = None  # None: the section's own ``device`` setting
    shard: tuple[int, int] = (0, 1)  # run shard i of n (collect, render, tiles)
    model: LoadedModel | None = None  # a classifier already loaded on ``device`` (skips reloading)
    source: ImageSource | None = None  # collect: data.source already opened and subsampled (align: once for all sides)
    whitening: Whitening | None = None  # grid: use this whitening instead of the store's own rows'
    progress: Callable[[int], None] | None = None
    on_start: Callable[[int], None] | None = None
    on_atlas: Callable[[str, int], None] | None = None
    on_step: Callable[[str], None] | None = None

    def done_of_total(self) -> Callable[[int, int], None] | None:
        """``progress``/``on_start`` as one ``(done, total)`` callback, for stages that count that way."""
        if self.progress is None and self.on_start is None:
            return None
        state = {"total": -1, "done": 0}

        def report(done: int, total: int) -> None:
            if total != state["total"]:
                state["total"] = total
                state["done"] = 0
                if self.on_start is not None:
                    self.on_start(total)
            if self.progress is not None and done != state["done"]:
                self.progress(done - state["done"])
            state["done"] = done

        return report

    def require_store(self, stage: str) -> RowStore:
        """``store``; a stage that has no way to open one by itself needs it given."""
        if self.store is None:
            raise ValueError(f"stage {stage} needs StageContext(store=...): the store it reads and writes")
        return self.store

    def require_collect_store(self, stage: str) -> AtlasStore:
        """``store`` as the collect store itself: the stages that make or open subsets of it (class and
        comparison atlases, patches) need its own rows, not a class or comparison atlas's."""
        from store.atlas_store import AtlasStore
        from store.errors import AtlasError

        store = self.require_store(stage)
        if not isinstance(store, AtlasStore):
            raise AtlasError(
                f"stage {stage} reads the collect store (data.store), not {store.path} "
                f"({type(store).__name__}); give it the store collect wrote"
            )
        return store

    def device_for(self, setting: str) -> torch.device:
        """``device``, else the section's ``device`` setting (auto, cpu, cuda, cuda:N, mps) resolved."""
        if self.device is not None:
            return self.device
        from stages.model.device import select_device

        return select_device(setting)
