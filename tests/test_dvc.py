"""dvc.yaml stays consistent with params.yaml and the store's naming of derived groups."""

from pathlib import Path

import yaml

from pipeline.params import load_config
from stages.config import Config
from store.atlas_store import AtlasStore

REPO = Path(__file__).resolve().parents[1]


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_stage_lists_params_that_exist() -> None:
    sections = set(Config.model_fields)
    cfg = load_config(REPO / "params.yaml").model_dump()
    for name, stage in _stages().items():
        for param in stage.get("params", []):
            head, *rest = param.split(".")
            assert head in sections, f"{name}: unknown params section {param}"
            if rest:
                assert rest[0] in cfg[head], f"{name}: unknown parameter {param}"


def test_derived_outputs_match_the_store_naming() -> None:
    cfg = load_config(REPO / "params.yaml")
    store = AtlasStore(Path(cfg.data.store), group=None)  # naming only, nothing opened
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in _stages().values() for o in s.get("outs", [])}
    for name in ("layout", "grid", "whitening", "icons"):
        assert str(store.derived_path(name)) in outs, f"dvc.yaml must list {store.derived_path(name)}"


def test_dvc_analytics_off() -> None:
    assert "analytics = false" in (REPO / ".dvc" / "config").read_text()
