"""Run pipeline stages in forked processes, SIGKILL them at random moments, let the last run finish.

Used by ``tests/test_crash_safety.py`` (real processes, real files, real SIGKILL)::

    python -m tests.crash_driver SPEC.json      # prints one JSON result line per job

SPEC is a list of jobs ``{"stage", "reference", "work", "concurrent", "seed", "kills"}``, each
config a ``Config`` dump (``data.store`` / ``data.atlas`` point at a private copy). Per job:

1. the stage runs uninterrupted on ``reference`` (in a forked child), which also counts its write
   events (E) and times it (T);
2. on ``work`` it runs up to ``kills`` times, each SIGKILLed at a moment chosen *on the run being
   killed*, never by the clock of another run (a busy machine makes runs slower or faster than the
   reference): then once more to completion. After every kill a forked checker reads the stage's
   outputs the way the next stage would and compares what it accepts with the reference: a
   half-written output that a reader takes as complete fails here;
3. on ``concurrent`` two processes run the stage at the same time on the same output.

Write events: in a run to be killed, every ``os.replace`` / ``os.rename`` (how the store writes a
chunk into place, and how every output folder and exported file is published) reports to the
driver just before and just after it happens, through a pipe, and waits for the driver's go. The
first kill lands exactly at event m, m drawn from the first half of the reference's E (the run
is held at that point, so it is killed mid-write however slow or fast the machine is); the
others at a random event of the whole run plus a random delay of up to two mean event gaps (so
they land anywhere between writes too; such a run may finish first, which ends nothing: the next
killed run must then not damage the complete output).

The digests of the outputs are compared by the test, not here. The driver imports the stages
once and forks for every run (so each run starts in milliseconds); it never touches zarr itself,
so the children start with no zarr event loop or thread pool inherited half-way.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.context import StageContext
from stages.sections import ClassesSection, RenderSection, TilesSection


def run_stage(stage: str, config: Any, model: Any) -> None:
    from stages.classes import atlas as classes
    from stages.classes import compare
    from stages.grid import stage as grid
    from stages.reduce import stage as reduce
    from stages.render import stage as render
    from stages.tiles import stage as tiles
    from store.atlas_store import AtlasStore

    cpu = torch.device("cpu")
    store = AtlasStore.open(config.data.store)
    runs: dict[str, Callable[[], Any]] = {
        "reduce": lambda: reduce.run(config.reduce, StageContext(store)),
        "grid": lambda: grid.run(config.grid, StageContext(store)),
        "render": lambda: render.run(RenderSection.of(config), StageContext(store, device=cpu, model=model)),
        "tiles": lambda: tiles.run(TilesSection.of(config), StageContext(store)),
        "classes": lambda: classes.run(ClassesSection.of(config), StageContext(store, device=cpu, model=model)),
        "compare": lambda: compare.run(
            ClassesSection.of(config, atlases="compare"), StageContext(store, device=cpu, model=model)
        ),
    }
    runs[stage]()


# --------------------------------------------------------------------------------- what readers accept
def _same_files(folder: Path, ref: Path, skip: tuple[str, ...] = ("checksums.json", "done.json")) -> str | None:
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name not in skip)
    ref_names = sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file() and p.name not in skip)
    if names != ref_names:
        return f"{folder}: files {sorted(set(names) ^ set(ref_names))[:5]} differ from the uninterrupted run"
    for name in names:
        if (folder / name).read_bytes() != (ref / name).read_bytes():
            return f"{folder / name}: bytes differ from the uninterrupted run"
    return None


def _accepted_groups(store: Any, ref: Any) -> str | None:
    """Whatever the readers accept of ``store``'s layout, grid, whitening and icons equals the reference's."""
    from store import derived
    from store.errors import AtlasError
    from store.icons import IconStore

    def same(what: str, read: Callable[[Any], Any]) -> str | None:
        try:
            got = read(store)
        except AtlasError:
            return None  # refused: the next stage says what to run
        want = read(ref)
        for a, b in zip(got, want):
            if not np.array_equal(a, b, equal_nan=True):
                return f"{what} of {store.path} was accepted but differs from the uninterrupted run"
        return None

    checks = [
        ("layout", lambda s: [(x := derived.read_layout(s)).rows, x.layout, x.embedding, x.fitted]),
        ("whitening", lambda s: [derived.read_whitening(s).matrix]),
    ]
    try:
        levels = derived.grid_levels(ref)
    except AtlasError:
        levels = []
    for n in levels:
        checks.append(
            (
                f"grid level {n}",
                lambda s, n=n: [(lv := derived.read_level(s, n)).i, lv.j, lv.count, lv.direction, lv.member_rows],
            )
        )
    for what, read in checks:
        problem = same(what, read)
        if problem:
            return problem
    path = store.derived_path("icons")
    if IconStore.exists(path):
        try:
            icons = IconStore.open(path)
        except AtlasError:
            return None
        ref_icons = IconStore.open(ref.derived_path("icons"))
        for n in icons.levels:
            done, level, want = icons.done(n), icons.read_level(n), ref_icons.read_level(n)
            for b in np.flatnonzero(done):
                rows = icons.batch_range(n, int(b))
                if not np.array_equal(level.icons[rows.start : rows.stop], want.icons[rows.start : rows.stop]):
                    return f"icons level {n} batch {b} of {path} marked done but differ from the uninterrupted run"
    return None


def _accepted_export(atlas: Path, ref_atlas: Path) -> str | None:
    """Every atlas folder in place, and every staged level marked done, equals the reference's."""
    if not ref_atlas.is_dir():
        return None
    for ref_manifest in ref_atlas.rglob("manifest.json"):
        rel = ref_manifest.parent.relative_to(ref_atlas)
        folder = atlas / rel
        if (folder / "manifest.json").exists():
            problem = _same_files(folder, ref_manifest.parent)
            if problem:
                return problem
    for done in atlas.glob(".*.staging/level_*/done.json"):
        slug = done.parent.parent.name[1 : -len(".staging")].replace("__", "/")
        n = done.parent.name
        ref = ref_atlas / slug
        for name in (f"{n}.dzi", f"{n}_files", n):
            a, b = done.parent / name, ref / name
            problem = (
                _same_files(a, b) if b.is_dir() else (None if a.read_bytes() == b.read_bytes() else f"{a} differs")
            )
            if problem:
                return f"staged level marked done: {problem}"
    return None


