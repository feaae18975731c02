"""Objectives: what a rendered image should maximise, one value per image.

An objective is a small value with ``__call__(acts) -> Tensor[B]`` over the named tensors a
forward returns (layer activations ``[B, C, h, w]``, or a transformer's ``[B, N, C]`` tokens read as
their patch grid (:mod:`.tokens`), ``"logits"`` ``[B, K]``). They compose like
lucent's: ``a + b``, ``2 * a``, ``a - b``, ``-a``, ``a / 2``. Each is batch-aware: a target given as
one value applies to every image, a target given as a length-B sequence (or a ``[B, C]`` matrix
of directions) gives image ``i`` its own target, so a batch of B directions renders B icons in
one forward/backward pass (docs/method.md §6, "one image per direction").

Values are computed in float32 even when the forward ran under autocast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stages.featurevis.errors import FeatureVisError
from stages.featurevis.tokens import spatial

Activations = Mapping[str, Tensor]
Target = int | Sequence[int] | Tensor

LOGITS = "logits"
# The cos term of AtlasDirection: the lucid notebook's, or the true cosine with the raw direction.
COSINE_MODES = ("lucid", "raw")


class Objective:
    """Base class: subclasses implement ``__call__``; arithmetic builds composite objectives."""

    def __call__(self, acts: Activations) -> Tensor:
        raise NotImplementedError

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((self, other))

    def __radd__(self, other: Objective | float) -> Objective:
        # Lets ``sum(objectives)`` start from 0.
        return self.__add__(other)

    def __neg__(self) -> Objective:
        return Scaled(self, -1.0)

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum((self, Scaled(other, -1.0)))

    def __mul__(self, factor: float | Tensor) -> Objective:
        if isinstance(factor, Objective):
            return NotImplemented
        return Scaled(self, factor)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        return Scaled(self, 1.0 / divisor)


@dataclass(frozen=True, eq=False)
class Sum(Objective):
    """Elementwise sum of objectives (each image's value is the sum of its parts)."""

    parts: tuple[Objective, ...]

    def __call__(self, acts: Activations) -> Tensor:
        total = self.parts[0](acts)
        for part in self.parts[1:]:
            total = total + part(acts)
        return total


@dataclass(frozen=True, eq=False)
class Scaled(Objective):
    """An objective times a scalar, or times a ``[B]`` tensor of per-image weights."""

    objective: Objective
    factor: float | Tensor

    def __call__(self, acts: Activations) -> Tensor:
        value = self.objective(acts)
        factor = self.factor
        if isinstance(factor, Tensor):
            factor = factor.to(device=value.device, dtype=value.dtype)
        return value * factor


def _layer(acts: Activations, name: str) -> Tensor:
    """The named tensor in float32; a token layer's ``[B, N, C]`` as its ``[B, C, g, g]`` patch grid
    (:mod:`.tokens`), so every position objective reads transformer tokens like conv cells."""
    if name not in acts:
        raise FeatureVisError(f"objective needs '{name}' but the forward returned only: {', '.join(acts) or 'nothing'}")
    return spatial(acts[name].float())


def _per_image(target: Target, batch: int, device: torch.device, what: str) -> Tensor:
    """A target as a ``[B]`` long tensor: one value broadcast, or one per image."""
    t = torch.as_tensor(target, dtype=torch.long)
    if t.ndim == 0:
        return t.expand(batch).to(device)
    if t.shape != (batch,):
        raise FeatureVisError(f"{what}: got {t.numel()} targets for a batch of {batch} images; give one or {batch}")
    return t.to(device)


def _check_index(idx: Tensor, size: int, what: str) -> None:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise FeatureVisError(f"{what} {idx.tolist()} out of range; the tensor has {size}")


def _position(t: Tensor, x: int | None, y: int | None) -> tuple[int, int]:
    """(x, y) with ``None`` meaning the centre cell ``(W // 2, H // 2)`` (lucid's default)."""
    h, w = t.shape[-2:]
    x = w // 2 if x is None else x
    y = h // 2 if y is None else y
    if not (0 <= x < w and 0 <= y < h):
        raise FeatureVisError(f"position (x={x}, y={y}) is outside the {h}x{w} layer")
    return x, y


@dataclass(frozen=True, eq=False)
class Neuron(Objective):
    """One unit: channel ``channel`` at (x, y) (lucid ``objectives.neuron``; default the centre)."""

    layer: str
    channel: Target
    x: int | None = None
    y: int | None = None

    def __call__(self, acts: Activations) -> Tensor:
        t = _layer(acts, self.layer)
        ch = _per_image(self.channel, t.shape[0], t.device, "neuron channel")
        _check_index(ch, t.shape[1], f"channel of layer '{self.layer}'")
        x, y = _position(t, self.x, self.y)
        return t[torch.arange(t.shape[0], device=t.device), ch, y, x]


@dataclass(frozen=True, eq=False)
class Channel(Objective):
    """A whole channel, mean over space (lucid ``objectives.channel``)."""

    layer: str
    channel: Target

    def __call__(self, acts: Activations) -> Tensor:
        t = _layer(acts, self.layer)
        ch = _per_image(self.channel, t.shape[0], t.device, "channel")
        _check_index(ch, t.shape[1], f"channel of layer '{self.layer}'")
        return t[torch.arange(t.shape[0], device=t.device), ch].mean(dim=(-2, -1))


@dataclass(frozen=True, eq=False)
class DeepDream(Objective):
    """The whole layer: mean of squared activations (lucid ``objectives.deepdream``)."""

    layer: str

    def __call__(self, acts: Activations) -> Tensor:
        t = _layer(acts, self.layer)
        return (t * t).flatten(1).mean(dim=1)


def _pick_class(scores: Tensor, label: Target) -> Tensor:
    """``scores[b, label_b]`` for every image b (one label for all, or one per image)."""
    k = _per_image(label, scores.shape[0], scores.device, "class")
    _check_index(k, scores.shape[1], "class")
    return scores[torch.arange(scores.shape[0], device=scores.device), k]


@dataclass(frozen=True, eq=False)
class ClassLogit(Objective):
    """A class logit, before the softmax (lucid ``objectives.channel("softmax2_pre_activation", k)``)."""

    label: Target
    key: str = LOGITS

    def __call__(self, acts: Activations) -> Tensor:
        return _pick_class(_layer(acts, self.key), self.label)


@dataclass(frozen=True, eq=False)
class ClassProbability(Objective):
    """A class probability, softmax over the logits."""

    label: Target
    key: str = LOGITS

    def __call__(self, acts: Activations) -> Tensor:
        logits = _layer(acts, self.key)
        return _pick_class(torch.softmax(logits, dim=1), self.label)


def _directions(vectors: Tensor | Sequence[Sequence[float]], whitening: Tensor | None) -> Tensor:
    """``[C]`` or ``[B, C]`` directions as a float32 ``[N, C]`` tensor, whitened ``v' = v S``."""
    v = torch.as_tensor(vectors, dtype=torch.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2:
        raise FeatureVisError(f"directions must be [C] or [B, C] (got shape {list(v.shape)})")
    if whitening is not None:
        s = torch.as_tensor(whitening, dtype=torch.float32)
        if s.shape != (v.shape[1], v.shape[1]):
            raise FeatureVisError(
                f"whitening matrix must be [C, C] = [{v.shape[1]}, {v.shape[1]}] (got {list(s.shape)})"
            )
        v = v @ s.to(v.device)
    return v


def _centre_vectors(t: Tensor, v: Tensor, x: int | None, y: int | None, layer: str) -> tuple[Tensor, Tensor]:
    """Activation at (x, y) ``[B, C]`` and the directions matched to the batch ``[B, C]``."""
    x, y = _position(t, x, y)
    h = t[:, :, y, x]
    if v.shape[1] != h.shape[1]:
        raise FeatureVisError(f"directions have {v.shape[1]} channels but layer '{layer}' has {h.shape[1]}")
    if v.shape[0] not in (1, h.shape[0]):
        raise FeatureVisError(
            f"got {v.shape[0]} directions for a batch of {h.shape[0]} images; give one or {h.shape[0]}"
        )
    return h, v.to(h.device).expand_as(h)


@dataclass(frozen=True, eq=False)
class Direction(Objective):
    """Activation at (x, y) dotted with a direction (lucid ``objectives.direction_neuron``).

    Like lucid, the "dot" is the mean over channels of ``h * v`` (the dot product divided by C),
    the same scale as the atlas objective's ``dot``.
    """

    layer: str
    vectors: Tensor
    x: int | None = None
    y: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "vectors", _directions(self.vectors, None))

    def __call__(self, acts: Activations) -> Tensor:
        h, v = _centre_vectors(_layer(acts, self.layer), self.vectors, self.x, self.y, self.layer)
        return (h * v).mean(dim=1)


@dataclass(frozen=True, eq=False)
class AtlasDirection(Objective):
    """The activation-atlas objective (docs/method.md §5; lucid notebook ``direction_neuron_cossim_S``).

    At the centre position (H // 2, W // 2), for activation ``h`` and whitened direction
    ``v' = v S``: ``dot = mean_c(h * v')``, ``cos = max(0.1, dot / (1e-4 + |h|))``, value
    ``dot * cos ** cos_power``. ``cos_power`` 4 is the whitened notebooks' value (recipe 2);
    ``whitening`` ``None`` means no whitening (S = identity), as production did for early layers.
    The 0.1 floor keeps a gradient when the image starts anti-aligned with the direction.

    ``cosine`` picks the ``cos`` term. ``"lucid"`` is the notebook's ``dot / (1e-4 + |h|)`` above: it
    is a cosine only up to the factor ``|v'| / C``, and with a whitened direction on the demo layer
    (|v'| ~ 190, C = 576) it sits at ~0.01-0.06 for the cell's own members, under the 0.1 floor,
    so the term is a constant and the objective degenerates to ``dot`` alone (measured: 72% of
    icons reach cos-sim 0.5 with their cell). ``"raw"`` is the true cosine of ``h`` with the
    **unwhitened** direction ``v``, the article's ``(h.v)^(p+1) / (|h||v|)^p`` shape applied to the
    cell's own direction: whitening still chooses what to amplify (``dot`` uses ``v'``) while the
    cosine keeps the icon on the cell (100% of the same icons reach 0.5; docs/render.md). ``"raw"``
    is the default here and in the render stage's parameters (``render.cosine``).
    """

    layer: str
    vectors: Tensor
    whitening: Tensor | None = None
    cos_power: float = 4.0
    x: int | None = None
    y: int | None = None
    cosine: str = "raw"
    # the unwhitened directions (the "raw" cosine's), set by __post_init__ before ``vectors`` is whitened
    raw: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.cos_power < 0:
            raise FeatureVisError(f"cos_power must be >= 0 (got {self.cos_power})")
        if self.cosine not in COSINE_MODES:
            raise FeatureVisError(f"render.cosine must be one of {', '.join(COSINE_MODES)} (got {self.cosine!r})")
        object.__setattr__(self, "raw", _directions(self.vectors, None))
        object.__setattr__(self, "vectors", _directions(self.vectors, self.whitening))

    def __call__(self, acts: Activations) -> Tensor:
        h, v = _centre_vectors(_layer(acts, self.layer), self.vectors, self.x, self.y, self.layer)
        dot = (h * v).mean(dim=1)
        # vector_norm's gradient is 0 (not NaN) at h = 0, e.g. an all-ReLU-dead centre cell.
        h_norm = torch.linalg.vector_norm(h, dim=1)
        if self.cosine == "raw":
            raw = self.raw.to(h.device).expand_as(h)
            cos = (h * raw).sum(dim=1) / (1e-4 + h_norm * torch.linalg.vector_norm(raw, dim=1))
        else:
            cos = dot / (1e-4 + h_norm)
        return dot * torch.clamp(cos, min=0.1) ** self.cos_power
