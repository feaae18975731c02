"""The `atlas render-unit` targets (channel, neuron, class, direction): parsed and rendered to a PNG.

Used by the `atlas render-unit` command (pipeline/commands/tools.py) and the Python API
(pipeline/api, which parses targets the same way). Targets (on ``model.layer`` unless they name a class):

- ``channel:N``          mean of channel N over space (lucid ``objectives.channel``)
- ``neuron:N[:y:x]``     channel N at (y, x), default the centre cell (lucid ``objectives.neuron``)
- ``class:NAME|INDEX``   the class logit before the softmax (the article's class atlases)
- ``direction:PATH.npy`` a ``[C]`` vector, ``mean_c(h * v)`` at the centre (lucid
  ``direction_neuron``); not whitened, since a lone vector comes without the store's S

Same engine and defaults as the render stage (Fourier image, reference transforms, Adam
``render.lr``), one image.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stages.config import Config
from stages.featurevis import Channel, ClassLogit, Direction, FourierImage, Neuron, Objective, layer_forward, render
from stages.model.registry import LoadedModel, load_model
from store.errors import AtlasError

log = logging.getLogger(__name__)

TARGET_HELP = "channel:N, neuron:N[:y:x], class:NAME_OR_INDEX or direction:PATH.npy"


def check_target(target: str) -> None:
    """The target's syntax (and a direction's file), before the model is loaded; one-line errors."""
    kind, _, rest = target.partition(":")
    parts = rest.split(":")
    ok = {
        "channel": rest.strip().lstrip("-").isdigit(),
        "neuron": len(parts) in (1, 3) and all(p.strip().lstrip("-").isdigit() for p in parts),
        "class": bool(rest.strip()),
        "direction": bool(rest.strip()),
    }.get(kind, False)
    if not ok:
        raise AtlasError(f"target {target!r} is not one of {TARGET_HELP}")
    if kind == "direction" and not Path(rest).is_file():
        raise AtlasError(f"target {target!r}: file {rest} not found; save a [C] vector with numpy.save")


def parse_target(target: str, model: LoadedModel) -> tuple[Objective, bool]:
    """``(objective, needs_logits)`` for a target string; one-line errors for bad ones."""
    kind, _, rest = target.partition(":")
    channels = model.layer_shape[0]
    try:
        if kind == "channel":
            return Channel(model.layer, _channel(rest, channels, target)), False
        if kind == "neuron":
            parts = rest.split(":")
            if len(parts) not in (1, 3):
                raise ValueError
            y, x = (int(parts[1]), int(parts[2])) if len(parts) == 3 else (None, None)
            return Neuron(model.layer, _channel(parts[0], channels, target), x=x, y=y), False
        if kind == "class":
            return ClassLogit(_class_index(rest, model.class_names, target)), True
        if kind == "direction":
            return Direction(model.layer, torch.as_tensor(_direction(Path(rest), channels, target))), False
    except ValueError:
        pass
    raise AtlasError(f"target {target!r} is not one of {TARGET_HELP}")


def _channel(text: str, channels: int, target: str) -> int:
    index = int(text)
    if not 0 <= index < channels:
        raise AtlasError(
            f"target {target!r}: channel {index} out of range; the layer has {channels} (0..{channels - 1})"
        )
    return index


def _class_index(text: str, names: list[str], target: str) -> int:
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < len(names):
            raise AtlasError(f"target {target!r}: class {index} out of range 0..{len(names) - 1}")
        return index
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    close = difflib.get_close_matches(text.lower(), lowered, n=3)
    hint = f"; close: {', '.join(names[lowered.index(c)] for c in close)}" if close else ""
    raise AtlasError(f"target {target!r}: no class named {text!r}{hint}")


def _direction(path: Path, channels: int, target: str) -> np.ndarray:
    if not path.is_file():
        raise AtlasError(f"target {target!r}: file {path} not found; save a [C] vector with numpy.save")
    vector = np.load(path, allow_pickle=False).astype(np.float32)
    if vector.shape != (channels,):
        raise AtlasError(f"target {target!r}: {path} holds shape {list(vector.shape)}; the layer needs [{channels}]")
    return vector


def render_unit(
    config: Config,
    target: str,
    out_png: Path,
    *,
    steps: int,
    size: int,
    seed: int,
    device: torch.device,
    model: LoadedModel | None = None,
) -> float:
    """Render ``target`` to ``out_png`` (``size`` px, ``steps`` steps); return the final objective.

    ``model`` skips reloading the classifier (it must match ``config.model``).
    """
    model = model if model is not None else load_model(config.model, device)
    objective, needs_logits = parse_target(target, model)
    with layer_forward(model.module, model.layer, normalize=model.normalize, with_logits=needs_logits) as forward:
        result = render(
            forward,
            objective,
            FourierImage(1, (size, size)),
            steps=steps,
            lr=config.render.lr,
            device=device,
            seed=seed,
            mixed_precision=config.render.mixed_precision,
        )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.images[0]).save(out_png)
    value = float(result.objective[0])
    log.info(
        "rendered %s to %s: %d steps, %d px, objective %.4g, %.1f s",
        target,
        out_png,
        steps,
        size,
        value,
        result.seconds,
    )
    return value
