"""The one typed configuration object: every stage's parameters as typed, validated sections.

Every tunable number of every stage lives here (and in ``params.yaml``, which DVC tracks per
stage), never as a constant inside a stage. Defaults follow the article's "production"
settings (``docs/method.md``) unless a field's description says otherwise.

Loading (``pipeline/params.py``) validates types and ranges and turns any problem into a one-line
error that names the file and the parameter. ``section.key=value`` overrides (the CLI's ``--set`` and
its per-field flags) are applied before validation, so they are checked the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the images come from and where the store lives."""

    source: str = Field(
        "data/demo_photos",
        min_length=1,
        description="ImageFolder tree, flat folder, tar shards (folder, .tar or "
        "pattern shards-{000..009}.tar), a saved Hugging Face dataset, or a text file listing image paths",
    )
    store: str = Field("data/store.zarr", min_length=1, description="the zarr store every stage reads and writes")
    atlas: str = Field(
        "data/atlas", min_length=1, description="folder the exported atlas (viewer + tiles) is written to"
    )
    labels: str | None = Field(
        None,
        description="labels for a folder of images: CSV path,label, LOC_val_solution.csv or "
        "ILSVRC2012_validation_ground_truth.txt (meta.mat beside it); docs/collect.md",
    )
    image_column: str = Field("image", description="image column of a saved Hugging Face dataset")
    label_column: str = Field("label", description="label column of a saved Hugging Face dataset ('' or absent: none)")
    max_images: int | None = Field(
        None, ge=1, description="collect a seeded, class-balanced draw of at most this many images (None: all)"
    )
    per_class: int | None = Field(None, ge=1, description="at most this many images of each label in that draw")


class ModelConfig(_Section):
    """Which classifier and which layer the atlas maps."""

    name: str = Field(
        "mobilenet_v2", description="a torchvision classifier name (mobilenet_v2, googlenet, resnet50, ...)"
    )
    weights: str = Field(
        "IMAGENET1K_V1",
        description="torchvision weights enum name (DEFAULT, IMAGENET1K_V1, ...) or a path to a state-dict file",
    )
    layer: str = Field(
        "features.17.conv.0",
        description="module name whose output is mapped (960 ch, 7x7, the mixed5b analogue; features.13.conv.0 is "
        "the mixed4c analogue, see README); `atlas layers MODEL` lists them",
    )
    image_size: int = Field(224, gt=15, description="input side in pixels (the reference resized to 224x224)")


class CollectConfig(_Section):
    """Sampling activations (docs/method.md §1) and attributions (§2)."""

    views_per_image: int = Field(
        12, ge=1, description="deterministic random crops per image (1 = the whole image; the demo's few photos: 12)"
    )
    view_scale: tuple[float, float] = Field((0.25, 1.0), description="min/max fraction of the image area a view covers")
    positions_per_image: int = Field(3, ge=1, description="random spatial positions sampled per view (reference: 1)")
    border: int = Field(1, ge=0, description="spatial border cells excluded from sampling (the article avoided edges)")
    image_margin: float | None = Field(
        None,
        ge=0.0,
        lt=0.5,
        description="off (null): positions drawn over the layer's cells (minus border); a fraction m: positions "
        "drawn in image coordinates, uniform over [m, 1 - m)^2 of the view, and mapped to the layer's "
        "own grid, so stores of other layers or models with the same seed sample the same image "
        "locations (atlas align; border is then not used)",
    )
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(2, ge=0, description="DataLoader decoding processes")
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="niceness added to the decoding processes: on a machine whose cores the model's threads "
        "already fill, decoding runs in their gaps instead of stalling them (docs/collect.md)",
    )
    rows_per_chunk: int = Field(4096, ge=1, description="store rows (samples) per zarr chunk; also the resumable unit")
    dtype: Literal["float16", "float32"] = "float16"
    head: bool = Field(True, description="run the layers above for logits and attributions (off: activations only)")
    top_k: int = Field(20, ge=1, description="attributed classes stored per sample (indices + values)")
    top_predictions: int = Field(5, ge=1)
    max_pixels: int = Field(89_478_485, ge=1, description="images larger than this are skipped (decompression bombs)")
    jpeg_draft: bool = Field(
        False,
        description="decode JPEGs at least 2x larger than needed at 1/2-1/8 scale (Pillow draft mode; "
        "no view is upsampled); docs/collect.md",
    )
    view0: Literal["resize", "eval"] = Field(
        "resize",
        description="view 0's transform: resize = the whole image squashed to image_size squared (the paper's "
        "reference collection); eval = the weights' evaluation transform, short side resized to R "
        "(torchvision's declared resize, else 256/224 x image_size) then centre-cropped to image_size; "
        "recorded in the store (docs/collect.md)",
    )
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")

    @model_validator(mode="after")
    def _check_scale(self) -> CollectConfig:
        lo, hi = self.view_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"view_scale must satisfy 0 < min <= max <= 1 (got {list(self.view_scale)})")
        return self


