"""stages/explain/sanity.py and `atlas sanity-check`: Adebayo et al.'s randomization tests on the real model.

The command runs on the real MobileNetV2 and a real photo, randomizing the top two blocks; gradient
saliency must decorrelate from the trained map, guided backprop must not (the paper's finding),
and neither the loaded model nor the cached weights file may change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.cli import main
from stages.explain import sanity
from stages.model.registry import LoadedModel, file_sha256


def test_blocks_follow_the_forward_order(mobilenet: LoadedModel) -> None:
    order = sanity.blocks(mobilenet.module)
    assert (
        order[0] == "features.0" and order[-1] == "classifier.1" and "classifier.0" not in order
    )  # dropout: no weights
    assert order == [f"features.{k}" for k in range(19)] + ["classifier.1"]


def test_randomized_copies_leave_the_original_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 3, 6, 6))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    steps = [
        (block, {k: v.clone() for k, v in copy.state_dict().items()})
        for block, copy in sanity.randomized_copies(model, ["4", "0"], seed=0)
    ]
    assert [b for b, _ in steps] == ["4", "0"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    first, second = steps[0][1], steps[1][1]
    assert not torch.equal(first["4.weight"], before["4.weight"]) and torch.equal(first["0.weight"], before["0.weight"])
    assert not torch.equal(second["0.weight"], before["0.weight"])  # cumulative: both randomized
    assert torch.equal(second["4.weight"], first["4.weight"])


def test_rank_correlation_by_hand() -> None:
    assert sanity.rank_correlation(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert sanity.rank_correlation(np.array([1.0, 2, 3, 4]), np.array([-4.0, 3, -2, 1])) == pytest.approx(-1.0)  # |map|
    assert sanity.rank_correlation(np.zeros(4), np.arange(4.0)) == 0.0


def test_sanity_check_command_on_the_real_model(
    mobilenet: LoadedModel, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = Path(mobilenet.weights_file)
    sha_before = file_sha256(weights)
    params_before = {k: v.clone() for k, v in mobilenet.module.state_dict().items()}
    photo = next(photo_folder.glob("tabby/*.jpg"))
    out, figure = tmp_path / "sanity.json", tmp_path / "sanity.png"
    code = main(
        [
            "sanity-check",
            str(photo),
            "-q",
            "--set",
            "sanity.blocks=2",
            "--set",
            f"sanity.out={out}",
            "--set",
            f"sanity.figure={figure}",
            "--set",
            "sanity.methods=[saliency,guided_backprop]",
            "--set",
            "sanity.device=cpu",
            "--layer",
            "features.13.conv.0",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "saliency" in printed and "guided_backprop" in printed and "cascade mean" in printed
    report = json.loads(out.read_text())
    assert report["blocks"] == ["classifier.1", "features.18"]
    image = report["images"][0]
    assert image["class"]["name"] == "Egyptian cat"
    cascade = image["cascade_rank_correlation"]
    # gradient saliency follows the model: randomizing the logits layer alone decorrelates it
    assert cascade["saliency"][0] < 0.5 and image["verdicts"]["saliency"]["model_randomization"]
    # guided backprop barely changes (Adebayo et al., Fig. 2) and ignores the class (Nie et al.)
    assert min(cascade["guided_backprop"]) > 0.9 and not image["verdicts"]["guided_backprop"]["model_randomization"]
    assert image["class_randomization_rank_correlation"]["guided_backprop"] > 0.9
    assert image["class_randomization_rank_correlation"]["saliency"] < 0.5
    # randomization worked on a copy: the weights file and the loaded model are unchanged
    assert file_sha256(weights) == sha_before == mobilenet.weights_sha256
    assert all(torch.equal(params_before[k], v) for k, v in mobilenet.module.state_dict().items())
    from PIL import Image

    assert Image.open(figure).size[0] > 400
