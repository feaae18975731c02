"""Any PyTorch classifier: ``model.name`` as an import path ``package.module:factory``.

The factory is a callable ``factory(weights: str | None)`` that returns either the classifier (an
``nn.Module`` mapping ``[B, 3, H, W]`` images to ``[B, classes]`` logits) or a mapping with the
module and what the pipeline should know about it:

``module``         the ``nn.Module`` (required)
``image_size``     the input side it was trained at (default: ``model.image_size``)
``mean``, ``std``  per-channel input normalisation of images in [0, 1] (default: ImageNet's)
``normalize``      a callable ``[B, 3, H, W] in [0, 1] -> model input``, instead of mean/std
``class_names``    one name per output (default: ImageNet's for 1000 outputs)
``weights_file``   the file the weights came from (its sha256 identifies the model in a store)
``fixed_size``     True when the model accepts only ``image_size`` inputs (icons are resized up to it)

``weights`` is ``model.weights`` as given (a name the factory understands, or a file path);
``None`` asks for the architecture only (``atlas layers`` lists layers without loading weights).
Nothing here downloads: a factory that needs a file says so in its own error.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from store.errors import AtlasError

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_KEYS = ("module", "image_size", "mean", "std", "normalize", "class_names", "weights_file", "fixed_size")


@dataclass
class FactoryModel:
    """What a factory returned, checked: the module plus its preprocessing and provenance."""

    module: nn.Module
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    normalize: Callable[[Tensor], Tensor] | None = None
    class_names: list[str] | None = None
    weights_file: str | None = None
    fixed_size: bool = False


def is_import_path(name: str) -> bool:
    """``package.module:factory`` (a torchvision model name has no colon)."""
    return ":" in name


def _import(module_name: str) -> Any:
    """Import ``module_name``; a module next to where the command runs is found too.

    ``python -m`` puts the working directory on ``sys.path`` but the ``atlas`` console script does
    not, so (as uvicorn and gunicorn do for their ``module:app`` paths) it is added when the
    first attempt cannot find the top-level package.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module_name.split(".")[0]
        if (
            exc.name != top
            or cwd in sys.path
            or not (Path(cwd) / top).exists()
            and not (Path(cwd) / f"{top}.py").exists()
        ):
            raise
        sys.path.insert(0, cwd)
        return importlib.import_module(module_name)


def resolve_factory(path: str) -> Callable[..., Any]:
    """Import ``package.module`` and return its callable ``factory``; one-line errors otherwise."""
    if not _PATH.match(path):
        raise AtlasError(
            f"model.name {path!r} is neither a torchvision classifier nor an import path "
            "'package.module:factory'; e.g. stages.model.factories:efficientnet_lite0"
        )
    module_name, attr = path.split(":")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise AtlasError(
            f"model.name {path!r}: cannot import {module_name} ({type(exc).__name__}: {exc}); "
            "install the package that provides it or fix the path"
        ) from None
    except Exception as exc:
        raise AtlasError(f"model.name {path!r}: importing {module_name} failed ({type(exc).__name__}: {exc})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise AtlasError(f"model.name {path!r}: module {module_name} has no attribute {attr!r}")
    if not callable(factory):
        raise AtlasError(f"model.name {path!r}: {attr} is a {type(factory).__name__}, not a callable factory")
    return factory


def _triple(value: Any, key: str, path: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise AtlasError(f"model.name {path!r}: the factory's {key} must be 3 numbers (R, G, B), got {value!r}")
    return out  # type: ignore[return-value]


def build_factory_model(path: str, weights: str | None) -> FactoryModel:
    """Call the factory of ``path`` with ``weights`` and check what it returned."""
    factory = resolve_factory(path)
    try:
        made = factory(weights)
    except AtlasError:
        raise
    except Exception as exc:
        raise AtlasError(
            f"model.name {path!r}: the factory failed with weights {weights!r} ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(made, nn.Module):
        made = {"module": made}
    if not isinstance(made, Mapping) or not isinstance(made.get("module"), nn.Module):
        raise AtlasError(
            f"model.name {path!r}: the factory returned {type(made).__name__}; return an nn.Module "
            "or a mapping with 'module' (see stages/model/custom.py)"
        )
    unknown = sorted(set(made) - set(_KEYS))
    if unknown:
        raise AtlasError(f"model.name {path!r}: the factory returned unknown keys {unknown}; known: {', '.join(_KEYS)}")
    out = FactoryModel(module=made["module"], fixed_size=bool(made.get("fixed_size", False)))
    if made.get("image_size") is not None:
        out.image_size = int(made["image_size"])
    if made.get("mean") is not None or made.get("std") is not None:
        out.mean, out.std = _triple(made.get("mean"), "mean", path), _triple(made.get("std"), "std", path)
    if made.get("normalize") is not None:
        if not callable(made["normalize"]):
            raise AtlasError(f"model.name {path!r}: the factory's normalize is not callable")
        out.normalize = made["normalize"]
    if made.get("class_names") is not None:
        out.class_names = [str(c) for c in made["class_names"]]
    if made.get("weights_file") is not None:
        out.weights_file = str(made["weights_file"])
    return out
