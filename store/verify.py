"""Check a store and every zarr group derived from it, chunk by chunk; mark what is damaged for redo.

What is checked (``atlas verify``; the export folder is checked by :mod:`stages.verify`):

- **metadata**: every ``zarr.json`` parses;
- **chunks**: every chunk that must be on disk is there and passes its CRC-32C (read raw, not
  decompressed: store/zarrio.py). "Must be on disk": in the collect store, the chunks of every
  block marked done (and the image table once written); in an icons group, the chunks of every
  batch marked done; in the layout, grid, whitening and subset-rows groups, every chunk;
- **unfinished**: a group not marked ``complete`` (a run that stopped; its stage redoes it);
- **stale**: a group made from other inputs than its parent holds now: a layout whose
  ``rows_token`` is not the store's :meth:`~store.atlas_store.AtlasStore.content_token`, a grid or
  whitening of another ``layout_id``, icons of another grid (``layout_id`` or the fingerprint of the
  cell directions);
- **leftovers**: hidden folders and ``.partial`` chunk files killed runs left (reported, not
  counted as damage).

``repair`` (:mod:`store.repair`) only ever marks things for redo, so that the ordinary commands (or their ``--shard``)
rewrite exactly the damaged units: collect blocks and icon batches are marked not done, the
image table not written, whole groups and subset rows not complete, damaged fidelity results
dropped; abandoned leftovers are removed. Nothing is rewritten here, so nothing here can make a
store worse. Run it when no stage is writing to the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from store import derived, schema
from store.atlas_store import AtlasStore
from store.atomic import leftovers_beside
from store.errors import AtlasError, ChecksumError
from store.icons import FIDELITY, IconStore
from store.subset import ROWS, SubsetStore
from store.zarrio import check_chunk, chunk_grid, has_checksum, open_group, read_child, read_group, rewrite_command

log = logging.getLogger(__name__)

DAMAGE = ("corrupt", "missing", "unreadable", "stale", "unfinished")


@dataclass(frozen=True)
class Repair:
    """One mark-for-redo action: ``kind`` on the group at ``path`` for ``units``."""

    kind: str  # blocks | images | batches | fidelity | incomplete | subset_rows | remove | file
    path: str
    units: tuple[int, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One damaged, missing, stale or unfinished piece, with the command that fixes it."""

    kind: str  # corrupt | missing | unreadable | stale | unfinished | leftover
    path: str  # the file or group
    detail: str
    fix: str  # what to run (after ``--repair`` where it says so)
    repair: Repair | None = None

    def line(self) -> str:
        return f"{self.kind:<10} {self.path}: {self.detail} -> {self.fix}"


@dataclass
class Report:
    """Everything found; ``checked`` names what was looked at."""

    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def damage(self) -> list[Problem]:
        return [p for p in self.problems if p.kind in DAMAGE]

    @property
    def ok(self) -> bool:
        return not self.damage

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)


# --------------------------------------------------------------------------------- helpers
def metadata_problems(root: Path, fix: str, repair: Repair | None) -> list[Problem]:
    """Every ``zarr.json`` under ``root`` that is not valid JSON."""
    out = []
    for meta in sorted(root.rglob("zarr.json")):
        try:
            json.loads(meta.read_text())
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            out.append(
                Problem("unreadable", str(meta), f"metadata is not valid JSON ({type(exc).__name__})", fix, repair)
            )
    return out


def partial_files(root: Path) -> list[Path]:
    """Chunk files a killed zarr write left (``<key>.<uuid>.partial``; never read)."""
    return sorted(root.rglob("*.partial")) if root.is_dir() else []


def _leftover_problems(final: Path, report: Report) -> None:
    for item in leftovers_beside(final):
        what = "abandoned (its process is gone)" if item.removable else f"owned by {item.owner}, maybe still running"
        report.add(
            Problem(
                "leftover",
                str(item.path),
                f"hidden folder of a run, {what}",
                "--repair removes it" if item.removable else "remove it by hand once no run uses it",
                Repair("remove", str(item.path)) if item.removable else None,
            )
        )
    for part in partial_files(final):
        report.add(
            Problem(
                "leftover",
                str(part),
                "partial chunk file of a killed write (never read)",
                "--repair removes it",
                Repair("file", str(part)),
            )
        )


def _arrays(group: zarr.Group, prefix: str = "") -> Iterable[tuple[str, zarr.Array[Any]]]:
    for name, member in sorted(group.members(), key=lambda kv: kv[0]):
        if isinstance(member, zarr.Group):
            yield from _arrays(member, f"{prefix}{name}/")
        else:
            yield f"{prefix}{name}", member


