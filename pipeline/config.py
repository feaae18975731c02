"""The one typed configuration object, loaded from ``params.yaml``.

Every tunable number of every stage lives here (and in ``params.yaml``, which DVC tracks per
stage), never as a constant inside a stage. Defaults follow the "production" column of
``shared/REFERENCE.md`` unless a field's description says otherwise.

Loading validates types and ranges and turns any problem into a one-line :class:`AtlasError`
that names the file and the parameter. ``section.key=value`` overrides (the CLI's ``--set`` and
its per-field flags) are applied before validation, so they are checked the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import AtlasError

DEFAULT_PARAMS = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the images come from and where the store lives."""

    source: str = Field("data/demo_photos", description="ImageFolder tree, flat folder, or a text file listing image paths")
    store: str = Field("data/store.zarr", description="the zarr store every stage reads and writes")
    atlas: str = Field("data/atlas", description="folder the exported atlas (viewer + tiles) is written to")


class ModelConfig(_Section):
    """Which classifier and which layer the atlas maps."""

    name: str = Field("mobilenet_v2", description="a torchvision classifier name (mobilenet_v2, googlenet, resnet50, ...)")
    weights: str = Field(
        "IMAGENET1K_V1",
        description="torchvision weights enum name (DEFAULT, IMAGENET1K_V1, ...) or a path to a state-dict file",
    )
    layer: str = Field(
        "features.13.conv.0",
        description="module name whose output is mapped; `atlas layers MODEL` lists them",
    )
    image_size: int = Field(224, gt=15, description="input side in pixels (the reference resized to 224x224)")


class CollectConfig(_Section):
    """Sampling activations (REFERENCE.md section 1) and attributions (section 2)."""

    views_per_image: int = Field(1, ge=1, description="deterministic random crops per image (1 = the whole image)")
    view_scale: tuple[float, float] = Field((0.25, 1.0), description="min/max fraction of the image area a view covers")
    positions_per_image: int = Field(1, ge=1, description="random spatial positions sampled per view (reference: 1)")
    border: int = Field(1, ge=0, description="spatial border cells excluded from sampling (the article avoided edges)")
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0, description="DataLoader decoding processes")
    rows_per_chunk: int = Field(4096, ge=1, description="store rows (samples) per zarr chunk; also the resumable unit")
    dtype: Literal["float16", "float32"] = "float16"
    head: bool = Field(True, description="run the layers above for logits and attributions (off: activations only)")
    top_k: int = Field(20, ge=1, description="attributed classes stored per sample (indices + values)")
    top_predictions: int = Field(5, ge=1)
    max_pixels: int = Field(89_478_485, ge=1, description="images larger than this are skipped (decompression bombs)")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")

    @model_validator(mode="after")
    def _check_scale(self) -> "CollectConfig":
        lo, hi = self.view_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"view_scale must satisfy 0 < min <= max <= 1 (got {list(self.view_scale)})")
        return self


class ReduceConfig(_Section):
    """2-D layout (REFERENCE.md section 3): production UMAP 50 / 0.05 / cosine."""

    method: Literal["umap", "tsne", "pca"] = "umap"
    n_neighbors: int = Field(50, ge=2)
    min_dist: float = Field(0.05, ge=0.0)
    metric: Literal["cosine", "euclidean"] = "cosine"
    n_epochs: int | None = Field(None, ge=1, description="None: umap-learn's default for the fitted size")
    init: Literal["pca", "spectral", "random"] = "pca"
    fit_samples: int = Field(200_000, ge=100, description="UMAP is fitted on at most this many samples; the rest are placed")
    pca_dims: int | None = Field(64, ge=2, description="PCA before the neighbour search (None: off)")
    deterministic: bool = Field(True, description="seeded, single-threaded UMAP: identical layouts run to run")
    seed: int = 0
    clip_percentiles: tuple[float, float] = (1.0, 99.0)
    margin: float = Field(0.1, ge=0.0, description="margin added around the clipped layout before rescaling to [0, 1]")
    tsne_perplexity: float = Field(30.0, gt=0.0, description="t-SNE only (method: tsne); sklearn's default")
    place_index: Literal["auto", "flat", "ivf"] = Field(
        "auto", description="faiss index placing the unfitted rows: exact flat, or IVF (auto: IVF from 20k fitted rows)"
    )
    place_nprobe: int = Field(16, ge=1, description="IVF lists searched per placed row (16: recall@1 0.999 measured)")


class GridConfig(_Section):
    """Zoom levels as separate binnings (REFERENCE.md section 4)."""

    levels: list[int] = Field([20, 40, 80, 160], min_length=1)
    min_count: int = Field(5, ge=0, description="cells with at most this many samples are dropped (recipe: > 5)")
    top_classes: int = Field(5, ge=1)
    ridge: float = Field(1e-3, ge=0.0, description="whitening ridge, relative to the mean eigenvalue")


class RenderConfig(_Section):
    """Feature visualization of every cell (REFERENCE.md sections 5-6)."""

    size: int = Field(80, ge=8, description="icon side in pixels (production: 80)")
    steps: int = Field(256, ge=1, description="optimisation steps (production: 1024; smaller for the CPU demo)")
    attempts: int = Field(1, ge=1, description="attempts per icon, the best final objective kept (production: 4)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0.0)
    cos_power: float = Field(4.0, ge=0.0, description="p in dot * cos^p (whitened notebooks: 4)")
    whiten: bool = True
    seed: int = 0
    device: str = "auto"
    levels: list[int] | None = Field(
        None, description="grid levels to render (None: every grid level); the CPU demo renders the coarse ones"
    )
    mixed_precision: bool = Field(False, description="CUDA autocast for the render (bfloat16 on Ampere+); CPU ignores it")


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    collect: CollectConfig = CollectConfig()
    reduce: ReduceConfig = ReduceConfig()
    grid: GridConfig = GridConfig()
    render: RenderConfig = RenderConfig()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AtlasError(f"{origin}: cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``collect.batch_size=64`` -> ("collect.batch_size", 64); values are parsed as YAML."""
    if "=" not in text:
        raise AtlasError(f"--set {text!r}: expected section.key=value, e.g. collect.batch_size=64")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        section = first["loc"][0] if len(first["loc"]) > 1 else None
        model = Config.model_fields[section].annotation if section in Config.model_fields else Config
        known = ", ".join(model.model_fields) if hasattr(model, "model_fields") else ""
        msg = f"unknown parameter; known here: {known}"
    shown = first.get("input")
    extra = f" (got {shown!r})" if "input" in first and not isinstance(shown, dict) and first["type"] != "extra_forbidden" else ""
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {where}: {msg}{extra}{more}"


def load_config(path: str | Path | None = DEFAULT_PARAMS, overrides: list[str] | None = None) -> Config:
    """Read ``params.yaml`` (missing file: all defaults), apply overrides, validate."""
    tree: dict[str, Any] = {}
    origin = str(path) if path is not None else "defaults"
    if path is not None and Path(path).exists():
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise AtlasError(f"{path}:{where} is not valid YAML; fix the syntax") from None
        if not isinstance(loaded, dict):
            raise AtlasError(f"{path}: expected a mapping of sections (data, model, collect, ...)")
        tree = loaded
    elif path is not None and Path(path) != DEFAULT_PARAMS:
        raise AtlasError(f"{path}: parameters file not found; pass an existing --params file")
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value, origin=f"--set {item}")
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise AtlasError(_format_validation_error(err, origin)) from None
