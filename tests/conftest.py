"""Shared fixtures: the real pretrained MobileNetV2 (never random weights) and small photo sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.config import ModelConfig
from stages.model.registry import LoadedModel, load_model
from stages.model.weights import install_default_weights

# The tests' layer: the mixed4c analogue (576 x 14 x 14), named here because the product default
# (stages/config.py = params.yaml) is the demo's features.17.conv.0.
MOBILENET_LAYER = "features.13.conv.0"


@pytest.fixture(scope="session")
def mobilenet() -> LoadedModel:
    """The embedded weights: torchvision's MobileNetV2 IMAGENET1K_V1, cut at MOBILENET_LAYER."""
    install_default_weights()
    torch.manual_seed(0)
    return load_model(ModelConfig(layer=MOBILENET_LAYER), torch.device("cpu"))


def _real_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data

    return [
        ("cat", skimage.data.chelsea()),
        ("astronaut", skimage.data.astronaut()),
        ("coffee", skimage.data.coffee()),
        ("rocket", skimage.data.rocket()),
    ]


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree of four real photos (scikit-image's), two labels."""
    root = tmp_path_factory.mktemp("photos")
    for i, (name, pixels) in enumerate(_real_photos()):
        label = "tabby" if name == "cat" else "other"
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / label / f"{i:02d}_{name}.jpg", quality=92)
    return root


# A real small atlas built end to end (collect -> reduce -> grid -> render -> tiles), session-wide.
from tests.atlas_fixtures import SmallAtlas, small_atlas  # noqa: E402,F401 - fixture registration
