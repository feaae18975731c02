"""What the benches share: the model a store was collected with, the model flags, the result JSON.

A bench that measures a store takes the classifier (name, weights, layer, input size) from the
store's own ``model`` attrs, the record ``collect`` wrote, so it can never build one layer and
read another layer's data. A bench that starts from photos takes it from ``--model`` /
``--weights`` / ``--layer`` (default: the ``model:`` section of ``params.yaml``). Every bench has
``--smoke`` (tiny sizes, seconds) and ``--out`` (where its JSON goes); ``tests/test_bench_smoke.py``
runs them all.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.params import load_config  # noqa: E402,F401 - re-exported: the one place a bench imports it from
from stages.config import ModelConfig  # noqa: E402

PARAMS = REPO / "params.yaml"


def store_model_config(store: Any) -> ModelConfig:
    """The ``ModelConfig`` a store (an ``AtlasStore`` or its path) was collected with."""
    from store.atlas_store import AtlasStore

    if not isinstance(store, AtlasStore):
        store = AtlasStore.open(store, mode="r")
    model = store.attrs.get("model") or {}
    missing = [k for k in ("name", "layer") if not model.get(k)]
    if missing:
        raise SystemExit(
            f"store {store.path} records no model {', '.join(missing)} (attrs['model'] = {model!r}); "
            "benchmark a store written by `atlas collect`"
        )
    fields = {"name": model["name"], "layer": model["layer"]}
    if model.get("weights"):
        fields["weights"] = model["weights"]
    if model.get("image_size"):
        fields["image_size"] = int(model["image_size"])
    return ModelConfig(**fields)


def load_store_model(store_path: str | Path, device: Any = None) -> Any:
    """``load_model`` of the store's own model, checked against its weights hash and channel count."""
    import torch

    from stages.model.registry import load_model
    from stages.model.weights import install_default_weights
    from store.atlas_store import AtlasStore

    store = AtlasStore.open(store_path, mode="r")
    install_default_weights()
    model = load_model(store_model_config(store), device or torch.device("cpu"))
    want = (store.attrs.get("model") or {}).get("weights_sha256")
    if want and want != model.weights_sha256:
        raise SystemExit(
            f"store {store_path} was collected with weights sha256 {want[:12]}..., this machine's "
            f"{model.name} {model.weights} file has {model.weights_sha256[:12]}..."
        )
    if model.layer_shape[0] != store.channels:
        raise SystemExit(
            f"store {store_path} has {store.channels} channels; {model.name} {model.layer} has {model.layer_shape[0]}"
        )
    return model


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """``--params`` / ``--model`` / ``--weights`` / ``--layer``, for benches that start from photos."""
    group = parser.add_argument_group("model (default: params.yaml's model section)")
    group.add_argument("--params", default=str(PARAMS), help="parameters file (default: params.yaml)")
    group.add_argument("--model", default=None, help="torchvision classifier name")
    group.add_argument("--weights", default=None, help="weights enum name or state-dict path")
    group.add_argument("--layer", default=None, help="module name whose output is measured")


def model_overrides(args: argparse.Namespace) -> list[str]:
    """``--set``-style overrides for the model flags that were given."""
    return [
        f"model.{key}={value}"
        for key, value in (("name", args.model), ("weights", args.weights), ("layer", args.layer))
        if value is not None
    ]


def model_record(model: Any) -> dict[str, Any]:
    """What a result JSON says about the model measured (a ``LoadedModel``, ``ModelConfig`` or attrs dict)."""
    get = (lambda k: model.get(k)) if isinstance(model, dict) else (lambda k: getattr(model, k, None))
    return {k: get(k) for k in ("name", "weights", "layer") if get(k) is not None}


def machine_record() -> dict[str, Any]:
    """Where and when a result was measured."""
    torch = sys.modules.get("torch")  # only when the bench used it: importing it costs seconds
    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        **({"torch": torch.__version__} if torch is not None else {}),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (what a committed result should say)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` atomically (a bench killed mid-write leaves the old file)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(out)
    return out
