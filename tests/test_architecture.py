"""docs/architecture.md is true: every stage package it names exists and runs as ``run(section, ctx)``,
every stage package on disk is named there, and the public API never reaches into the CLI's commands."""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from stages.context import StageContext
from tests.test_layering import MODULES, imports_of

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
SHARED = ("model", "images", "featurevis")  # what the stages share: no stage.py, named in the doc's diagram


def _documented() -> list[str]:
    """The stage packages of the doc's table (``| `collect/` | ...``)."""
    return re.findall(r"^\|\s*`([a-z_]+)/`\s*\|", DOC, re.M)


def _on_disk() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "stages").glob("*/__init__.py"))


def test_the_doc_names_every_stage_package_on_disk_and_only_those() -> None:
    documented = _documented()
    assert len(documented) >= 11 and len(set(documented)) == len(documented)
    stages = [name for name in _on_disk() if name not in SHARED]
    assert sorted(documented) == stages, "a stage package is missing from docs/architecture.md's table, or gone"
    for name in SHARED:
        assert f"{name}/" in DOC, f"stages/{name}/ is not named in docs/architecture.md"
    for name in documented:  # and in the diagram
        assert re.search(rf"^\s+.*\b{name}/", DOC.split("## The rules")[0], re.M), name


@pytest.mark.parametrize("name", _documented())
def test_every_stage_runs_as_run_section_ctx(name: str) -> None:
    assert (ROOT / "stages" / name / "stage.py").is_file(), f"stages/{name}/stage.py is missing"
    module = importlib.import_module(f"stages.{name}.stage")
    run = module.run
    params = list(inspect.signature(run).parameters.values())
    assert len(params) == 2, f"stages.{name}.stage.run{inspect.signature(run)}: want run(section, ctx)"
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    assert params[1].name == "ctx"
    hints = typing.get_type_hints(run)
    section, ctx = hints[params[0].name], hints["ctx"]
    assert ctx is StageContext
    assert isinstance(section, type) and issubclass(section, BaseModel), section
    documented = re.search(rf"^\|\s*`{name}/`\s*\|\s*`(\w+)`", DOC, re.M)
    assert documented and documented.group(1) == section.__name__, f"{name}: the doc's section is not {section}"


def test_the_public_api_does_not_import_the_cli_commands() -> None:
    api = [m for m in MODULES if m.startswith("pipeline.api")]
    assert api
    for module in api:
        wrong = sorted(i for i in imports_of(MODULES[module]) if i.startswith("pipeline.commands"))
        assert not wrong, f"{module} imports {wrong}: move what it needs below the CLI (stages/)"


def test_a_context_reports_done_of_total_as_start_and_steps() -> None:
    totals: list[int] = []
    steps: list[int] = []
    report = StageContext(progress=steps.append, on_start=totals.append).done_of_total()
    assert report is not None
    for done in (2, 5, 5, 9):
        report(done, 9)
    assert totals == [9] and steps == [2, 3, 4]
    assert StageContext().done_of_total() is None
    with pytest.raises(ValueError, match="stage grid needs StageContext"):
        StageContext().require_store("grid")
