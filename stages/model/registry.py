"""Model registry: a torchvision classifier name + weights -> a model cut at one layer.

Weights come from torchvision's own weights API, which reads
``$TORCH_HOME/hub/checkpoints/<file>`` before it would download. We check that file exists first
and refuse with a one-line error otherwise, so nothing is ever fetched at run time; the embedded
default (MobileNetV2 IMAGENET1K_V1) is placed there by ``stages.model.weights`` at setup. An explicit
state-dict path works for any architecture (e.g. GoogLeNet for the paper's ``inception4c``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import fx, nn

from stages.config import ModelConfig
from store.errors import AtlasError
from stages.model.layer_split import layer_shapes, split_at_layer

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Constructor arguments matching how torchvision's own checkpoints were trained; auxiliary
# classifiers are built so a torchvision state dict loads strictly, then dropped.
_ARCH_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


@dataclass
class LoadedModel:
    """A classifier ready for collection and rendering, on one device."""

    name: str
    weights: str
    weights_file: str
    weights_sha256: str
    module: nn.Module
    layer: str
    trunk: fx.GraphModule      # x -> (activation, *cuts); nothing above the layer
    head: fx.GraphModule       # (activation, *cuts) -> logits
    n_cuts: int
    layer_shape: tuple[int, int, int]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    device: torch.device

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> the model's input normalisation."""
        mean = torch.tensor(self.mean, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        return (images01 - mean) / std

    def identity(self) -> dict[str, object]:
        """What a store records (and checks) about the model."""
        return {"name": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "layer": self.layer, "layer_shape": list(self.layer_shape), "image_size": self.image_size,
                "mean": list(self.mean), "std": list(self.std)}


def available_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_name(name: str) -> None:
    if name not in available_models():
        raise AtlasError(f"model {name!r} is not a torchvision classifier; choose one of: {', '.join(available_models())}")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hub_checkpoint_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision's weights API looks before downloading."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def resolve_weights_enum(name: str, weights: str) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(name)
    if weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        choices = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise AtlasError(f"model.weights {weights!r} is neither a file nor a weights name of {name}; "
                         f"choose one of: {choices}, or pass a path to a state-dict file") from None


def _imagenet_categories(name: str, num_classes: int) -> list[str]:
    try:
        meta = torchvision.models.get_model_weights(name).DEFAULT.meta
        cats = list(meta.get("categories") or [])
    except (ValueError, AttributeError):
        cats = []
    if len(cats) != num_classes:
        cats = list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    return cats if len(cats) == num_classes else [f"class_{i}" for i in range(num_classes)]


def _drop_aux(model: nn.Module) -> None:
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


def build_classifier(name: str, weights: str) -> tuple[nn.Module, str, str, list[str]]:
    """Return (module in eval mode, weights file, its sha256, class names). Never downloads."""
    _check_name(name)
    path = Path(weights).expanduser()
    if path.suffix in {".pth", ".pt", ".bin", ".ckpt"} or path.exists():
        if not path.is_file():
            raise AtlasError(f"model.weights file {path} not found; pass an existing state-dict file")
        model = torchvision.models.get_model(name, weights=None, **_ARCH_KWARGS.get(name, {}))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise AtlasError(f"model.weights file {path} is not a torch state dict ({type(exc).__name__})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        aux_only = all(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in missing)
        if unexpected or (missing and not aux_only):
            bad = (missing or unexpected)[:3]
            raise AtlasError(f"model.weights file {path} does not fit {name} (e.g. keys {bad}); "
                             "pass weights saved from the same architecture")
        file, label = str(path), str(path)
    else:
        enum = resolve_weights_enum(name, weights)
        checkpoint = hub_checkpoint_path(enum)
        if not checkpoint.is_file():
            raise AtlasError(f"weights {name}.{enum.name} are not on this machine: put {checkpoint.name} in "
                             f"{checkpoint.parent} (torchvision's cache) or pass model.weights=/path/to/file.pth")
        kwargs = dict(_ARCH_KWARGS.get(name, {}))
        kwargs.pop("init_weights", None)
        model = torchvision.models.get_model(name, weights=enum, **kwargs)
        file, label = str(checkpoint), enum.name
    _drop_aux(model)
    model.eval()
    out_features = _num_classes(model)
    return model, file, label, _imagenet_categories(name, out_features)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000


def list_layers(name: str, image_size: int = 224) -> list[tuple[str, str, tuple[int, ...]]]:
    """All layer names with output shapes; needs no weights (the architecture alone)."""
    _check_name(name)
    kwargs = {k: v for k, v in _ARCH_KWARGS.get(name, {}).items() if k != "aux_logits"}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    _drop_aux(model)
    return layer_shapes(model, image_size)


def load_model(config: ModelConfig, device: torch.device) -> LoadedModel:
    """Build the classifier, cut it at ``config.layer``, move it to ``device`` (channels-last)."""
    model, file, label, classes = build_classifier(config.name, config.weights)
    shapes = layer_shapes(model, config.image_size)
    valid = [n for n, _, s in shapes if len(s) == 3]
    shape = next((s for n, _, s in shapes if n == config.layer), None)
    trunk, head, n_cuts = split_at_layer(model, config.layer, valid)
    if shape is None or len(shape) != 3:
        with torch.no_grad():
            act = trunk(torch.zeros(1, 3, config.image_size, config.image_size))[0]
        if act.dim() != 4:
            raise AtlasError(f"layer {config.layer!r} has output shape {tuple(act.shape[1:])}, not [C, H, W]; "
                             "choose a convolutional layer (see `atlas layers`)")
        shape = tuple(act.shape[1:])
    model = model.to(device=device, memory_format=torch.channels_last)
    trunk = trunk.to(device=device, memory_format=torch.channels_last)
    head = head.to(device=device, memory_format=torch.channels_last)
    return LoadedModel(
        name=config.name, weights=label, weights_file=file, weights_sha256=file_sha256(file), module=model,
        layer=config.layer, trunk=trunk, head=head, n_cuts=n_cuts, layer_shape=tuple(int(v) for v in shape),
        image_size=config.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=classes, device=device,
    )
