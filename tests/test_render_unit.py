"""stages/render/targets.py: every target kind writes a non-blank PNG and returns its objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.config import Config
from stages.model.registry import LoadedModel
from stages.render.targets import render_unit
from store.errors import AtlasError
from tests.featurevis_fixtures import one_thread  # noqa: F401 - fixture


def _direction(tmp_path: Path, model: LoadedModel) -> Path:
    """A real activation vector: the centre of a photo's activations."""
    import skimage.data

    x = torch.from_numpy(np.array(Image.fromarray(skimage.data.chelsea()).resize((224, 224)))).permute(2, 0, 1)
    with torch.no_grad():
        acts = model.trunk(model.normalize(x[None].float() / 255.0).contiguous(memory_format=torch.channels_last))[0]
    path = tmp_path / "cat.npy"
    np.save(path, acts[0, :, 7, 7].float().numpy())
    return path


@pytest.mark.parametrize("target", ["channel:42", "neuron:7", "neuron:7:1:2", "class:goldfish", "class:1", "direction"])
def test_each_target_writes_a_png(target: str, tmp_path: Path, mobilenet: LoadedModel, one_thread) -> None:
    if target == "direction":
        target = f"direction:{_direction(tmp_path, mobilenet)}"
    out = tmp_path / "unit" / "icon.png"
    value = render_unit(Config(), target, out, steps=12, size=48, seed=0, device=torch.device("cpu"), model=mobilenet)
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (48, 48, 3) and pixels.dtype == np.uint8
    assert pixels.astype(np.float32).std() > 5  # not blank
    assert np.isfinite(value)
    assert sum(len(m._forward_hooks) for m in mobilenet.module.modules()) == 0


@pytest.mark.parametrize(
    "target, message",
    [
        ("channel:9999", "out of range"),
        ("neuron:1:2", "is not one of"),
        ("class:goldfsh", "close: goldfish"),
        ("direction:/nonexistent.npy", "not found"),
        ("layer:3", "is not one of"),
    ],
)
def test_bad_targets_are_refused(target: str, message: str, tmp_path: Path, mobilenet: LoadedModel) -> None:
    with pytest.raises(AtlasError, match=message):
        render_unit(
            Config(), target, tmp_path / "x.png", steps=1, size=32, seed=0, device=torch.device("cpu"), model=mobilenet
        )
