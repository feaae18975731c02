"""The notebook API and the CLI share one set of defaults (stages/config.py = params.yaml).

``pipeline/api/common.py`` promises that a notebook and ``atlas`` never disagree. Two checks: every
render setting an API function takes defaults to params.yaml's value, and a real cell direction of
the ``small_atlas`` store rendered by ``feature_vis`` with no settings given is, byte for byte, the
icon ``atlas render-unit --params params.yaml`` writes for it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.api import feature_vis, render_directions
from pipeline.cli import main as atlas_main
from pipeline.params import load_config
from stages.model.registry import LoadedModel
from store import derived
from tests.atlas_fixtures import SmallAtlas
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("function", [render_directions, feature_vis])
def test_api_render_defaults_are_params_yaml(function) -> None:
    render = load_config(REPO / "params.yaml").render.model_dump()
    del render["device"]  # the API takes a torch.device (None: the model's), not the config's text
    defaults = {name: p.default for name, p in inspect.signature(function).parameters.items() if name in render}
    assert {"steps", "size", "lr", "seed"} <= set(defaults)
    assert defaults == {name: render[name] for name in defaults}


def test_api_and_cli_render_a_cell_direction_to_the_same_bytes(
    small_atlas: SmallAtlas, mobilenet: LoadedModel, tmp_path: Path, one_thread
) -> None:
    level = derived.read_level(small_atlas.store, small_atlas.levels[0], with_attribution=False)
    direction = tmp_path / "cell.npy"
    np.save(direction, level.direction[int(np.argmax(level.count))].astype(np.float32))
    target = f"direction:{direction}"

    from_api = np.asarray(feature_vis(mobilenet, target, device=torch.device("cpu")))

    out = tmp_path / "cli.png"
    argv = ["render-unit", "-q", target, "--out", str(out), "--params", str(REPO / "params.yaml")]
    argv += ["--set", f"model.layer={mobilenet.layer}", "--set", "render.device=cpu"]  # the store's layer
    assert atlas_main(argv) == 0
    from_cli = np.asarray(Image.open(out).convert("RGB"))

    size = load_config(REPO / "params.yaml").render.size
    assert from_cli.shape == (size, size, 3) and from_cli.std() > 5  # a rendered icon, not a blank
    np.testing.assert_array_equal(from_api, from_cli)
