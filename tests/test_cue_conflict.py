"""Texture vs shape (``atlas cue-conflict``): the published recipe's arithmetic, the category lists,
the stimuli on disk, placement on the atlas, and the whole command on real stimuli and weights."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from stages.config import Config
from stages.context import StageContext
from stages.cue_conflict import on_atlas
from stages.cue_conflict import stage as cue_conflict
from stages.cue_conflict.placement import build_placer, cell_of_row
from stages.cue_conflict.shape_bias import (
    category_probabilities,
    decide,
    load_categories,
    outcome,
    shape_bias,
    wilson_interval,
)
from stages.cue_conflict.stimuli import Stimulus, list_stimuli, load_pixels, parse_name
from stages.reduce.stage import read_fit_rows
from stages.sections import CueConflictSection
from store import derived
from store.errors import AtlasError
from tests.atlas_fixtures import SmallAtlas

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "cue-conflict-sample"

# Transcribed by hand from the published 16-class index lists (Geirhos et al. 2019; the HumanCategories
# *_indices of the authors' model-vs-human toolbox), to catch any edit of categories.json.
PUBLISHED = {
    "airplane": [404],
    "bear": [294, 295, 296, 297],
    "bicycle": [444, 671],
    "bird": [
        8,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        18,
        19,
        20,
        22,
        23,
        24,
        80,
        81,
        82,
        83,
        87,
        88,
        89,
        90,
        91,
        92,
        93,
        94,
        95,
        96,
        98,
        99,
        100,
        127,
        128,
        129,
        130,
        131,
        132,
        133,
        135,
        136,
        137,
        138,
        139,
        140,
        141,
        142,
        143,
        144,
        145,
    ],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286],
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [
        *range(152, 192),
        *range(193, 204),
        *range(205, 227),
        *range(228, 242),
        *range(243, 251),
        *range(252, 258),
        259,
        *range(261, 264),
        *range(265, 269),
    ],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}


# --------------------------------------------------------------------------------- the categories
def test_categories_are_the_published_lists() -> None:
    cats = load_categories()
    assert list(cats.names) == sorted(PUBLISHED)
    assert {n: list(i) for n, i in zip(cats.names, cats.indices)} == PUBLISHED
    flat = [i for members in cats.indices for i in members]
    assert len(flat) == len(set(flat)) == 207 and all(0 <= i < 1000 for i in flat)  # disjoint ImageNet classes


def test_categories_name_the_right_imagenet_classes(mobilenet) -> None:
    cats, names = load_categories(), mobilenet.class_names
    assert [names[i] for i in cats.indices[cats.index("airplane")]] == ["airliner"]
    assert [names[i] for i in cats.indices[cats.index("knife")]] == ["cleaver"]
    assert {names[i] for i in cats.indices[cats.index("elephant")]} == {"Indian elephant", "African elephant"}
    assert all("cat" in names[i] or names[i] in ("tabby", "cougar") for i in cats.indices[cats.index("cat")])


# --------------------------------------------------------------------------------- the recipe
def _probs(weights: dict[int, float]) -> np.ndarray:
    p = np.full(1000, 1e-6)
    for k, v in weights.items():
        p[k] = v
    return p / p.sum()


def test_category_score_is_the_mean_probability_not_the_sum() -> None:
    cats = load_categories()
    dog = cats.indices[cats.index("dog")]
    # 117 dog classes at 0.004 each (sum 0.47) against the single airliner class at 0.01: the mean decides
    p = _probs({**{k: 0.004 for k in dog}, 404: 0.01})
    scores = category_probabilities(p[None], cats)[0]
    assert scores[cats.index("dog")] == pytest.approx(p[list(dog)].mean())
    assert decide(p[None], cats) == ["airplane"]


def test_shape_bias_counts_on_constructed_decisions() -> None:
    cats = load_categories()
    first = {n: cats.indices[cats.index(n)][0] for n in cats.names}
    stimuli = [
        ("cat", "elephant", "cat"),  # decided for the shape
        ("dog", "bottle", "bottle"),  # for the texture
        ("car", "clock", "bird"),  # neither: "other"
        ("knife", "oven", "oven"),  # texture
        ("cat", "cat", "cat"),
    ]  # no conflict: left out
    probs = np.stack([_probs({first[d]: 0.9}) for _, _, d in stimuli])
    decisions = decide(probs, cats)
    assert decisions == [d for _, _, d in stimuli]
    b = shape_bias(decisions, [s for s, _, _ in stimuli], [t for _, t, _ in stimuli])
    assert (b.overall.shape, b.overall.texture, b.overall.other, b.overall.left_out) == (1, 2, 1, 1)
    assert b.overall.bias == pytest.approx(1 / 3)
    assert b.by_shape["cat"].shape == 1 and b.by_texture["bottle"].texture == 1 and b.by_shape["car"].other == 1
    assert "cat" in b.by_shape and b.by_shape["cat"].total == 1  # the same-category one is not counted
    assert outcome("cat", "cat", "cat") is None


def test_wilson_interval_matches_hand_computed_values() -> None:
    lo, hi = wilson_interval(1, 2)  # 1.96 * sqrt(0.125 + 0.2401) / 2.9208 = 0.4055 around 0.5
    assert (lo, hi) == (pytest.approx(0.0945, abs=1e-4), pytest.approx(0.9055, abs=1e-4))
    lo, hi = wilson_interval(0, 10)  # z^2 / (n + z^2) = 3.8415 / 13.8415
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------------------------- the stimuli
def test_names_parse_and_the_shipped_sample_is_complete() -> None:
    assert parse_name(Path("cat4-elephant2.png")) == ("cat", "elephant")
    assert parse_name(Path("airplane10-cat2.png")) == ("airplane", "cat")
    assert parse_name(Path("photo.png")) is None
    items = list_stimuli(SAMPLE, load_categories().names)
    assert len(items) == 160 and {s.shape for s in items} == set(PUBLISHED)
    assert (SAMPLE / "LICENSE").is_file() and "Geirhos" in (SAMPLE / "README.md").read_text()
    assert load_pixels(items[0], 224).shape == (3, 224, 224)


def test_bad_stimuli_folders_are_one_line_errors(tmp_path: Path) -> None:
    names = load_categories().names
    with pytest.raises(AtlasError, match="not a folder"):
        list_stimuli(tmp_path / "missing", names)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtlasError, match=r"no image named <shape><i>-<texture><j>\.png"):
        list_stimuli(tmp_path / "empty", names)
    (tmp_path / "odd").mkdir()
    Image.new("RGB", (224, 224)).save(tmp_path / "odd" / "zebra1-cat2.png")
    with pytest.raises(AtlasError, match="'zebra' is not one of the 16"):
        list_stimuli(tmp_path / "odd", names)
    Image.new("RGB", (100, 80)).save(tmp_path / "cat1-dog2.png")
    with pytest.raises(AtlasError, match="100 x 80 pixels.*224 x 224"):
        load_pixels(Stimulus(tmp_path / "cat1-dog2.png", "cat", "dog"), 224)


# --------------------------------------------------------------------------------- on the atlas (pure)
def test_position_outcomes_walk_the_cells_top_classes() -> None:
    cats = load_categories()
    of_class = cats.of_class()
    cat, elephant = cats.index("cat"), cats.index("elephant")
    top_idx = np.array(
        [
            [281, 385, 1],  # cell 0: a cat class first -> shape (for shape cat)
            [1, 386, 281],  # cell 1: an elephant class before any cat one -> texture
            [1, 2, 3],  # cell 2: neither category
            [-1, -1, -1],
        ]
    )
    cells = np.array([0, 1, 2, -1, 1, 3])
    got = on_atlas.position_outcomes(cells, top_idx, of_class, cat, elephant, top=3)
    assert got == ["shape", "texture", "neither", "off", "texture", "neither"]
    assert on_atlas.position_outcomes(np.array([1]), top_idx, of_class, cat, elephant, top=1) == ["neither"]
    s = on_atlas.share(got)
    assert s.counts == {"shape": 1, "texture": 2, "neither": 2, "off": 1} and s.shape_share == pytest.approx(1 / 3)
    n, texture = on_atlas.cell_texture_share(cells, got, 4)
    assert n.tolist() == [1, 2, 0, 0] and texture[0] == 0.0 and texture[1] == 1.0 and np.isnan(texture[2])
    assert on_atlas.stimulus_lean(got) == "texture" and on_atlas.stimulus_lean(["shape", "off"]) == "shape"


def test_interior_drops_the_border_like_collect() -> None:
    acts = np.arange(5 * 5 * 2, dtype=np.float32).reshape(5, 5, 2)
    inner = cue_conflict.interior(acts, 1)
    assert inner.shape == (9, 2) and inner[0].tolist() == acts[1, 1].tolist()
    assert cue_conflict.interior(acts[:2, :2], 1).shape == (4, 2)  # too small for a border: every position


# --------------------------------------------------------------------------------- real model, real atlas
def test_a_fitted_row_lands_in_its_own_cell(small_atlas: SmallAtlas) -> None:
    store = small_atlas.store
    n = small_atlas.levels[-1]
    placer = build_placer(store, n)
    rows = placer.fitted_rows[:: max(1, len(placer.fitted_rows) // 40)]
    cells = placer.cells(read_fit_rows(store, rows))
    expected = cell_of_row(derived.read_level(store, n, with_attribution=False), store.n_rows)[rows]
    assert (expected >= 0).any() and cells.tolist() == expected.tolist()


def _subset(tmp: Path, per_category: int = 1) -> Path:
    """One stimulus of each shape category from the shipped sample (sorted, so always the same)."""
    out = tmp / "stimuli"
    for folder in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        for png in sorted(folder.glob("*.png"))[:per_category]:
            (out / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(png, out / folder.name / png.name)
    return out


def test_the_stage_on_real_stimuli_and_a_real_atlas(small_atlas: SmallAtlas, mobilenet, tmp_path: Path) -> None:
    atlas = tmp_path / "atlas"
    shutil.copytree(small_atlas.atlas_dir, atlas)
    config = Config.model_validate(small_atlas.config.model_dump())
    config.data.atlas = str(atlas)
    config.cue_conflict.level, config.cue_conflict.out = small_atlas.levels[-1], str(tmp_path / "cc.json")
    torch.manual_seed(0)
    totals: list[int] = []
    steps: list[int] = []
    section = CueConflictSection.of(
        config, cue_conflict=config.cue_conflict.model_copy(update={"stimuli": str(_subset(tmp_path))})
    )
    ctx = StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet)
    r = cue_conflict.run(section, replace(ctx, progress=steps.append, on_start=totals.append))
    assert totals == [16] and sum(steps) == 16 and all(k > 0 for k in steps)
    report = json.loads((tmp_path / "cc.json").read_text())
    o = report["shape_bias"]
    assert o["shape"] + o["texture"] + o["other"] == o["total"] == 16 - o["left_out"]
    assert len(report["stimuli"]) == 16 and {s["decision"] for s in report["stimuli"]} <= set(PUBLISHED)
    # every cue-conflict stimulus's interior positions (MobileNetV2 features.13.conv.0: 14 x 14, border 1) placed
    conflict = [s for s in r.stimuli if s.stimulus.conflict]
    assert all(len(s.positions) == 12 * 12 for s in conflict)
    p = report["atlas"]["positions"]
    assert sum(p[k] for k in on_atlas.OUTCOMES) == 144 * len(conflict)
    assert r.cell_counts is not None and int(r.cell_counts.sum()) == p["shape"] + p["texture"]
    # the page: listed in the viewer's index, with a map that is not blank
    index = json.loads((atlas / "atlases.json").read_text())
    assert any(e.get("page") == "experiments/cue-conflict/index.html" for e in index["atlases"])
    page = (atlas / "experiments" / "cue-conflict" / "index.html").read_text()
    assert "Shape bias" in page and "95% CI" in page and f"of {o['total']} cue-conflict stimuli" in page
    pixels = np.asarray(Image.open(atlas / "experiments" / "cue-conflict" / "atlas_map.png").convert("RGB"), np.float64)
    assert pixels.std() > 15 and len(np.unique((pixels // 8).reshape(-1, 3), axis=0)) > 100


def test_the_command_says_what_is_wrong_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "params.yaml").write_text("{}\n")
    argv = [
        "cue-conflict",
        "--params",
        str(tmp_path / "params.yaml"),
        "--store",
        str(tmp_path / "no_store.zarr"),
        "--stimuli",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "cc.json"),
        "-q",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 or "no store" in err[0], err
    assert err[-1].startswith("atlas cue-conflict: error:") and "no image named" in err[-1]


def test_the_api_gives_the_stage_s_report(mobilenet, small_atlas: SmallAtlas, tmp_path: Path) -> None:
    from pipeline import shape_bias

    stimuli = _subset(tmp_path)
    got = shape_bias(mobilenet, stimuli=stimuli, atlas=small_atlas.store.path, level=small_atlas.levels[-1])
    config = Config.model_validate(small_atlas.config.model_dump())
    config.cue_conflict.level, config.cue_conflict.page = small_atlas.levels[-1], False
    config.cue_conflict.out = str(tmp_path / "cc.json")
    section = CueConflictSection.of(
        config, cue_conflict=config.cue_conflict.model_copy(update={"stimuli": str(stimuli)})
    )
    cue_conflict.run(section, StageContext(small_atlas.store, device=torch.device("cpu"), model=mobilenet))
    want = json.loads((tmp_path / "cc.json").read_text())
    assert got["shape_bias"] == want["shape_bias"] and got["atlas"] == want["atlas"]
    assert [s["decision"] for s in got["stimuli"]] == [s["decision"] for s in want["stimuli"]]
    with pytest.raises(AtlasError, match="shape_bias: atlas must be"):
        shape_bias(mobilenet, stimuli=stimuli, atlas=42)  # type: ignore[arg-type]
