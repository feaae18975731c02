from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from pipeline.params import load_config
from stages.config import Config
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
            "compare.pairs=lemon:tabby",  # not the default pair
            "render.levels=null",
            "model.weights=1",
        ],
    )
    assert cfg.explain.methods == ["saliency", "cam"] and cfg.grid.levels == [10]
    assert cfg.tiles.background == "#000000" and cfg.compare.pairs == [("lemon", "tabby")]
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


def _stated_keys(model: type[BaseModel], tree: dict[str, Any], where: str) -> list[str]:
    """The fields of ``model`` (recursively into sections) that ``tree`` does not state."""
    missing = []
    for name, field in model.model_fields.items():
        if name not in tree:
            missing.append(f"{where}{name}")
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _stated_keys(field.annotation, tree[name] or {}, f"{where}{name}.")
    return missing


def _differences(stated: Any, default: Any, where: str) -> list[str]:
    if isinstance(stated, dict) and isinstance(default, dict):
        return [d for key in default for d in _differences(stated.get(key), default[key], f"{where}{key}.")]
    return [] if stated == default else [f"{where.rstrip('.')}: params.yaml {stated!r}, stages/config.py {default!r}"]


def test_params_yaml_states_every_typed_default_and_nothing_else() -> None:
    """One source of truth: params.yaml (what dvc repro and the demo run) states every parameter, each
    equal to its default in stages/config.py (what the notebook API and a Config() use)."""
    path = Path(__file__).parents[1] / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    assert not _stated_keys(Config, raw, ""), f"params.yaml lacks {_stated_keys(Config, raw, '')}"
    stated = load_config(path).model_dump(mode="json")
    differ = _differences(stated, Config().model_dump(mode="json"), "")
    assert not differ, "params.yaml and the typed defaults disagree: " + "; ".join(differ)


def test_the_sync_check_sees_a_drifted_value(tmp_path: Path) -> None:
    drifted = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    drifted["render"]["steps"] = 256
    del drifted["align"]["render"]["size"]
    stated = Config.model_validate(drifted).model_dump(mode="json")
    assert _differences(stated, Config().model_dump(mode="json"), "") == [
        "render.steps: params.yaml 256, stages/config.py 128",
        "align.render.size: params.yaml None, stages/config.py 64",
    ]
    assert _stated_keys(Config, drifted, "") == ["align.render.size"]