class ReduceConfig(_Section):
    """2-D layout (docs/method.md §3): production UMAP 50 / 0.05 / cosine."""

    method: Literal["umap", "tsne", "pca"] = "umap"
    n_neighbors: int = Field(50, ge=2)
    min_dist: float = Field(0.05, ge=0.0)
    metric: Literal["cosine", "euclidean"] = "cosine"
    n_epochs: int | None = Field(None, ge=1, description="None: umap-learn's default for the fitted size")
    init: Literal["pca", "spectral", "random"] = "pca"
    fit_samples: int = Field(
        200_000, ge=100, description="UMAP is fitted on at most this many samples; the rest are placed"
    )
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
    knn: Literal["auto", "exact", "nndescent"] = Field(
        "auto",
        description="UMAP's neighbour graph: exact (faiss; nothing to compile) or umap-learn's NN-descent "
        "(approximate; numba compiles it in every process); auto: exact below 50k fitted rows",
    )


class GridConfig(_Section):
    """Zoom levels as separate binnings (docs/method.md §4)."""

    levels: list[int] = Field(
        [10, 20, 40, 80, 160], min_length=1, description="cells per side of each level (production: 20, 40, 80, 160)"
    )
    min_count: int = Field(5, ge=0, description="cells with at most this many samples are dropped (recipe: > 5)")
    top_classes: int = Field(5, ge=1)
    ridge: float = Field(1e-3, ge=0.0, description="whitening ridge, relative to the mean eigenvalue")


