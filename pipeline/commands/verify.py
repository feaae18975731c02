"""`atlas verify [--repair]` and `atlas migrate`: trust the store like a database (docs/store.md).

verify prints one line per damaged, missing, stale or unfinished piece (and per leftover of a
killed run), then a summary; it exits 1 when anything is wrong (also after ``--repair``, which only
marks the damage for redo: the printed commands rewrite it) and 0 when everything checks out.
"""

from __future__ import annotations

import argparse
from collections import Counter

from pipeline.commands.common import config_from_args


def cmd_verify(args: argparse.Namespace) -> int:
    from stages import verify
    from stages.context import StageContext
    from stages.sections import VerifySection

    config = config_from_args(args)
    result = verify.run(VerifySection.of(config, repair=args.repair), StageContext())
    report = result.report
    if not args.quiet:
        for line in report.checked:
            print(f"checked    {line}")
    for problem in report.problems:
        print(problem.line())
    counts = Counter(p.kind for p in report.problems)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no problems"
    print(f"verify {config.data.store} and {config.data.atlas}: {summary}")
    if result.repaired:
        print("repaired (marked for redo):")
        for line in result.repaired:
            print(f"  {line}")
    if result.commands:
        first = "now run" if result.repaired else "fix with"
        prefix = "" if result.repaired else "atlas verify --repair, then "
        needs_repair = any(p.repair is not None and p.kind != "stale" for p in report.damage)
        print(f"{first}: {prefix if needs_repair else ''}{', then '.join(result.commands)}")
        if result.repaired and "atlas collect" in result.commands:
            from store.atlas_store import AtlasStore
            from store.progress import collect_progress

            print(f"  ({collect_progress(AtlasStore.open(config.data.store, mode='r')).message()})")
    return 0 if result.ok else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from store.migrate import migrate_store

    config = config_from_args(args)
    lines = migrate_store(config.data.store)
    for line in lines:
        print(line)
    if not lines:
        print(f"migrate: {config.data.store} and its groups are already at the current version")
    return 0
