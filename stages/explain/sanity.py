"""Sanity checks for saliency methods (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

A map that explains the *model* must change when the model's weights are destroyed. Two tests:

- **cascading model randomization** (their §3.1): re-initialise the weights block by block from
  the top (logits) down, cumulatively, and after each step compare every method's map of the same
  image and class with the map of the trained model. They report the Spearman rank correlation of
  the absolute maps (their Fig. 2 and 4: gradient and Grad-CAM maps decorrelate quickly, guided
  backprop stays nearly unchanged down to the lowest layers);
- **class randomization**: the map of the predicted class against the map of a random other
  class on the trained model. Adebayo et al.'s *data* randomization test retrains the model on
  permuted labels, which is training, out of scope here; the class test asks the cheaper half of
  that question (is the map about the label at all?) and fails for the same class-insensitive
  methods (Nie et al., 2018, show guided backprop and the deconvnet are class-insensitive).

A method *fails* the model test when its rank correlation with the trained map, averaged over the
cascade's steps, stays above ``sanity.threshold`` (the maps "barely change" as the model is
destroyed; the last step alone would let a method pass that ignores everything but the first
layer), and the class test when its correlation between the two classes is above it. Randomization works on a ``copy.deepcopy`` of the module: the loaded
model, and the weights file it came from, are never written (tests check the file's sha256).
Block order: the module's children, registration order (which for torchvision classifiers is
execution order), ``nn.Sequential`` / ``nn.ModuleList`` containers expanded one level at a
time; blocks without parameters are skipped. Each block's modules are re-initialised with their
own ``reset_parameters`` (PyTorch's default initialisers; BatchNorm back to identity statistics)
under a seeded, forked RNG, so the caller's random state is untouched.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from stages.explain import attribution as A
from stages.explain.cam import CamCheck, cam_layer
from stages.explain.methods import MethodSettings, method_maps

if TYPE_CHECKING:
    from stages.config import Config
    from stages.model.registry import LoadedModel

log = logging.getLogger(__name__)


def blocks(module: nn.Module) -> list[str]:
    """The module's parameter-holding blocks in forward order (see the module docstring)."""
    out: list[str] = []

    def walk(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            full = f"{prefix}{name}"
            if type(child) in (nn.Sequential, nn.ModuleList):
                walk(full + ".", child)
            elif any(True for _ in child.parameters()):
                out.append(full)

    walk("", module)
    return out


def randomize_block(module: nn.Module, block: str, seed: int) -> int:
    """Re-initialise every submodule of ``block`` in place (``reset_parameters``); returns how many.

    Call it on a copy (:func:`randomized_copies`), never on a loaded model.
    """
    target = module.get_submodule(block)
    count = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in target.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                reset_stats = getattr(sub, "reset_running_stats", None)
                if callable(reset_stats):
                    reset_stats()
                count += 1
    return count


def randomized_copies(module: nn.Module, order: list[str], seed: int) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(block, model)`` after randomizing each block of ``order`` in turn, cumulatively, on
    one deep copy of ``module`` (the original is never touched)."""
    copy_ = copy.deepcopy(module).eval()
    for k, block in enumerate(order):
        randomize_block(copy_, block, seed + k)
        yield block, copy_


def rank_correlation(a: Tensor | NDArray, b: Tensor | NDArray) -> float:
    """Spearman rank correlation of two maps' absolute values (Adebayo et al.'s "absolute" variant);
    0 when either map is constant (no ranking to compare)."""
    from scipy.stats import spearmanr

    x = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    y = np.abs(np.asarray(b, dtype=np.float64)).ravel()
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


@dataclass
class SanityReport:
    """Rank correlations per randomization step and method (trained model vs randomized)."""

    image: str
    target_class: int
    target_name: str
    random_class: int
    random_name: str
    methods: list[str]
    steps: list[str]  # blocks randomized, top first (cumulative)
    cascade: dict[str, list[float]] = field(default_factory=dict)  # method -> one value per step
    class_randomization: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.5
    skipped: dict[str, str] = field(default_factory=dict)
    maps: dict[str, list[NDArray[np.float32]]] = field(default_factory=dict)  # method -> trained + each step

    def verdicts(self) -> dict[str, dict[str, bool]]:
        """Per method: does it pass each test (mean correlation over the cascade <= threshold; the
        correlation between the two classes <= threshold)?"""
        out = {}
        for m in self.methods:
            model_ok = bool(self.cascade.get(m)) and self.mean_correlation(m) <= self.threshold
            class_ok = m in self.class_randomization and self.class_randomization[m] <= self.threshold
            out[m] = {"model_randomization": model_ok, "class_randomization": class_ok}
        return out

    def mean_correlation(self, method: str) -> float:
        """The method's rank correlation with the trained map, averaged over the cascade's steps."""
        values = [v for v in self.cascade.get(method, []) if v == v]
        return float(np.mean(values)) if values else float("nan")

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "class": {"index": self.target_class, "name": self.target_name},
            "random_class": {"index": self.random_class, "name": self.random_name},
            "methods": self.methods,
            "threshold": self.threshold,
            "steps": self.steps,
            "cascade_rank_correlation": {m: [_r(v) for v in vals] for m, vals in self.cascade.items()},
            "cascade_mean_rank_correlation": {m: _r(self.mean_correlation(m)) for m in self.methods},
            "class_randomization_rank_correlation": {m: _r(v) for m, v in self.class_randomization.items()},
            "verdicts": self.verdicts(),
            "skipped": self.skipped,
        }


def _r(value: float) -> float | None:
    """A correlation for JSON: 4 decimals, NaN (a map that could not be made) as null."""
    return None if value != value else round(float(value), 4)


def run_checks(
    net: A.Net,
    image: Tensor,
    image_name: str,
    class_names: list[str],
    methods: list[str],
    settings: MethodSettings,
    order: list[str],
    seed: int,
    threshold: float,
    keep_maps: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SanityReport:
    """Both tests on one image (``[3, H, W]`` in [0, 1]) for its top-1 class (see the module docstring).

    ``order`` is the cascade, top block first; ``keep_maps`` keeps every step's maps (for the figure).
    """
    with torch.no_grad():
        logits = net(image[None]).float()[0]
    top = int(logits.argmax())
    rng = np.random.default_rng(seed)
    other = int(rng.choice([k for k in range(len(logits)) if k != top]))
    trained_cam = cam_layer(net.module)
    trained = method_maps(net, image, [top, other], methods, settings, trained_cam)
    report = SanityReport(
        image=image_name,
        target_class=top,
        target_name=class_names[top],
        random_class=other,
        random_name=class_names[other],
        methods=[m for m in methods if m in trained.maps],
        steps=list(order),
        threshold=threshold,
        skipped=dict(trained.skipped),
    )
    for m in report.methods:
        report.class_randomization[m] = rank_correlation(trained.maps[m][0], trained.maps[m][1])
        report.cascade[m] = []
        if keep_maps:
            report.maps[m] = [trained.maps[m][0].numpy()]
    for k, (block, model) in enumerate(randomized_copies(net.module, order, seed)):
        randomized = A.Net(model, net.normalize)
        maps = method_maps(randomized, image, [top], report.methods, settings, _same_layers(trained_cam, model))
        for m in report.methods:
            value = rank_correlation(trained.maps[m][0], maps.maps[m][0]) if m in maps.maps else float("nan")
            report.cascade[m].append(value)
            if keep_maps and m in maps.maps:
                report.maps[m].append(maps.maps[m][0].numpy())
        log.info("randomized through %s: %s", block, {m: round(report.cascade[m][-1], 3) for m in report.methods})
        if progress is not None:
            progress(k + 1, len(order))
    return report


def _same_layers(trained: CamCheck, model: nn.Module) -> CamCheck:
    """The trained model's CAM layer, with the (possibly randomized) copy's current linear weights."""
    if trained.spec is None:
        return trained
    from stages.explain.cam import CamSpec

    linear = model.get_submodule(trained.spec.linear)
    if not isinstance(linear, nn.Linear):  # cam_layer only ever names an nn.Linear
        raise TypeError(f"{trained.spec.linear} is a {type(linear).__name__}, not the CAM's linear layer")
    spec = CamSpec(
        layer=trained.spec.layer,
        linear=trained.spec.linear,
        weight=linear.weight.detach(),
        bias=linear.bias.detach() if linear.bias is not None else None,
    )
    return CamCheck(spec, trained.reason)


def format_table(report: SanityReport) -> str:
    """The printed table: one row per method, the rank correlation after selected steps."""
    steps = report.steps
    picks = sorted({0, len(steps) // 4, len(steps) // 2, (3 * len(steps)) // 4, len(steps) - 1}) if steps else []
    head = (
        f"{'method':18s} {'class rand.':>11s} "
        + " ".join(f"{'->' + steps[k]:>14s}" for k in picks)
        + f" {'cascade mean':>12s}  verdict"
    )
    lines = [
        f"{report.image}: class {report.target_class} {report.target_name!r} vs random class "
        f"{report.random_class} {report.random_name!r}; Spearman rank correlation of |map| with the trained "
        f"model's map (fail: > {report.threshold})",
        head,
    ]
    verdicts = report.verdicts()
    for m in report.methods:
        values = " ".join(f"{report.cascade[m][k]:14.3f}" for k in picks)
        v = verdicts[m]
        verdict = ("pass" if v["model_randomization"] else "FAIL model") + (
            ", pass class" if v["class_randomization"] else ", FAIL class"
        )
        lines.append(
            f"{m:18s} {report.class_randomization[m]:11.3f} {values} {report.mean_correlation(m):12.3f}  {verdict}"
        )
    for m, why in report.skipped.items():
        lines.append(f"{m:18s} skipped: {why}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SanityResult:
    reports: list[SanityReport]
    out: Path
    figure: Path | None
    seconds: float


def _write_report(
    out: Path, model: LoadedModel, settings: MethodSettings, order: list[str], reports: list[SanityReport]
) -> Path:
    """Write the JSON report to ``out`` through a hidden temporary file renamed into place, so a
    reader never sees half a report; strict JSON (no NaN), since the tests' numbers must parse anywhere."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": {"name": model.name, "weights": model.weights, "weights_sha256": model.weights_sha256},
        "grad_cam_layer": settings.grad_cam_layer,
        "blocks": order,
        "images": [r.to_json() for r in reports],
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False))
    tmp.replace(out)
    return out


