"""Parameters in: ``params.yaml``, then ``--set section.key=value`` overrides, validated into one Config.

The typed sections themselves live with the code that uses them (``stages/config.py``); reading
files and command-line overrides is the running floor's job, so it lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stages.config import Config
from store.errors import AtlasError

DEFAULT_PARAMS = Path("params.yaml")


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
