"""docs/api.md: every ```python block runs, in order, on a small real atlas, and makes what it says.

The blocks share one namespace (as in a notebook) and run in a temporary folder, with the literal
``"data/store.zarr"`` replaced by the ``small_atlas`` fixture's store (real MobileNetV2 activations of
four photos, levels 3 and 6 rendered).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
STORE_LITERAL = '"data/store.zarr"'


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_doc_has_examples_of_every_entry_point() -> None:
    code = "\n".join(python_blocks(DOC.read_text()))
    assert STORE_LITERAL in code
    for name in (
        "open_atlas",
        "plot_layout",
        ".level(",
        ".cell(",
        "show_level",
        "class_atlases",
        "activation_atlas",
        "render_directions",
        "feature_vis",
        "AtlasError",
    ):
        assert name in code, f"docs/api.md has no example of {name}"
    assert "sys.path" not in code and "from stages" not in code and "from store" not in code


def test_the_examples_run_on_a_small_atlas(
    small_atlas, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_api"}
    for number, block in enumerate(python_blocks(DOC.read_text()), start=1):
        source = block.replace(STORE_LITERAL, repr(str(small_atlas.store.path)))
        exec(compile(source, f"docs/api.md block {number}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert str(small_atlas.store.path) in printed
    assert "level=7" in printed and "[3, 6]" in printed  # the error example printed its one line

    images = {
        name: np.asarray(Image.open(tmp_path / name).convert("RGB"))
        for name in (
            "layout.png",
            "cell.png",
            "level.png",
            "in_memory_layout.png",
            "in_memory_level.png",
            "channel_42.png",
            "neuron_7.png",
        )
    }
    for name, pixels in images.items():
        assert pixels.std() > 5, f"{name} looks blank"
    assert images["level.png"].shape[:2] == (6 * 32, 6 * 32)
    assert images["channel_42.png"].shape[:2] == (48, 48)
    icons = namespace["icons"]
    assert icons.dtype == np.uint8 and icons.shape[1:] == (32, 32, 3)