def run(
    config: Config,
    images: list[str],
    device: torch.device,
    *,
    model: LoadedModel | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SanityResult:
    """``atlas sanity-check``: both tests on each image; the JSON report (``sanity.out``) and, for the
    first image, the figure of the maps per step (``sanity.figure``)."""
    import time

    from stages.explain.methods import grad_cam_layer
    from stages.explain.stage import load_photo, model_input
    from stages.model.registry import load_model

    t0 = time.perf_counter()
    s, e = config.sanity, config.explain
    model = model if model is not None else load_model(config.model, device)
    net = A.Net(model.module, model.normalize)
    order = blocks(model.module)[::-1]
    order = order[: s.blocks] if s.blocks else order
    settings = MethodSettings(
        batch_size=e.batch_size,
        window=e.occlusion_window,
        stride=e.occlusion_stride,
        baseline=e.occlusion_baseline,
        grad_cam_layer=grad_cam_layer(e.grad_cam_layer, cam_layer(model.module), model.layer),
    )
    reports, figure = [], None
    for k, image in enumerate(images):
        photo = load_photo(image, config)
        report = run_checks(
            net,
            model_input(photo, device),
            str(image),
            model.class_names,
            list(s.methods),
            settings,
            order,
            s.seed,
            s.threshold,
            keep_maps=(k == 0 and s.figure is not None),
            progress=progress,
        )
        reports.append(report)
        if k == 0 and s.figure:
            from stages.explain.plots import sanity_figure

            figure = sanity_figure(np.asarray(photo), report, Path(s.figure))
    out = _write_report(Path(s.out), model, settings, order, reports)
    return SanityResult(reports=reports, out=out, figure=figure, seconds=time.perf_counter() - t0)