def _chunk_units(array: zarr.Array[Any], chunk: int, unit_rows: int) -> range:
    """Units of ``unit_rows`` rows that chunk number ``chunk`` (along the first axis) overlaps."""
    step = array.chunks[0]
    start, stop = chunk * step, min((chunk + 1) * step, array.shape[0])
    return range(start // unit_rows, -(-stop // unit_rows))


def check_array(
    array: zarr.Array[Any], where: str, wanted: Callable[[int], bool], fix: str, repair: Callable[[int], Repair | None]
) -> list[Problem]:
    """Problems of the chunks of ``array`` whose first-axis index ``wanted`` says must be on disk."""
    out: list[Problem] = []
    grid = chunk_grid(array)
    if not grid or 0 in grid:
        return out
    if not has_checksum(array):
        out.append(
            Problem("unreadable", where, "written without chunk checksums (an older version)", "atlas migrate", None)
        )
    for coords in np.ndindex(*grid):
        if not wanted(coords[0]):
            continue
        problem = check_chunk(array, coords)
        if problem is not None:
            kind = "missing" if problem == "missing" else "corrupt"
            key = array.metadata.encode_chunk_key(tuple(int(c) for c in coords))
            out.append(
                Problem(kind, f"{where}/{key}", f"chunk {'.'.join(map(str, coords))} {problem}", fix, repair(coords[0]))
            )
    return out


def _open(path: Path, report: Report, fix: str, repair: Repair | None) -> zarr.Group | None:
    problems = metadata_problems(path, fix, repair)
    if problems:
        report.problems.extend(problems)
        return None
    try:
        return open_group(path, mode="r")
    except Exception as exc:
        report.add(Problem("unreadable", str(path), f"cannot be opened ({type(exc).__name__}: {exc})", fix, repair))
        return None


# --------------------------------------------------------------------------------- the collect store
def verify_collect(store: AtlasStore, report: Report) -> None:
    """Chunks of every done block and of the image table; damaged ones are marked for recollection."""
    root = str(store.path)
    fix = rewrite_command(store.path)
    group = store.group
    blocks = read_child(read_group(group, schema.BLOCKS), "done")
    damaged_flags = set()
    for coords in np.ndindex(*chunk_grid(blocks)):
        problem = check_chunk(blocks, coords)
        if problem is not None and problem != "missing":  # a missing flag chunk is "not done"
            damaged_flags.add(coords[0])
            report.add(
                Problem(
                    "corrupt",
                    f"{root}/{schema.BLOCKS}/done/{blocks.metadata.encode_chunk_key(coords)}",
                    f"done flag of block {coords[0]} {problem}",
                    fix,
                    Repair("blocks", root, (coords[0],)),
                )
            )
    done = np.zeros(store.n_blocks, dtype=bool)
    if not damaged_flags:
        done = store.done_blocks()
    else:
        for b in range(store.n_blocks):
            done[b] = b not in damaged_flags and bool(np.asarray(blocks[b]))
    bi = store.record.block_inputs
    per_row = [
        (f"{schema.SAMPLES}/{name}", bi * store.positions_per_image) for name in ("activations", *schema.ROW_ARRAYS)
    ]
    for name, unit_rows in [*per_row, (f"{schema.INPUTS}/status", bi)]:
        if name not in group:
            report.add(Problem("missing", f"{root}/{name}", "array missing", "collect into a new store"))
            continue
        array = read_child(group, name)

        def wanted(chunk: int, array: zarr.Array[Any] = array, unit_rows: int = unit_rows) -> bool:
            return any(done[u] for u in _chunk_units(array, chunk, unit_rows) if u < len(done))

        def repair(chunk: int, array: zarr.Array[Any] = array, unit_rows: int = unit_rows) -> Repair:
            return Repair("blocks", root, tuple(u for u in _chunk_units(array, chunk, unit_rows) if done[u]))

        report.problems.extend(check_array(array, f"{root}/{name}", wanted, fix, repair))
    if store.images_written:
        for name in ("path", "label", "label_class"):
            array = read_child(read_group(group, schema.IMAGES), name)
            report.problems.extend(
                check_array(
                    array, f"{root}/{schema.IMAGES}/{name}", lambda _c: True, fix, lambda _c: Repair("images", root)
                )
            )
    report.checked.append(f"store {root}: {int(done.sum())}/{store.n_blocks} blocks done")


# --------------------------------------------------------------------------------- whole groups
def verify_whole(
    path: Path, what: str, report: Report, fix: str, stale: Callable[[zarr.Group], str | None] = lambda _g: None
) -> zarr.Group | None:
    """A group written whole (layout, grid, whitening, subset rows): all chunks, complete, not stale."""
    mark = Repair("incomplete", str(path))
    group = _open(path, report, fix, Repair("remove", str(path)))
    if group is None:
        return None
    if not group.attrs.get("complete", False):
        report.add(Problem("unfinished", str(path), f"{what} not marked complete (a run stopped)", fix))
        return group
    for name, array in _arrays(group):
        report.problems.extend(check_array(array, f"{path}/{name}", lambda _c: True, fix, lambda _c: mark))
    reason = stale(group)
    if reason:
        report.add(Problem("stale", str(path), reason, fix, mark))
    report.checked.append(f"{what} {path}")
    return group


def _attrs(path: Path) -> dict[str, Any] | None:
    try:
        return dict(open_group(path, mode="r").attrs) if (path / "zarr.json").exists() else None
    except Exception:
        return None


def verify_derived(store: Any, report: Report, fix_for: Callable[[Path], str]) -> None:
    """The layout, grid, whitening and icons groups of ``store`` (an AtlasStore or a SubsetStore)."""
    layout_path, grid_path = store.derived_path("layout"), store.derived_path("grid")
    whitening_path, icons_path = store.derived_path("whitening"), store.derived_path("icons")

    def layout_stale(group: zarr.Group) -> str | None:
        recorded, now = group.attrs.get("rows_token"), derived.rows_token(store)
        if recorded is None:
            return "records no rows token (made by an older version)"
        if recorded != now:
            return f"made from other collected rows than {store.path} holds now (rows token {recorded} != {now})"
        return None

    def layout_id_stale(group: zarr.Group) -> str | None:
        source = (
            Path(str(group.attrs["source"])).with_name(
                Path(str(group.attrs["source"])).name.replace(".whitening.zarr", ".layout.zarr")
            )
            if group.attrs.get("source")
            else layout_path
        )
        layout = _attrs(source)
        if layout is None:
            return None  # no layout to compare with (deleted, or never copied here): nothing to claim
        if group.attrs.get("layout_id") != layout.get("layout_id"):
            return f"made from layout {group.attrs.get('layout_id')}, {source} is {layout.get('layout_id')} now"
        return None

    for path, what, stale in (
        (layout_path, "layout", layout_stale),
        (grid_path, "grid", layout_id_stale),
        (whitening_path, "whitening", layout_id_stale),
    ):
        if path.exists():
            verify_whole(path, what, report, fix_for(path), stale)
        _leftover_problems(path, report)
    if icons_path.exists():
        verify_icons(icons_path, store, report, fix_for(icons_path))
    _leftover_problems(icons_path, report)


# --------------------------------------------------------------------------------- icons
def _icon_done(icons: IconStore, n: int, sub: zarr.Group, where: str, report: Report, fix: str) -> np.ndarray:
    """Which batches of level ``n`` count as done. A done-flag chunk that fails its check is reported
    (its batch marked not done by repair) and its batches count as not done, so their icon chunks
    are not required to be on disk; a missing flag chunk simply means "not done"."""
    flags = read_child(sub, "done")
    bad_flags = set()
    for coords in np.ndindex(*chunk_grid(flags)):
        problem = check_chunk(flags, coords)
        if problem is not None and problem != "missing":
            bad_flags.add(coords[0])
            report.add(
                Problem(
                    "corrupt",
                    f"{where}/level_{n}/done/{flags.metadata.encode_chunk_key(coords)}",
                    f"done flag of level {n} batch {coords[0]} {problem}",
                    fix,
                    Repair("batches", where, (n, coords[0])),
                )
            )
    if not bad_flags:
        return icons.done(n)
    return np.array(
        [b not in bad_flags and bool(np.asarray(flags[b])) for b in range(icons.n_batches(n))],
        dtype=np.bool_,
    )


def _icon_arrays(sub: zarr.Group, n: int, done: np.ndarray, bs: int, where: str, report: Report, fix: str) -> None:
    """The chunks of level ``n``'s icons, objective and cos-sim that hold a done batch; a damaged one
    marks the batches it holds not done, so ``atlas icons`` re-renders exactly those."""
    for name in ("icons", "objective", "cossim"):
        array = read_child(sub, name)

        def wanted(chunk: int, array: zarr.Array[Any] = array) -> bool:
            return any(done[u] for u in _chunk_units(array, chunk, bs) if u < len(done))

        def repair(chunk: int, array: zarr.Array[Any] = array) -> Repair:
            return Repair("batches", where, (n, *(u for u in _chunk_units(array, chunk, bs) if u < len(done))))

        report.problems.extend(check_array(array, f"{where}/level_{n}/{name}", wanted, fix, repair))


def _icon_fidelity(sub: zarr.Group, n: int, where: str, report: Report) -> None:
    """Every chunk of level ``n``'s finished fidelity results: damage drops the whole result (it is
    recomputed by ``atlas fidelity``, not rendered), so every chunk is wanted."""
    if FIDELITY not in sub or not read_group(sub, FIDELITY).attrs.get("complete", False):
        return

    def fidelity_repair(_chunk: int) -> Repair:
        return Repair("fidelity", where, (n,))

    for name, array in _arrays(read_group(sub, FIDELITY)):
        report.problems.extend(
            check_array(
                array,
                f"{where}/level_{n}/{FIDELITY}/{name}",
                lambda _c: True,
                "atlas verify --repair, then atlas fidelity",
                fidelity_repair,
            )
        )


def verify_icons(path: Path, store: Any, report: Report, fix: str) -> None:
    """Chunks of every done batch (damaged batches are marked not done), fidelity results, staleness."""
    if _open(path, report, fix, None) is None:
        return
    try:
        icons = IconStore.open(path)
    except AtlasError as exc:
        report.add(Problem("unreadable", str(path), str(exc), fix))
        return
    where = str(path)
    rendered = 0
    for n in icons.levels:
        sub = read_group(icons.group, f"level_{n}")
        done = _icon_done(icons, n, sub, where, report, fix)
        rendered += int(done.sum())
        _icon_arrays(sub, n, done, icons.batch_size, where, report, fix)
        _icon_fidelity(sub, n, where, report)
    reason = icons_stale(icons, store)
    if reason:
        report.add(Problem("stale", where, reason, f"delete {where}, then {fix.split('then ')[-1]}"))
    report.checked.append(f"icons {where}: {rendered} batches done")


def icons_stale(icons: IconStore, store: Any) -> str | None:
    """Why the icons no longer match the grid they were rendered from (None: they do)."""
    rendered = icons.attrs.get("grid") or {}
    grid = _attrs(store.derived_path("grid"))
    if grid is None or not grid.get("complete"):
        return "the grid they were rendered from is missing or unfinished"
    if rendered.get("layout_id") != grid.get("layout_id"):
        return f"rendered from layout {rendered.get('layout_id')}, the grid is binned from {grid.get('layout_id')} now"
    try:
        cells = {n: derived.read_level(store, n, with_attribution=False) for n in icons.levels}
    except ChecksumError:
        return None  # the damaged grid is reported by its own check
    except AtlasError as exc:
        return str(exc)
    now = derived.directions_fingerprint(cells)
    if rendered.get("fingerprint") != now:
        return f"rendered from other cell directions (fingerprint {rendered.get('fingerprint')}, the grid's is {now})"
    return None


# --------------------------------------------------------------------------------- subsets
def subset_folders(store: AtlasStore) -> list[tuple[Path, str]]:
    """The class and comparison folders beside the store, with the command that builds each."""
    return [(store.path.with_name(f"{store.path.stem}.{kind}"), f"atlas {kind}") for kind in ("classes", "compare")]


def verify_subsets(store: AtlasStore, report: Report) -> None:
    """Every class / comparison atlas's rows, layout, grid, whitening and icons groups."""
    for folder, command in subset_folders(store):
        if not folder.is_dir():
            continue
        for rows_path in sorted(folder.glob(f"*.{ROWS}.zarr")):
            name = rows_path.name[: -len(f".{ROWS}.zarr")]
            fix = f"atlas verify --repair, then {command}"
            verify_whole(rows_path, f"{command.split()[-1]} rows", report, fix)
            _leftover_problems(rows_path, report)
            try:
                subset = SubsetStore.open(store, name, base=folder)
            except AtlasError:
                continue  # unfinished or damaged rows: reported above

            def fix_for(p: Path, command: str = command) -> str:
                return rewrite_command(p) if p.name.endswith(".icons.zarr") else command

            verify_derived(subset, report, fix_for)


# --------------------------------------------------------------------------------- entry point
def verify_store(path: str | Path) -> Report:
    """Check the collect store at ``path`` and every group derived from it (see the module docstring)."""
    p = Path(path)
    report = Report()
    broken = (
        metadata_problems(p, "restore the file from a backup, or collect into a new store", None) if p.is_dir() else []
    )
    if broken:
        report.problems.extend(broken)
        return report
    try:
        store = AtlasStore.open(p, mode="r")
    except AtlasError as exc:
        report.add(
            Problem(
                "unreadable", str(p), str(exc), "atlas migrate" if "atlas migrate" in str(exc) else "see the message"
            )
        )
        return report
    verify_collect(store, report)
    _leftover_problems(p, report)
    verify_derived(store, report, rewrite_command)
    verify_subsets(store, report)
    return report
