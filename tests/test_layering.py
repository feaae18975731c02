"""The three floors hold: every import points down, and nothing imports in a circle.

``store/`` keeps results (imports nothing of ours but itself), ``stages/`` computes (imports
``store/``, never ``pipeline/``), ``pipeline/`` runs it (CLI, commands, cluster, API). The
feature-visualization engine ``stages/featurevis`` imports nothing of ours at all, and zarr is
touched only under ``store/``. Imports are read from the source (``ast``). A function-level
import is still a dependency and counts everywhere; an import under ``if TYPE_CHECKING:`` counts
for the direction of the floors but not for circles, since it never runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("store", "stages", "pipeline")
OURS = FLOORS


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for floor in FLOORS for p in sorted((ROOT / floor).rglob("*.py"))}


MODULES = _modules()


def _resolve(target: str) -> str | None:
    """The longest known module that ``target`` names (``a.b.c`` -> ``a.b`` when c is a name in it)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports_of(path: Path, runtime_only: bool = False) -> set[str]:
    """Every module of ours (and every third-party name) that ``path`` imports; ``runtime_only``
    leaves out the ``TYPE_CHECKING`` ones."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    inside = path.resolve().is_relative_to(ROOT)
    module = _module_name(path.resolve()) if inside else path.stem
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = _typing_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` depends on the submodule (as `import pkg.submodule` does),
            # `from pkg import name` on pkg itself
            subs = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(base)
    return found


def _graph(runtime_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = {_resolve(t) for t in imports_of(path, runtime_only) if t.split(".")[0] in OURS}
        graph[name] = {d for d in deps if d and d != name}
    return graph


GRAPH = _graph(runtime_only=False)  # every import: the floors' direction
RUNTIME = _graph(runtime_only=True)  # what executes: circles


def _floor(module: str) -> str:
    return module.split(".")[0]


def test_the_tree_has_all_three_floors() -> None:
    assert {_floor(m) for m in MODULES} == set(FLOORS)
    assert "stages.featurevis" in MODULES and "store.errors" in MODULES


@pytest.mark.parametrize("floor, forbidden", [("store", {"stages", "pipeline"}), ("stages", {"pipeline"})])
def test_imports_point_down(floor: str, forbidden: set[str]) -> None:
    bad = sorted(
        f"{m} imports {d}" for m, deps in GRAPH.items() if _floor(m) == floor for d in deps if _floor(d) in forbidden
    )
    assert not bad, "imports pointing up:\n" + "\n".join(bad)


def test_featurevis_imports_nothing_else_of_ours() -> None:
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if m.startswith("stages.featurevis")
        for d in deps
        if not d.startswith("stages.featurevis") and d != "stages"
    )
    assert not bad, "\n".join(bad)


def test_zarr_is_imported_only_under_store() -> None:
    bad = sorted(
        m
        for m, path in MODULES.items()
        if _floor(m) != "store" and any(t.split(".")[0] == "zarr" for t in imports_of(path))
    )
    assert not bad, f"zarr imported outside store/: {bad}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path of modules, or None (iterative DFS with colours)."""
    colour: dict[str, int] = {}
    for start in sorted(graph):
        if colour.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        colour[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if nxt not in graph:
                continue
            if colour.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not colour.get(nxt):
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_no_import_circles() -> None:
    cycle = _find_cycle(RUNTIME)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    """The check above could pass vacuously; it must catch a circle through several modules."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    cycle = _find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    src = ROOT / "stages" / "featurevis" / "__init__.py"
    assert any(d.startswith("stages.featurevis.") for d in imports_of(src))
    lazy = ROOT / "pipeline" / "cli.py"
    assert any(_floor(d) in ("pipeline", "stages") for d in GRAPH[_module_name(lazy)])
    typed = tmp_path / "typed.py"
    typed.write_text(
        "from typing import TYPE_CHECKING\nimport json\nif TYPE_CHECKING:\n    import store.atlas_store\n"
        "def f():\n    import stages.config\n"
    )
    assert {"store.atlas_store", "stages.config", "json"} <= imports_of(typed)
    assert "store.atlas_store" not in imports_of(typed, runtime_only=True)
    assert "stages.config" in imports_of(typed, runtime_only=True)


def attrs_reads(path: Path) -> list[int]:
    """Line numbers of every ``<something>.attrs`` in ``path`` (an ``Attribute`` node named ``attrs``).

    Store metadata is parsed into typed records once, under ``store/`` (store/records.py); any
    ``.attrs`` outside it is a raw, untyped read of zarr attributes (or of a record's raw dict)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted(node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "attrs")


def test_attrs_are_read_only_under_store() -> None:
    bad = sorted(
        f"{path.relative_to(ROOT)}:{line}"
        for m, path in MODULES.items()
        if _floor(m) != "store"
        for line in attrs_reads(path)
    )
    assert not bad, "`.attrs` read outside store/ (use the typed records of store/records.py):\n" + "\n".join(bad)


def test_the_attrs_rule_sees_reads_and_ignores_keywords(tmp_path: Path) -> None:
    """The rule above could pass vacuously; it must flag ``x.attrs`` however it is used, and not ``attrs=``."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f(store, Layout):\n"
        "    a = store.attrs\n"
        "    b = store.group.attrs.get('model')\n"
        "    store.group.attrs['x'] = 1\n"
        "    return Layout(attrs={'method': 'umap'}), a, b\n"
    )
    assert attrs_reads(planted) == [2, 3, 4]


# --------------------------------------------------------------------------------- function length
MAX_FUNCTION_LINES = 60  # issue 21: every function fits on a screen, def line to last line
LENGTH_EXEMPT = ("bench", "data")  # benchmark scripts, and the data folder DVC fills


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of every function or method in ``path`` longer than ``limit``
    lines, counted as ``ast`` does (``end_lineno - lineno + 1``: decorators left out, nested
    functions counted inside their parent and on their own)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.name, node.lineno, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]


def _python_files() -> list[Path]:
    """Every .py of the repository outside ``bench/`` and ``data/`` (tests and scripts included),
    skipping hidden folders (git, caches, virtual environments)."""
    return sorted(
        p
        for p in ROOT.rglob("*.py")
        if p.relative_to(ROOT).parts[0] not in LENGTH_EXEMPT
        and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    )


def test_no_function_is_longer_than_60_lines() -> None:
    files = _python_files()
    assert {p.relative_to(ROOT).parts[0] for p in files} >= {*FLOORS, "tests", "scripts"}, "the walk missed a folder"
    bad = [
        f"{path.relative_to(ROOT)}:{line} {name} is {length} lines"
        for path in files
        for name, line, length in long_functions(path)
    ]
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers):\n" + "\n".join(bad)


def test_the_length_rule_counts_a_planted_long_function(tmp_path: Path) -> None:
    """The rule above could pass vacuously; it must flag a 61-line function (method or nested too)
    and pass a 60-line one, counting from the ``def`` line, not the decorator."""
    planted = tmp_path / "planted.py"
    body, nested = "    x = 1\n", "        x = 1\n"
    planted.write_text(
        "def ok():\n"  # line 1, 60 lines
        + body * 59
        + "@decorated\ndef too_long():\n"  # def on line 62, 61 lines
        + body * 60
        + "class C:\n    async def method(self):\n"  # def on line 124, 61 lines
        + nested * 60
        + "def outer():\n    def inner():\n"  # outer on line 185 (62 lines), inner on 186 (61)
        + nested * 60
    )
    assert long_functions(planted) == [
        ("too_long", 62, 61),
        ("outer", 185, 62),
        ("method", 124, 61),
        ("inner", 186, 61),
    ]
