from pathlib import Path

import pytest

from pipeline.params import load_config
from store.errors import AtlasError


def test_defaults_load_and_overrides_apply(tmp_path: Path) -> None:
    cfg = load_config(None, ["collect.batch_size=7", "grid.levels=[4, 8]", "model.layer=features.10"])
    assert cfg.collect.batch_size == 7
    assert cfg.grid.levels == [4, 8]
    assert cfg.model.layer == "features.10"


def test_repo_params_file_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[1] / "params.yaml")
    assert cfg.model.name == "mobilenet_v2" and cfg.model.weights == "IMAGENET1K_V1"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("collect.positions_per_image=0", "collect.positions_per_image"),
        ("collect.bogus=1", "unknown parameter"),
        ("model.image_size=abc", "model.image_size"),
        ("collect.view_scale=[0.5, 0.2]", "view_scale"),
        ("collect.dtype=float64", "collect.dtype"),
    ],
)
def test_bad_values_give_one_line_error_naming_the_parameter(override: str, fragment: str) -> None:
    with pytest.raises(AtlasError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("collect: [unclosed\n")
    with pytest.raises(AtlasError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(AtlasError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_command_line_values_are_read_by_the_field_type() -> None:
    cfg = load_config(
        None,
        [
            "explain.methods=saliency,cam",
            "grid.levels=10",
            "tiles.background=#000000",
            "compare.pairs=lemon:orange",
            "render.levels=null",
            "model.weights=1",
        ],
    )
    assert cfg.explain.methods == ["saliency", "cam"] and cfg.grid.levels == [10]
    assert cfg.tiles.background == "#000000" and cfg.compare.pairs == [("lemon", "orange")]
    assert cfg.render.levels is None and cfg.model.weights == "1"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("explain.methods=saliency,camm", "--set explain.methods=saliency,camm: explain.methods.1"),
        ("grid.levels=10,,20", "empty item"),
        ("compare.pairs=lemon", "not a pair"),
        ("align.pairs=a,b", "YAML list of mappings"),
        ("cluster.scheduler=abc", "cluster.scheduler"),
        ("data.store=", "data.store"),
    ],
)
def test_command_line_errors_name_the_override(override: str, fragment: str) -> None:
    with pytest.raises(AtlasError) as err:
        load_config(None, [override])
    assert fragment in str(err.value) and "\n" not in str(err.value)