class RenderConfig(_Section):
    """Feature visualization of every cell (docs/method.md §5-§6)."""

    size: int = Field(80, ge=8, description="icon side in pixels (production: 80)")
    steps: int = Field(128, ge=1, description="optimisation steps (production: 1024; the CPU demo: 128)")
    attempts: int = Field(1, ge=1, description="attempts per icon, the best final objective kept (production: 4)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0.0)
    cos_power: float = Field(4.0, ge=0.0, description="p in dot * cos^p (whitened notebooks: 4)")
    cosine: Literal["raw", "lucid"] = Field(
        "raw",
        description="cos term: true cosine with the raw cell direction, or the lucid notebook's dot/|h| (docs/render.md)",
    )
    whiten: bool = True
    seed: int = 0
    device: str = "auto"
    levels: list[int] | None = Field(
        [10, 20],
        min_length=1,
        description="grid levels to render (None: every grid level, production); the CPU demo renders the coarse ones",
    )
    mixed_precision: bool = Field(
        False, description="CUDA autocast for the render (bfloat16 on Ampere+); CPU ignores it"
    )
    param: Literal["fourier", "maco"] = Field(
        "fourier",
        description="image parameterisation: lucid's Fourier image, or MACO's phase-only one with a natural "
        "magnitude spectrum (docs/render.md, 'Steps that count')",
    )
    channels_last: bool = Field(
        False, description="network weights and input in NHWC for the render (docs/render.md, 'How close to the floor')"
    )
    compile: bool = Field(
        False,
        description="torch.compile the network cut at the layer (compiled once per shape, cached on disk across "
        "processes; docs/render.md)",
    )
    cpu_bf16: bool = Field(
        False, description="bfloat16 autocast on the CPU (needs native bf16, e.g. avx512_bf16/AMX; docs/render.md)"
    )
    tune: bool = Field(
        False,
        description="true: measure once per device/model/layer/size the intra-op threads and sub-batch with the "
        "most icons/s and use them (recorded in the render tune cache; docs/render.md)",
    )


class TilesConfig(_Section):
    """The exported atlas: DZI tiles, per-cell overlay data, dataset examples (docs/method.md §7)."""

    levels: list[int] | None = Field(
        None, min_length=1, description="levels to export (None: every level whose icons are completely rendered)"
    )
    tile_size: int = Field(256, ge=16, description="DZI tile side in pixels (OpenSeadragon's default 256)")
    overlap: int = Field(1, ge=0, le=8, description="DZI tile overlap in pixels")
    format: Literal["jpg", "webp"] = Field("jpg", description="tile image format")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality of tiles and example thumbnails")
    density_scaling: bool = Field(
        True, description="shrink sparse cells' icons: side x min(1, sqrt(density x n / mean n)) (production viewer)"
    )
    density: float = Field(
        1.0, gt=0.0, description="the 'density' factor of that formula (1: mean-count cells fill the cell)"
    )
    background: str = Field("#ffffff", description="canvas colour where no icon is drawn (any Pillow colour)")
    examples: int = Field(4, ge=0, description="dataset examples per cell (0: none)")
    example_px: int = Field(64, ge=8, description="side of an example thumbnail in pixels")
    example_field: float = Field(
        0.33,
        gt=0.0,
        le=1.0,
        description="side of an example's crop as a fraction of its view (~ the layer's receptive field)",
    )
    example_search: Literal["members", "all"] = Field(
        "members", description="examples among the cell's members (fast) or all store rows (exact faiss search)"
    )
    example_distinct_photos: bool = Field(True, description="at most one example per photo in a cell (views overlap)")
    highlight: bool = Field(
        True, description="write per-class and per-label cell values for the viewer's class highlight (main atlas)"
    )
    layout_points: int = Field(5000, ge=0, description="layout points kept for the viewer's mini-map")
    seed: int = Field(0, description="seed of the mini-map subsample")

    @model_validator(mode="after")
    def _check_background(self) -> TilesConfig:
        from PIL import ImageColor

        try:
            ImageColor.getrgb(self.background)
        except ValueError:
            raise ValueError(
                f"background {self.background!r} is not a colour Pillow knows (e.g. '#ffffff', 'white')"
            ) from None
        return self


class ClusterConfig(_Section):
    """Where the sharded stages (collect, render) run: this process, or a dask.distributed cluster.

    Not listed by any DVC stage: a sharded run writes the same bits as a single process, so
    where it ran is not part of what it made (docs/cluster.md).
    """

    scheduler: str | None = Field(
        None, description="address of a running dask scheduler (tcp://host:8786) or its scheduler file (.json)"
    )
    workers: int = Field(0, ge=0, description="start a local dask cluster of this many worker processes (0: none)")
    threads_per_worker: int = Field(1, ge=1, description="threads of each local worker (torch uses as many)")
    shards: int | None = Field(
        None, ge=1, description="shards (one task each) a stage is split into (None: workers x shards_per_worker)"
    )
    shards_per_worker: int = Field(
        4, ge=1, description="more shards than workers balance uneven shards and let a lost worker's share move"
    )

    @field_validator("scheduler")
    @classmethod
    def _check_scheduler(cls, value: str | None) -> str | None:
        import re

        if value is None or value.endswith(".json") or re.fullmatch(r"([a-z]+://)?[^\s/]+:\d+", value):
            return value
        raise ValueError(f"{value!r} is neither a scheduler address (tcp://host:8786) nor a scheduler file (.json)")


class RenderOverrides(_Section):
    """Render settings of the class / comparison atlases; ``None`` keeps the main ``render`` value.

    The reference's class atlases used 80 px, 1056 steps, 3 attempts, batch 64 (docs/method.md
    §6, "production"); the defaults keep the main render's (CPU demo) settings.
    """

    size: int | None = Field(None, ge=8, description="icon side in pixels (production 80)")
    steps: int | None = Field(None, ge=1, description="optimisation steps (production class atlases: 1056)")
    attempts: int | None = Field(None, ge=1, description="attempts per icon (production class atlases: 3)")
    batch_size: int | None = Field(None, ge=1, description="icons per batch (production class atlases: 64)")

    def apply(self, render: RenderConfig) -> RenderConfig:
        """``render`` with these overrides, every level of the subset's grid rendered."""
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return render.model_copy(update={**changes, "levels": None})


class ClassesConfig(_Section):
    """Class-filtered atlases (docs/method.md §8; docs/class_atlas.md)."""

    names: list[str | int] = Field(
        ["Arabian camel"], description="classes to build an atlas for, by name or index (several per run)"
    )
    mode: Literal["winner", "topk", "both"] = Field(
        "both",
        description="winner: the class is the row's largest attribution; topk: the top_k rows by positive "
        "attribution; both: their union (the reference's and/or)",
    )
    top_k: int = Field(2000, ge=1, description="rows kept by the topk rule (reference: about 2,000-3,000)")
    min_rows: int = Field(
        50, ge=2, description="fewer selected rows than this is an error (raise top_k or change mode)"
    )
    method: Literal["umap", "tsne"] = Field(
        "umap", description="2-D layout; the article found t-SNE better for class atlases"
    )
    n_neighbors: int = Field(20, ge=2, description="UMAP neighbours (issue: 20; docs/method.md §8: 20)")
    min_dist: float = Field(
        0.02, ge=0.0, description="UMAP min_dist (issue and production: 0.02; the class notebook: 0.01)"
    )
    metric: Literal["cosine", "euclidean"] = "cosine"
    grid: int = Field(8, ge=1, description="cells per side of the one level (reference: 8 x 8)")
    min_count: int = Field(
        4, ge=0, description="cells with at most this many members are dropped (reference: keep > 4)"
    )
    whitening: Literal["store", "subset"] = Field(
        "store",
        description="whiten icons with the whole store's matrix (a few hundred rows cannot estimate a "
        "C x C second moment) or with the subset's own",
    )
    render: RenderOverrides = RenderOverrides()


class CompareConfig(_Section):
    """Class-comparison atlases (docs/method.md §8: x = attribution difference, y = 1-D t-SNE)."""

    pairs: list[tuple[str | int, str | int]] = Field(
        [("lemon", "orange")], description="[a, b] class pairs (names or indices); a is drawn left"
    )
    mode: Literal["winner", "topk", "both"] = Field(
        "both", description="row selection of each class (see classes.mode)"
    )
    top_k: int = Field(2000, ge=1, description="rows kept per class by the topk rule")
    min_rows: int = Field(50, ge=2, description="fewer rows (union of both classes) than this is an error")
    percentile: float = Field(
        99.0, gt=0.0, le=100.0, description="x = (attr_a - attr_b) / this percentile of |difference|"
    )
    tsne_perplexity: float = Field(30.0, gt=0.0, description="the 1-D t-SNE of the y axis (sklearn's default)")
    tsne_metric: Literal["cosine", "euclidean"] = Field("cosine", description="reference: cosine")
    seed: int = 0
    grid: int = Field(10, ge=1, description="cells per side (reference: 10 x 10)")
    min_count: int = Field(4, ge=0, description="cells with at most this many members are dropped")
    whitening: Literal["store", "subset"] = "store"
    render: RenderOverrides = RenderOverrides()


class AlignModel(_Section):
    """One side of an aligned atlas: a classifier and one of its layers (the fields of ``model``)."""

    name: str = Field(..., description="torchvision classifier or import path package.module:factory")
    weights: str = Field("IMAGENET1K_V1", description="weights name the model knows, or a state-dict file")
    layer: str = Field(..., description="module name whose output is mapped; `atlas layers MODEL` lists them")
    image_size: int = Field(224, gt=15, description="input side in pixels (both sides must agree: same inputs)")


class AlignPair(_Section):
    """Two (model, layer) pairs laid out in one aligned atlas; ``a`` is drawn left."""

    a: AlignModel
    b: AlignModel
    name: str | None = Field(None, description="folder name of this aligned atlas (None: made from the two specs)")


class AlignConfig(_Section):
    """Aligned atlases (docs/method.md §11, docs/align.md): two models or two layers sampled at the same
    image locations, linear maps both ways, one shared UMAP, each side rendered with its own model."""

    pairs: list[AlignPair] = Field(
        [
            AlignPair(
                a=AlignModel(name="mobilenet_v2", layer="features.17.conv.0"),
                b=AlignModel(name="stages.model.factories:efficientnet_lite0", layer="_blocks.15"),
                name="mobilenet_v2-vs-efficientnet_lite0",
            ),
            AlignPair(
                a=AlignModel(name="mobilenet_v2", layer="features.17.conv.0"),
                b=AlignModel(name="mobilenet_v2", layer="features.13.conv.0"),
                name="mobilenet_v2-17-vs-13",
            ),
        ],
        description="the aligned atlases `atlas align` builds (the demo's: two models at their last 7x7 layers, "
        "and two layers of one model)",
    )
    folder: str = Field("data/align", description="the sides' collect stores and the aligned atlases' groups")
    views_per_image: int = Field(2, ge=1, description="views per photo collected for both sides (collect's crops)")
    positions_per_image: int = Field(2, ge=1, description="image locations sampled per view, the same for both sides")
    image_margin: float = Field(
        0.143,
        ge=0.0,
        lt=0.5,
        description="image locations are drawn in [m, 1 - m)^2 of the view (0.143 ~ 1/7: the edge cells of a 7x7 "
        "layer, like collect.border 1)",
    )
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of photos held out to score the linear maps")
    ridge: list[float] = Field(
        [0.01, 0.1, 1.0, 10.0],
        min_length=1,
        description="ridge penalties of the linear maps, relative to the mean eigenvalue of A^T A; with several, "
        "grouped cross-validation on the fit photos picks one",
    )
    knn: int = Field(10, ge=1, description="neighbours compared per location for the kNN overlap")
    levels: list[int] = Field([5, 10], min_length=1, description="grid levels of the aligned atlases (cells per side)")
    min_count: int = Field(5, ge=0, description="cells with at most this many samples are dropped (recipe: > 5)")
    seed: int = Field(0, description="seed of the held-out split")
    render: RenderOverrides = Field(
        RenderOverrides(size=64, steps=64),
        description="cheaper icons than the main atlas's keep the whole demo, aligned atlases included, within "
        "15 min on 2 CPU cores (docs/align.md); null fields keep the main render's value",
    )

    @model_validator(mode="after")
    def _check_ridge(self) -> AlignConfig:
        if any(not r > 0 for r in self.ridge):
            raise ValueError(f"ridge penalties must be positive (got {self.ridge})")
        return self


ExplainMethod = Literal["saliency", "gradient_x_input", "guided_backprop", "deconvnet", "occlusion", "cam", "grad_cam"]
EXPLAIN_METHODS: tuple[ExplainMethod, ...] = (
    "saliency",
    "gradient_x_input",
    "guided_backprop",
    "deconvnet",
    "occlusion",
    "cam",
    "grad_cam",
)


class ExplainConfig(_Section):
    """``atlas explain IMAGE``: an image through the atlas (the reference's semantic dictionary), NMF
    building blocks, the attribution methods of docs/explain.md and the channel view."""

    level: int = Field(20, ge=1, description="grid level whose cells and icons explain each position")
    groups: int = Field(4, ge=1, description="NMF groups of the image's [H*W, C] activations")
    nmf_max_iter: int = Field(500, ge=1, description="scikit-learn NMF iterations")
    steps: int = Field(64, ge=1, description="render steps of each group's feature visualization (tiny on CPU)")
    size: int = Field(64, ge=8, description="side of each group's feature visualization")
    icon_px: int = Field(40, ge=4, description="side of one atlas icon in the semantic-dictionary panel")
    image_px: int = Field(448, ge=32, description="side of the photo panels")
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    out: str = Field("data/explain.png", description="the PNG written; the other figures go next to it (<stem>_*.png)")
    top_classes: int = Field(5, ge=1, description="predicted classes explained (the top-k of the softmax)")
    classes: list[str | int] = Field([], description="more classes to explain, by name or ImageNet index")
    methods: list[ExplainMethod] = Field(
        list(EXPLAIN_METHODS), description="attribution methods drawn (docs/explain.md)"
    )
    batch_size: int = Field(16, ge=1, description="images per forward/backward of the attribution methods")
    occlusion_window: int = Field(32, ge=1, description="side of the grey occluding square in input pixels")
    occlusion_stride: int = Field(16, ge=1, description="step of the occluding square in input pixels")
    occlusion_baseline: float = Field(
        0.5, ge=0.0, le=1.0, description="grey value of the square, in [0, 1] input units"
    )
    grad_cam_layer: str | None = Field(
        None, description="layer of Grad-CAM (None: the CAM layer where the model has one, else model.layer)"
    )
    channels: int = Field(6, ge=0, description="strongest channels of the channel view (0: no channel view)")
    channel_patches: int = Field(4, ge=0, description="top dataset patches per channel, from the store")
    patch_px: int = Field(64, ge=8, description="side of a dataset patch in the channel view")
    page: bool = Field(
        True, description="write an HTML page into the atlas folder (data.atlas) and list it in the viewer"
    )
    layers: list[str] | None = Field(
        None,
        description="layers of the evolving-understanding figure, e.g. features.3.conv.0,features.17.conv.0 or "
        "'default' (None: not drawn; docs/explain.md); also draws the first-layer filters and the "
        "strongest channels' activation maps, and needs no store",
    )
    layer_cells: int = Field(8, ge=1, description="at most this many cells per side: positions pooled in f x f blocks")
    layer_icon_px: int = Field(40, ge=8, description="side of each rendered cell of the layers figure")
    layer_steps: int = Field(64, ge=1, description="render steps of the layers figure's cells (tiny on CPU)")
    layer_panel_px: int = Field(320, ge=32, description="side of one layer's panel in the layers figure")
    maps_layer: str | None = Field(None, description="layer of the activation-maps figure (None: model.layer)")
    maps_channels: int = Field(16, ge=1, description="strongest channels (largest mean) in the activation-maps figure")


class SanityConfig(_Section):
    """``atlas sanity-check IMAGE``: Adebayo et al. (2018) randomization tests of the attribution methods."""

    methods: list[ExplainMethod] = Field(
        ["saliency", "gradient_x_input", "guided_backprop", "deconvnet", "cam", "grad_cam"],
        description="methods tested (occlusion is allowed but costs a full sweep per step)",
    )
    blocks: int | None = Field(None, ge=1, description="blocks randomized from the top, cumulatively (None: all)")
    threshold: float = Field(
        0.5,
        ge=-1.0,
        le=1.0,
        description="a method fails when its mean rank correlation with the trained map over the cascade (or under "
        "class randomization) is above this",
    )
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    out: str = Field("data/sanity.json", description="the JSON report")
    figure: str | None = Field("data/sanity.png", description="the maps per randomization step (None: no figure)")


class DatasetMapConfig(_Section):
    """``atlas dataset-map``: whole images laid out by the model's pooled penultimate features (Karpathy's
    CNN-codes map), snapped to a grid and exported as a photo atlas in the viewer."""

    method: Literal["tsne", "umap"] = Field("tsne", description="2-D layout (the CNN-codes map used t-SNE)")
    perplexity: float = Field(30.0, gt=0.0, description="t-SNE perplexity (capped below the image count)")
    n_neighbors: int = Field(15, ge=2, description="UMAP neighbours (umap-learn's default)")
    min_dist: float = Field(0.1, ge=0.0, description="UMAP min_dist (umap-learn's default)")
    views_per_image: int = Field(1, ge=1, description="views per photo (1: the whole image; more: collect's crops)")
    max_images: int | None = Field(None, ge=2, description="at most this many photos (None: all of data.source)")
    grid_slack: float = Field(1.0, ge=1.0, description="grid cells per image: side = ceil(sqrt(images x slack))")
    icon_px: int = Field(96, ge=8, description="side of a photo in the exported map")
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")


class CueConflictConfig(_Section):
    """``atlas cue-conflict``: texture vs shape (Geirhos et al., ICLR 2019) by their recipe, and where the
    stimuli land on the atlas (docs/experiments.md)."""

    stimuli: str = Field(
        "tests/data/cue-conflict-sample",
        description="folder of cue-conflict images named <shape><i>-<texture><j>.png (the repo "
        "ships 160 of the 1,280; pass the full set's folder)",
    )
    level: int = Field(20, ge=1, description="grid level whose cells the stimuli's positions land in")
    top_classes: int = Field(5, ge=1, description="a cell's top attributed classes read for its category")
    batch_size: int = Field(16, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    out: str = Field("data/cue_conflict.json", description="the report written (counts, rates, intervals)")
    page: bool = Field(True, description="write an HTML page into the atlas folder (data.atlas), listed in the viewer")


class PatchesConfig(_Section):
    """``atlas patches``: patches read off a class-comparison atlas, pasted on photos of class A to flip the
    model to class B (Carter et al. 2019, "human-designed adversarial patches"; docs/experiments.md)."""

    photos: str | None = Field(
        None,
        description="folder of photos of class A (one pair only); null: the store's photos labelled or predicted A",
    )
    cells: int = Field(8, ge=1, description="candidate cells: the ones farthest toward B on the comparison axis")
    examples: int = Field(2, ge=0, description="dataset-example crops per candidate cell (besides its icon)")
    keep: int = Field(10, ge=1, description="candidates measured: the best by the ranking proxy")
    rank_photos: int = Field(
        1,
        ge=1,
        description="photos of A kept apart to rank the candidates (B-minus-A logit gain); at most all but one "
        "(the demo's 2-4 photos per class: 1; a real set: ~10)",
    )
    sizes: list[float] = Field(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        min_length=1,
        description="patch side / input side, every size at every corner (dynamic)",
    )
    static_size: float = Field(0.4, gt=0.0, le=1.0, description="the static placement's size (one for every photo)")
    static_corner: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = Field(
        "bottom_right", description="the static placement's corner"
    )
    controls: int = Field(2, ge=0, description="noise patches and random-cell patches (each) measured as controls")
    crop_px: int = Field(128, ge=8, description="dataset crops are cut from the photos at this side")
    field: float = Field(
        0.33, gt=0.0, le=1.0, description="crop side / view side around the sample (tiles.example_field)"
    )
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    out: str = Field("data/patches.json", description="the report (counts, rates, intervals); figures beside it")
    page: bool = Field(True, description="write an HTML page per direction into the atlas folder, listed in the viewer")


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    collect: CollectConfig = CollectConfig()
    reduce: ReduceConfig = ReduceConfig()
    grid: GridConfig = GridConfig()
    render: RenderConfig = RenderConfig()
    tiles: TilesConfig = TilesConfig()
    cluster: ClusterConfig = ClusterConfig()
    classes: ClassesConfig = ClassesConfig()
    compare: CompareConfig = CompareConfig()
    explain: ExplainConfig = ExplainConfig()
    sanity: SanityConfig = SanityConfig()
    dataset_map: DatasetMapConfig = DatasetMapConfig()
    align: AlignConfig = AlignConfig()
    cue_conflict: CueConflictConfig = CueConflictConfig()
    patches: PatchesConfig = PatchesConfig()
