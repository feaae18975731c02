"""Model registry: a classifier (torchvision name or ``package.module:factory``) + weights -> a model cut at one layer.

Weights come from torchvision's own weights API, which reads
``$TORCH_HOME/hub/checkpoints/<file>`` before it would download. We check that file exists first
and refuse with a one-line error otherwise, so nothing is ever fetched at run time; the embedded
default (MobileNetV2 IMAGENET1K_V1) is placed there by ``stages.model.weights`` at setup. An explicit
state-dict path works for any architecture (e.g. GoogLeNet for the paper's ``inception4c``).

Any other PyTorch classifier comes in through an import path (:mod:`stages.model.custom`), e.g. the
shipped EfficientNet-Lite0 factory ``stages.model.factories:efficientnet_lite0``; it is cut, attributed
and rendered by the same code.

Token layers: a transformer block's ``[B, N, C]`` output (``vit_b_16``'s
``encoder.layers.encoder_layer_K``) is handled as the ``[C, g, g]`` grid of its patch tokens
(:mod:`stages.featurevis.tokens`): the trunk returns that grid (the class token, which has no
position, rides along as one more cut tensor) and the head takes the grid back, so sampling,
attribution and everything downstream treat it like a conv layer. A ViT only takes its own input
size, so icons are resized up to it before the model sees them (``LoadedModel.fixed_size``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from stages.config import ModelConfig
from stages.featurevis.tokens import leading_tokens, spatial, token_layout, tokens_from_grid
from stages.model.custom import FactoryModel, build_factory_model, is_import_path
from stages.model.layer_split import layer_shapes, split_at_layer
from store.errors import AtlasError

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
    trunk: nn.Module  # x -> (activation [B, C, H, W], *cuts); nothing above the layer
    head: fx.GraphModule  # (activation, *cuts) -> logits; an fx graph, so collect's head JVP can walk it
    n_cuts: int
    layer_shape: tuple[int, int, int]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str]
    device: torch.device
    tokens: int | None = None  # token layer: leading (non-patch) tokens; None: a conv layer
    fixed_size: bool = False  # the model takes only image_size inputs (a ViT): resize first
    normalize_fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # a factory's own normalisation

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> the model's input normalisation (and size, for a fixed-size model)."""
        if self.fixed_size and tuple(images01.shape[-2:]) != (self.image_size, self.image_size):
            images01 = F.interpolate(
                images01, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=False
            )
        if self.normalize_fn is not None:
            return self.normalize_fn(images01)
        mean = torch.tensor(self.mean, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        return (images01 - mean) / std

    def identity(self) -> dict[str, object]:
        """What a store records (and checks) about the model."""
        out: dict[str, object] = {
            "name": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "layer_shape": list(self.layer_shape),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.tokens is not None:  # only then: stores of conv layers keep their recorded identity
            out["tokens"] = {"leading": self.tokens, "grid": list(self.layer_shape[1:])}
        if self.normalize_fn is not None:
            out["normalize"] = getattr(self.normalize_fn, "__qualname__", type(self.normalize_fn).__name__)
        return out


def available_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_name(name: str) -> None:
    if is_import_path(name):
        return
    if name not in available_models():
        raise AtlasError(
            f"model {name!r} is not a torchvision classifier; choose one of: {', '.join(available_models())}"
        )


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
        raise AtlasError(
            f"model.weights {weights!r} is neither a file nor a weights name of {name}; "
            f"choose one of: {choices}, or pass a path to a state-dict file"
        ) from None


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
        setattr(model, "aux_logits", False)  # noqa: B010 - nn.Module's __setattr__ is typed for tensors and modules
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)


@dataclass
class _Built:
    """A classifier before it is cut: the module and what the registry knows about it."""

    module: nn.Module
    weights_file: str  # the file hashed into the store identity ("" when there is none)
    label: str  # how the weights are named in the store
    class_names: list[str]
    factory: FactoryModel | None = None


def state_sha256(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): identifies weights without a file."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def _build_factory(name: str, weights: str | None) -> _Built:
    made = build_factory_model(name, weights)
    module = made.module
    _drop_aux(module)
    module.eval()
    file = made.weights_file or (weights if weights and Path(weights).expanduser().is_file() else "")
    classes = made.class_names or _imagenet_categories("mobilenet_v2", _num_classes(module))
    if made.class_names is not None and len(made.class_names) != _num_classes(module):
        log.warning("%s: %d class names for %d outputs", name, len(made.class_names), _num_classes(module))
    return _Built(module, str(file), str(weights), classes, made)


def _build(name: str, weights: str) -> _Built:
    if is_import_path(name):
        return _build_factory(name, weights)
    module, file, label, classes = _build_torchvision(name, weights)
    return _Built(module, file, label, classes)


def build_classifier(name: str, weights: str) -> tuple[nn.Module, str, str, list[str]]:
    """Return (module in eval mode, weights file, its label, class names). Never downloads.

    ``name`` is a torchvision classifier or an import path ``package.module:factory``.
    """
    built = _build(name, weights)
    return built.module, built.weights_file, built.label, built.class_names


def _build_torchvision(name: str, weights: str) -> tuple[nn.Module, str, str, list[str]]:
    _check_name(name)
    path = Path(weights).expanduser()
    if path.suffix in {".pth", ".pt", ".bin", ".ckpt"} or path.exists():
        if not path.is_file():
            raise AtlasError(f"model.weights file {path} not found; pass an existing state-dict file")
        model = torchvision.models.get_model(name, weights=None, **_ARCH_KWARGS.get(name, {}))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AtlasError(f"model.weights file {path} is not a torch state dict ({type(exc).__name__})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        aux_only = all(k.startswith(("aux1.", "aux2.", "AuxLogits.")) for k in missing)
        if unexpected or (missing and not aux_only):
            bad = (missing or unexpected)[:3]
            raise AtlasError(
                f"model.weights file {path} does not fit {name} (e.g. keys {bad}); "
                "pass weights saved from the same architecture"
            )
        file, label = str(path), str(path)
    else:
        enum = resolve_weights_enum(name, weights)
        checkpoint = hub_checkpoint_path(enum)
        if not checkpoint.is_file():
            raise AtlasError(
                f"weights {name}.{enum.name} are not on this machine: put {checkpoint.name} in "
                f"{checkpoint.parent} (torchvision's cache) or pass model.weights=/path/to/file.pth"
            )
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
    if is_import_path(name):
        made = build_factory_model(name, None)
        return layer_shapes(made.module.eval(), made.image_size or image_size)
    kwargs = {k: v for k, v in _ARCH_KWARGS.get(name, {}).items() if k != "aux_logits"}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    _drop_aux(model)
    return layer_shapes(model, image_size)


class _GridTrunk(nn.Module):
    """A token layer's trunk as a conv trunk: ``x -> (patch grid [B, C, g, g], *cuts, leading tokens)``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, *cuts = self.trunk(x)
        return (spatial(tokens), *cuts, leading_tokens(tokens))


class _GridHead(nn.Module):
    """The head of a token layer fed the patch grid: ``(grid, *cuts, leading tokens) -> logits``.

    The leading tokens (the class token) are an input like the cuts: constant for the attribution,
    which perturbs one position of the grid only, exactly ``h . d logit / d h`` at that token.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, grid: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        *cuts, leading = rest
        # The fused attention kernels (nn.MultiheadAttention's inference fast path, the flash
        # scaled-dot-product kernel) have no forward-mode derivative, which the attribution's JVP
        # needs: this call runs the same function op by op (sdpa's math backend), and the fast-path
        # setting is restored however the call ends.
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with sdpa_kernel(SDPBackend.MATH):
                return self.head(tokens_from_grid(grid, leading), *cuts)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)


def grid_head_graph(head: nn.Module, n_inputs: int) -> fx.GraphModule:
    """``head`` as an fx graph of one opaque call: the form the collect stage's head JVP walks.

    A graph walker that knows conv-net operations (stages/collect/attribution.py) reaches this
    node and differentiates it as a whole with ``torch.func.jvp``.
    """
    graph = fx.Graph()
    inputs = [graph.placeholder("activation")] + [graph.placeholder(f"cut_{i}") for i in range(n_inputs - 1)]
    graph.output(graph.call_module("token_head", tuple(inputs)))
    root = nn.Module()
    root.token_head = head
    return fx.GraphModule(root, graph, "TokenGridHead")


def is_fixed_size(module: nn.Module) -> bool:
    """Whether the model refuses inputs of another size than it was built for (torchvision's ViT asserts it)."""
    return isinstance(module, torchvision.models.VisionTransformer)


def _layer_kind(shape: tuple[int, ...]) -> str | None:
    """``conv`` for [C, H, W], ``tokens`` for a [N, C] patch-token layer, None for anything else."""
    if len(shape) == 3:
        return "conv"
    if len(shape) == 2 and token_layout(shape[0]) is not None:
        return "tokens"
    return None


def _preprocessing(
    built: _Built, config: ModelConfig
) -> tuple[tuple[float, float, float], tuple[float, float, float], Callable[[torch.Tensor], torch.Tensor] | None, bool]:
    made = built.factory
    fixed = is_fixed_size(built.module) or bool(made and made.fixed_size)
    wanted = made.image_size if made is not None else None
    if wanted is None and fixed:  # torchvision's ViT knows its own size
        wanted = getattr(built.module, "image_size", None)
    if wanted is not None and int(wanted) != config.image_size:
        raise AtlasError(
            f"model {config.name} takes {int(wanted)} px inputs but model.image_size is "
            f"{config.image_size}; set model.image_size={int(wanted)}"
        )
    mean = made.mean if made and made.mean else IMAGENET_MEAN
    std = made.std if made and made.std else IMAGENET_STD
    return mean, std, (made.normalize if made else None), fixed


def load_model(config: ModelConfig, device: torch.device) -> LoadedModel:
    """Build the classifier, cut it at ``config.layer``, move it to ``device`` (channels-last).

    ``config.layer`` is a conv layer ([C, H, W] output) or a token layer ([N, C], the patch grid
    plus a class token; see the module docstring).
    """
    built = _build(config.name, config.weights)
    model = built.module
    mean, std, normalize_fn, fixed = _preprocessing(built, config)
    shapes = layer_shapes(model, config.image_size)
    valid = [n for n, _, s in shapes if _layer_kind(s) is not None]
    shape = next((s for n, _, s in shapes if n == config.layer), None)
    trunk: nn.Module
    head: fx.GraphModule
    trunk, head, n_cuts = split_at_layer(model, config.layer, valid)
    if shape is None or _layer_kind(shape) is None:
        with torch.no_grad():
            act = trunk(torch.zeros(1, 3, config.image_size, config.image_size))[0]
        shape = tuple(act.shape[1:])
        if _layer_kind(shape) is None:
            raise AtlasError(
                f"layer {config.layer!r} has output shape {shape}, neither [C, H, W] nor [N, C] patch "
                "tokens; choose a convolutional or transformer-block layer (see `atlas layers`)"
            )
    tokens = None
    if _layer_kind(shape) == "tokens":
        tokens, side = token_layout(shape[0])  # type: ignore[misc]
        shape = (shape[1], side, side)
        trunk, head, n_cuts = _GridTrunk(trunk), grid_head_graph(_GridHead(head), n_cuts + 2), n_cuts + 1
    # device, then layout (one call with both works too, but torch's stubs type only one at a time)
    model = model.to(device).to(memory_format=torch.channels_last)
    trunk = trunk.to(device).to(memory_format=torch.channels_last)
    head = head.to(device).to(memory_format=torch.channels_last)
    sha = file_sha256(built.weights_file) if built.weights_file else state_sha256(model)
    return LoadedModel(
        name=config.name,
        weights=built.label,
        weights_file=built.weights_file,
        weights_sha256=sha,
        module=model,
        layer=config.layer,
        trunk=trunk,
        head=head,
        n_cuts=n_cuts,
        layer_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        image_size=config.image_size,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        class_names=built.class_names,
        device=device,
        tokens=tokens,
        fixed_size=fixed,
        normalize_fn=normalize_fn,
    )
