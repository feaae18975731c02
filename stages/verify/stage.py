"""The verify stage: is everything on disk what the pipeline wrote, and made from what is there now?

``atlas verify`` walks the collect store, its layout / grid / whitening / icons groups, the class
and comparison atlases' groups (all chunk by chunk: :mod:`store.verify`) and the exported atlas
folder (every file against the ``checksums.json`` written when it was assembled, and the icons it
was made from: :mod:`store.files`, :mod:`stages.tiles.integrity`). It reports every corrupt,
missing, stale or unfinished piece with the command that fixes it. With ``repair`` it marks
exactly the damaged units for redo (collect blocks, render batches not done; whole groups not
complete; an export's up-to-date stamp forgotten), so the ordinary commands, sharded or not,
rewrite only those; it never rewrites data itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from stages.context import StageContext
from stages.sections import VerifySection
from store.atomic import leftover
from store.errors import AtlasError
from store.files import check_manifest, read_manifest
from store.icons import IconStore
from store.repair import apply_repairs
from store.verify import Problem, Repair, Report, verify_store

log = logging.getLogger(__name__)

#: the order the commands that fix things are run in
PIPELINE = (
    "atlas migrate",
    "atlas collect",
    "atlas reduce",
    "atlas grid",
    "atlas render",
    "atlas fidelity",
    "atlas tiles",
    "atlas classes",
    "atlas compare",
    "atlas align",
)
_EXPORT_COMMAND = {"main": "atlas tiles", "class": "atlas classes", "compare": "atlas compare", "align": "atlas align"}


@dataclass
class VerifyResult:
    """What was found, what ``repair`` marked, and what to run next."""

    report: Report
    repaired: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


def run(config: VerifySection, ctx: StageContext) -> VerifyResult:
    """Verify ``data.store`` and everything derived from it, and the export folder ``data.atlas``."""
    report = verify_store(config.data.store)
    verify_export(Path(config.data.atlas), Path(config.data.store), report)
    result = VerifyResult(report)
    if config.repair:
        result.repaired = apply_repairs(report.problems)
    result.commands = next_commands(report.damage)
    for problem in report.problems:
        log.debug("%s", problem.line())
    return result


def next_commands(problems: list[Problem]) -> list[str]:
    """The commands the fixes name, in pipeline order (after ``--repair`` where a fix says so)."""
    wanted: set[str] = set()
    for problem in problems:
        fix = problem.fix.split("then ")[-1]
        wanted.update(command for command in PIPELINE if command in fix)
    return [command for command in PIPELINE if command in wanted]


def icons_of(store_path: Path, atlas_id: str) -> Path:
    """The icons group an export's atlas ``atlas_id`` is made from (main, class/<slug>, compare/<a>--<b>)."""
    kind, _, slug = atlas_id.partition("/")
    if kind in ("class", "compare") and slug:
        folder = "classes" if kind == "class" else "compare"
        return store_path.with_name(f"{store_path.stem}.{folder}") / f"{slug}.icons.zarr"
    return store_path.with_name(f"{store_path.stem}.icons.zarr")


def verify_export(atlas_dir: Path, store_path: Path, report: Report) -> None:
    """Every atlas listed in the export's ``atlases.json`` files (the top one, and nested exports such
    as aligned pairs): each file against its ``checksums.json``, and staleness."""
    if not atlas_dir.is_dir():
        return
    for index_path in sorted(atlas_dir.rglob("atlases.json")):
        rel = index_path.parent.relative_to(atlas_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue  # inside a staging or trash folder
        _verify_index(index_path, store_path if index_path.parent == atlas_dir else None, report)


def _verify_index(index_path: Path, store_path: Path | None, report: Report) -> None:
    """One export folder's atlases; ``store_path`` None: the icons each atlas recorded are compared."""
    atlas_dir = index_path.parent
    try:
        index = json.loads(index_path.read_text())
        entries = list(index["atlases"])
    except (ValueError, KeyError, TypeError) as exc:
        report.add(
            Problem(
                "corrupt",
                str(index_path),
                f"not a valid atlas index ({type(exc).__name__})",
                "atlas tiles (it rewrites the index)",
                Repair("file", str(index_path)),
            )
        )
        return
    for entry in entries:
        icons = icons_of(store_path, str(entry.get("id"))) if store_path is not None else None
        _verify_atlas(atlas_dir, entry, icons, report)
    for item in sorted(atlas_dir.iterdir()):
        found = leftover(item)
        if found is not None:
            report.add(
                Problem(
                    "leftover",
                    str(item),
                    f"hidden folder of an export run (owner {found.owner})",
                    "--repair removes it" if found.removable else "remove it by hand once no run uses it",
                    Repair("remove", str(item)) if found.removable else None,
                )
            )


def _verify_atlas(atlas_dir: Path, entry: dict, icons: Path | None, report: Report) -> None:
    atlas_id, kind = str(entry.get("id")), str(entry.get("kind"))
    folder = atlas_dir / str(entry.get("path", f"{atlas_id}/"))
    fix = _EXPORT_COMMAND.get(kind, "atlas tiles")
    # forgetting the "up to date" stamp makes the next export rebuild this atlas whole
    forget = Repair("file", str(atlas_dir / f".{atlas_id.replace('/', '__')}.done.json"))
    after = f"atlas verify --repair, then {fix}"
    if not folder.is_dir():
        report.add(
            Problem("missing", str(folder), f"atlas {atlas_id} is listed in atlases.json but missing", after, forget)
        )
        return
    try:
        manifest = read_manifest(folder)
    except (ValueError, OSError) as exc:
        report.add(Problem("corrupt", str(folder / "checksums.json"), f"unreadable ({exc})", after, forget))
        return
    if manifest is None:
        report.add(Problem("stale", str(folder), "has no checksums.json (exported by an older version)", after, forget))
        return
    for rel, problem in check_manifest(folder, manifest):
        report.add(Problem("missing" if problem == "missing" else "corrupt", str(folder / rel), problem, after, forget))
    inputs = manifest.get("inputs") or {}
    reason = _export_stale(inputs, icons or Path(str(inputs.get("icons", ""))))
    if reason:
        report.add(Problem("stale", str(folder), reason, after, forget))
    report.checked.append(f"atlas {atlas_id} {folder}: {len(manifest['files'])} files")


def _export_stale(inputs: dict, path: Path) -> str | None:
    """Why the export no longer matches the icons at ``path`` it is made from (None: it does)."""
    if not inputs.get("icons"):
        return None  # made without an icons group of a store (nothing to compare with)
    if not IconStore.exists(path):
        return f"the icons it was made from are not at {path}"
    try:
        made_from = IconStore.open(path).record.made_from
    except AtlasError as exc:
        return f"the icons it was made from cannot be read ({exc})"
    for key in ("grid", "params", "model"):
        if key in inputs and made_from[key] != inputs[key]:
            return f"made from icons whose {key} has changed since ({path})"
    return None