def check(stage: str, config: Any, reference: Any) -> str | None:
    """What the next stage would accept of ``config``'s outputs equals the reference (None) or why not."""
    from store.atlas_store import AtlasStore
    from store.errors import AtlasError
    from store.subset import SubsetStore

    store, ref = AtlasStore.open(config.data.store), AtlasStore.open(reference.data.store)
    problem = _accepted_groups(store, ref) or _accepted_export(Path(config.data.atlas), Path(reference.data.atlas))
    if problem or stage not in ("classes", "compare"):
        return problem
    folder = f"{store.path.stem}.{stage}"
    for rows in sorted((ref.path.parent / folder).glob("*.rows.zarr")):
        name = rows.name[: -len(".rows.zarr")]
        try:
            sub = SubsetStore.open(store, name, base=store.path.parent / folder)
        except AtlasError:
            continue
        problem = _accepted_groups(sub, SubsetStore.open(ref, name, base=ref.path.parent / folder))
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------------- processes
def fork(target: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = target()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _report_writes(events: int, acks: int) -> None:
    """In a child: every rename/replace reports before and after itself and waits for the driver's go."""
    lock = threading.Lock()  # zarr writes chunks from several threads: one event at a time
    real_replace, real_rename = os.replace, os.rename

    def gate() -> None:
        with lock:
            os.write(events, b".")
            if os.read(acks, 1) != b"g":  # the driver is gone: stop rather than run on unwatched
                os._exit(97)

    def watched(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            gate()
            try:
                return real(*args, **kwargs)
            finally:
                gate()

        return call

    os.replace, os.rename = watched(real_replace), watched(real_rename)  # type: ignore[assignment]


def watched_run(target: Callable[[], int], kill_at: int | None = None, delay: float = 0.0) -> dict[str, Any]:
    """Run ``target`` in a child that reports its write events; SIGKILL it at event ``kill_at``
    (held there when ``delay`` is 0, else ``delay`` seconds later), or let it finish (None)."""
    events_r, events_w = os.pipe()
    acks_r, acks_w = os.pipe()

    def child() -> int:
        os.close(events_r)
        os.close(acks_w)
        _report_writes(events_w, acks_r)
        return target()

    pid = fork(child)
    os.close(events_w)
    os.close(acks_r)
    count, killed, deadline = 0, False, None
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([events_r], [], [], timeout)[0]:  # the delay after event kill_at is over
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            if not os.read(events_r, 1):  # the child finished (its end of the pipe closed)
                break
            count += 1
            if count == kill_at and delay <= 0:  # held at this event: killed exactly here
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            if count == kill_at:
                deadline = time.monotonic() + delay
            try:
                os.write(acks_w, b"g")
            except BrokenPipeError:
                break
    finally:
        os.close(events_r)
        os.close(acks_w)
    return {"events": count, "killed": killed, "exit": wait(pid)}


def job(spec: dict[str, Any], model: Any) -> dict[str, Any]:
    from stages.config import Config

    stage = spec["stage"]
    reference, work = Config.model_validate(spec["reference"]), Config.model_validate(spec["work"])
    rng = random.Random(spec.get("seed", 0))

    def run(config: Any) -> Callable[[], int]:
        return lambda: (run_stage(stage, config, model), 0)[1]

    t0 = time.monotonic()
    ref = watched_run(run(reference))
    seconds = time.monotonic() - t0
    events = ref["events"]
    out: dict[str, Any] = {
        "stage": stage,
        "reference_exit": ref["exit"],
        "reference_seconds": round(seconds, 2),
        "reference_events": events,
        "kills": [],
        "checks": [],
    }
    for k in range(spec.get("kills", 3)):
        # the first kill held at an event of the first half of the run (it must land); the others
        # at any event plus a random delay; a run that finishes first leaves a complete output,
        # which the next killed run must then not damage
        if k == 0:
            kill_at, delay = rng.randint(1, max(1, events // 2)), 0.0
        else:
            kill_at, delay = rng.randint(1, max(1, events)), rng.uniform(0.0, 2.0) * seconds / max(1, events)
        result = watched_run(run(work), kill_at, delay)
        out["kills"].append({"at_event": kill_at, "delay": round(delay, 4), **result})
        if not result["killed"]:
            continue

        def checker() -> int:
            problem = check(stage, work, reference)
            if problem:
                print("PROBLEM " + json.dumps({"stage": stage, "problem": problem}), flush=True)
            return 0 if problem is None else 3

        out["checks"].append(wait(fork(checker)))
    out["final_exit"] = wait(fork(run(work)))
    if spec.get("concurrent"):
        both = Config.model_validate(spec["concurrent"])
        pids = [fork(run(both)), fork(run(both))]
        out["concurrent_exits"] = [wait(p) for p in pids]
    return out


def main() -> None:
    from stages.config import ModelConfig
    from stages.model.registry import load_model

    torch.set_num_threads(1)
    specs = json.loads(Path(sys.argv[1]).read_text())
    model = load_model(ModelConfig(layer="features.13.conv.0"), torch.device("cpu"))  # the small atlas's
    # what the stages import lazily, imported once here so every forked run starts warm
    import dask.array  # noqa: F401
    import faiss  # noqa: F401
    import PIL.Image  # noqa: F401
    import sklearn.decomposition
    import sklearn.manifold  # noqa: F401

    from stages.classes import atlas, compare  # noqa: F401
    from stages.tiles import stage  # noqa: F401

    for spec in specs:
        print("RESULT " + json.dumps(job(spec, model)), flush=True)


if __name__ == "__main__":
    main()
