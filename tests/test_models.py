from pathlib import Path

import pytest
import torch
import torchvision

from stages.config import ModelConfig
from stages.model.registry import build_classifier, list_layers, load_model
from store.errors import AtlasError


def test_default_model_is_real_pretrained_mobilenet(mobilenet, photo_folder: Path) -> None:
    import torchvision.transforms.functional as F
    from PIL import Image

    cat = next((photo_folder / "tabby").glob("*.jpg"))
    x = F.to_tensor(Image.open(cat).convert("RGB").resize((224, 224)))[None]
    with torch.no_grad():
        logits = mobilenet.module(mobilenet.normalize(x))
    top5 = [mobilenet.class_names[i] for i in logits.topk(5).indices[0]]
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top5[:3]), top5
    assert mobilenet.layer_shape == (576, 14, 14)
    assert len(mobilenet.weights_sha256) == 64


def test_trunk_stops_at_layer_and_head_recovers_logits(mobilenet) -> None:
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        act, *cuts = mobilenet.trunk(mobilenet.normalize(x))
        full = mobilenet.module(mobilenet.normalize(x))
        logits = mobilenet.head(act, *cuts)
    assert act.shape == (2, 576, 14, 14)
    torch.testing.assert_close(logits, full, atol=1e-4, rtol=1e-4)
    called = [n for n, _ in mobilenet.trunk.named_modules()]
    assert not any(n.startswith(("features.14", "features.18", "classifier")) for n in called)


def test_layers_lists_names_with_shapes() -> None:
    layers = {name: shape for name, _, shape in list_layers("mobilenet_v2")}
    assert layers["features.13.conv.0"] == (576, 14, 14)
    assert layers["classifier.1"] == (1000,)


def test_unknown_model_layer_and_missing_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="not a torchvision classifier.*mobilenet_v2"):
        load_model(ModelConfig(name="mobilenet_v9"), torch.device("cpu"))
    with pytest.raises(
        AtlasError, match=r"layer 'features\.99' not found.*blocks: features, features\.0.*atlas layers"
    ):
        load_model(ModelConfig(layer="features.99"), torch.device("cpu"))
    with pytest.raises(AtlasError, match="file .* not found"):
        load_model(ModelConfig(weights=str(tmp_path / "missing.pth")), torch.device("cpu"))
    with pytest.raises(AtlasError, match="choose one of: DEFAULT"):
        load_model(ModelConfig(weights="NOPE"), torch.device("cpu"))


def test_hub_weights_missing_gives_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(AtlasError, match=r"resnet18\.IMAGENET1K_V1 are not on this machine.*resnet18-"):
        load_model(ModelConfig(name="resnet18", layer="layer3", weights="IMAGENET1K_V1"), torch.device("cpu"))


def test_googlenet_inception4c_from_a_state_dict_file(tmp_path: Path) -> None:
    """The paper's setting: GoogLeNet weights saved in torchvision's layout (aux heads included)."""
    torch.manual_seed(0)
    reference = torchvision.models.googlenet(
        weights=None, aux_logits=True, transform_input=True, init_weights=True
    ).eval()
    path = tmp_path / "googlenet.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_model(ModelConfig(name="googlenet", weights=str(path), layer="inception4c"), torch.device("cpu"))
    assert loaded.layer_shape == (512, 14, 14)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        act, *cuts = loaded.trunk(x)
        expected = reference(x)
        expected = expected.logits if hasattr(expected, "logits") else expected
        torch.testing.assert_close(loaded.head(act, *cuts), expected, atol=1e-4, rtol=1e-4)


def test_weights_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(AtlasError, match="does not fit mobilenet_v2"):
        build_classifier("mobilenet_v2", str(path))
