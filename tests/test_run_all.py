"""`atlas run`: which stages it plans and what its closing summary says."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import build_parser
from pipeline.commands.run import stage_plan, summary_lines


def _args(*extra: str):
    return build_parser().parse_args(["run", "--params", "params.yaml", *extra])


def test_plan_runs_class_atlases_and_comparisons_only_when_configured() -> None:
    full = [name for name, _ in stage_plan(_args())]
    assert full[:5] == ["collect", "reduce", "grid", "render", "tiles"]
    assert full[5:] == ["classes", "compare"]  # params.yaml sets one of each for the demo
    bare = [name for name, _ in stage_plan(_args("--set", "classes.names=[]", "--set", "compare.pairs=[]"))]
    assert bare == ["collect", "reduce", "grid", "render", "tiles"]


def test_summary_has_every_stage_the_total_and_the_viewer(tmp_path: Path) -> None:
    lines = summary_lines([("collect", 100.0), ("render", 50.5)], tmp_path / "atlas")
    text = "\n".join(lines)
    assert "collect" in text and "render" in text and "150.5" in text and "(2.5 min)" in text
    assert str((tmp_path / "atlas" / "index.html").resolve()) in text and "atlas serve" in text
