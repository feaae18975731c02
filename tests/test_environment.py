"""The CLI under an interpreter without the project's packages: one line, not a traceback.

``dvc repro`` runs each stage as ``python3 -m pipeline.cli`` with whichever ``python3`` is first on
PATH; from an environment that is not activated that is a Python without the packages.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.environment import REQUIRED, interpreter_problem, missing_packages

REPO = Path(__file__).resolve().parents[1]


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower()


def test_the_check_covers_every_runtime_dependency() -> None:
    declared = {
        _requirement_name(s) for s in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert declared == {_requirement_name(d) for d in REQUIRED.values()}


def test_the_interpreter_under_test_has_everything() -> None:
    assert missing_packages() == [] and interpreter_problem() is None


def test_a_missing_package_is_named() -> None:
    problem = interpreter_problem({"json": "stdlib-json", "no_such_module_xyz": "no-such-dist"})
    assert problem is not None and "no-such-dist" in problem and "stdlib-json" not in problem
    assert "activate" in problem and "\n" not in problem


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv without any package: what ``python3`` is to DVC when the project's env is not activated."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=300)
    return folder / "bin" / "python3"


@pytest.mark.parametrize("argv", [["collect", "-q"], ["render", "--shard", "0/1"], ["--help"]])
def test_a_stage_command_from_a_python_without_the_packages_says_to_activate(
    bare_python: Path, argv: list[str]
) -> None:
    proc = subprocess.run(
        [str(bare_python), "-m", "pipeline.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    line = proc.stderr.strip()
    assert "\n" not in line and "activate" in line and "docs/dvc.md" in line and str(bare_python.parent) in line
