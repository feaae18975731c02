"""notebooks/explore.ipynb: committed without outputs, and it runs top to bottom on a real atlas.

Executed with nbclient on the ``small_atlas`` session fixture's store (real MobileNetV2
activations of four photos, levels 3 and 6 rendered), with ``ATLAS_STORE`` pointing at it, the
way a user opens a finished store.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from store import derived

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"


def _images(cell: nbformat.NotebookNode) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"]))).convert("RGB"))
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_committed_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, "clear the outputs before committing"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_uses_only_the_api() -> None:
    """Only ``from pipeline import ...`` (the notebook API) and the standard library; no path hacks."""
    import ast
    import sys

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        assert "sys.path" not in cell.source, "install the project instead of editing sys.path"
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module == "pipeline" or module.split(".")[0] in sys.stdlib_module_names, (
                    f"the notebook imports {module!r}; use the API of pipeline/api/ (from pipeline import ...)"
                )


def test_notebook_runs_on_a_small_atlas(small_atlas, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("ATLAS_STORE", str(small_atlas.store.path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    opened, scatter, member_cell, level_cell, class_cell = cells

    store = small_atlas.store
    assert str(store.path) in _text(opened)
    finest = max(small_atlas.levels)
    level = derived.read_level(store, finest)
    assert f"level {finest}: cell {int(np.argmax(level.count))} " in _text(member_cell)
    assert f"{int(level.count.max())} members" in _text(member_cell)
    assert "class atlases: none built" in _text(class_cell)

    (plot,) = _images(scatter)
    (strip,) = _images(member_cell)
    (atlas,) = _images(level_cell)
    for name, image in {"scatter": plot, "members": strip, "level": atlas}.items():
        Image.fromarray(image).save(tmp_path / f"{name}.png")  # to look at when it fails
        assert image.shape[0] > 100 and image.std() > 10, f"{name} output looks blank"
    # the scatter has coloured (class) points, not only grey ones
    rgb = plot.reshape(-1, 3).astype(int)
    assert (np.ptp(rgb, axis=1) > 60).sum() > 50
