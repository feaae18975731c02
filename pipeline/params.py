"""Parameters in: ``params.yaml``, then ``--set section.key=value`` overrides, validated into one Config.

The typed sections themselves live with the code that uses them (``stages/config.py``); reading
files and command-line overrides is the running floor's job, so it lives here.

A value from the command line (``--set`` or a per-field flag) is read by the type of its field:
a list takes a comma list (``saliency,cam``, ``10,20``; pairs ``lemon:orange,tabby:tiger cat``) or a
YAML list (``[saliency, cam]``); a text field keeps the text as typed (``#ffffff`` is a colour, not
a YAML comment); anything else is parsed as YAML. Every error names where the value came from (the
flag, the ``--set`` item, or the parameters file) and what to do, in one line.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stages.config import Config
from store.errors import AtlasError

DEFAULT_PARAMS = Path("params.yaml")
_NULLS = {"null", "Null", "NULL", "~", "none", "None"}


@dataclass(frozen=True)
class Override:
    """One ``section.key=value`` from the command line and where it came from (``--set ...`` or a flag)."""

    key: str
    raw: str
    origin: str
    flag: str | None = None  # the per-field flag (``--methods``), None for ``--set``


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise AtlasError(
            f"{origin}: '{dotted}' is not a parameter name; write section.key=value, e.g. collect.batch_size=64"
        )
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AtlasError(f"{origin}: cannot set '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


# ------------------------------------------------------------------------- field types


def field_annotation(key: str) -> Any:
    """The type annotation of the parameter ``section.key`` (None when there is no such parameter)."""
    model: Any = Config
    annotation: Any = None
    for part in key.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            union: Any = typing.Union[tuple(args)]  # noqa: UP007 (a union built at run time from a tuple)
            return (args[0] if len(args) == 1 else union), True
    return annotation, False


def _sequence_item(annotation: Any) -> tuple[bool, Any]:
    """(is a list/tuple, the annotation of one item)."""
    inner, _ = _without_none(annotation)
    origin = typing.get_origin(inner)
    if origin not in (list, tuple):
        return False, None
    args = [a for a in typing.get_args(inner) if a is not Ellipsis]
    return True, (args[0] if args else Any)


def _is_pair(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple and len(typing.get_args(annotation)) == 2


def _is_text(annotation: Any) -> bool:
    inner, _ = _without_none(annotation)
    return inner is str


def list_hint(key: str) -> str | None:
    """How a list parameter is written on the command line, for help texts and errors (None: not a list)."""
    is_list, item = _sequence_item(field_annotation(key))
    if not is_list:
        return None
    if _is_pair(item):
        return "a comma list of A:B pairs (lemon:orange,tabby:tiger cat) or a YAML list ([[lemon, orange]])"
    if isinstance(item, type) and issubclass(item, BaseModel):
        return "a YAML list of mappings (in params.yaml or --set)"
    return "a comma list (a,b) or a YAML list ([a, b])"


def _scalar(text: str) -> Any:
    """One item of a comma list: an int, a float, or the text itself (quotes removed)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _comma_list(raw: str, item: Any, origin: str) -> list[Any]:
    if not raw.strip():
        return []
    parts = [p.strip() for p in raw.split(",")]
    if not all(parts):
        raise AtlasError(
            f"{origin}: empty item in the comma list {raw!r}; write the items without empty ones, e.g. a,b"
        )
    if not _is_pair(item):
        return [_scalar(p) for p in parts]
    pairs = []
    for p in parts:
        sides = [s.strip() for s in p.split(":")]
        if len(sides) != 2 or not all(sides):
            raise AtlasError(
                f"{origin}: {p!r} is not a pair; write A:B pairs separated by commas, e.g. lemon:orange,tabby:tiger cat"
            )
        pairs.append([_scalar(s) for s in sides])
    return pairs


def parse_value(key: str, raw: str, origin: str = "--set") -> Any:
    """The value of ``raw`` typed on the command line for the parameter ``key`` (see the module doc)."""
    annotation = field_annotation(key)
    is_list, item = _sequence_item(annotation)
    text = raw.strip()
    if is_list and not text.startswith(("[", "{")) and text not in _NULLS:
        if isinstance(item, type) and issubclass(item, BaseModel):
            raise AtlasError(f"{origin}: {key} takes {list_hint(key)}, not {raw!r}")
        return _comma_list(raw, item, origin)
    if annotation is not None and _is_text(annotation):
        optional = _without_none(annotation)[1]
        return None if optional and text in _NULLS else raw
    if not text:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        if is_list:
            raise AtlasError(f"{origin}: {raw!r} is not a valid YAML list; write {list_hint(key)}") from None
        return raw


def parse_override(text: str) -> tuple[str, Any]:
    """``collect.batch_size=64`` -> ("collect.batch_size", 64); values are read by the field's type."""
    if "=" not in text:
        raise AtlasError(f"--set {text!r}: expected section.key=value, e.g. collect.batch_size=64")
    key, raw = text.split("=", 1)
    return key.strip(), parse_value(key.strip(), raw, origin=f"--set {text}")


# ------------------------------------------------------------------------- errors


def _section_model(section: object) -> type[BaseModel] | None:
    """The typed section ``section`` names (None: no such section)."""
    annotation = (
        Config.model_fields[section].annotation if isinstance(section, str) and section in Config.model_fields else None
    )
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _example(key: str) -> str:
    """A value of ``key`` as it is typed on the command line (its built-in default, or a sample)."""
    section, _, name = key.partition(".")
    model = _section_model(section)
    info = model.model_fields.get(name) if model is not None else None
    default = info.get_default(call_default_factory=True) if info is not None else None
    is_list, item = _sequence_item(field_annotation(key))
    if is_list:
        if _is_pair(item):
            return "lemon:orange"
        if default:
            return ",".join(str(v) for v in default)
        return "a,b"
    if default is None or isinstance(default, BaseModel):
        return "VALUE"
    return str(default)


def _culprit(loc: tuple[Any, ...], overrides: list[Override], msg: str) -> Override | None:
    """The command-line override that set the value at ``loc`` (None: it came from the parameters file)."""
    path = [str(p) for p in loc]
    matches = []
    for o in overrides:
        parts = o.key.split(".")
        n = min(len(parts), len(path))
        if parts[:n] == path[:n]:
            matches.append(o)
    if not matches:
        return None
    named = [o for o in matches if o.key.split(".")[-1] in msg]
    return (named or matches)[-1]


def _format_validation_error(err: ValidationError, origin: str, overrides: list[Override] | None = None) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        section = first["loc"][0] if len(first["loc"]) > 1 else None
        model = _section_model(section) or Config
        known = ", ".join(model.model_fields)
        msg = f"unknown parameter; known here: {known}"
    shown = first.get("input")
    extra = (
        f" (got {shown!r})"
        if "input" in first and not isinstance(shown, dict) and first["type"] != "extra_forbidden"
        else ""
    )
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    culprit = _culprit(tuple(first["loc"]), overrides or [], msg)
    key = ".".join(str(p) for p in first["loc"][:2] if not isinstance(p, int))
    hint = list_hint(key) if key.count(".") == 1 else None
    if culprit is not None:
        origin = culprit.origin
        if first["type"] == "extra_forbidden":
            fix = "use one of the known names"
        elif culprit.flag is not None:
            fix = (
                f"give {culprit.flag} {hint}, e.g. {culprit.flag} {_example(culprit.key)}"
                if hint
                else f"pass {culprit.flag} a valid value (built-in default: {_example(culprit.key)})"
            )
        else:
            fix = (
                f"give {culprit.key} {hint}, e.g. --set {culprit.key}={_example(culprit.key)}"
                if hint
                else f"give {culprit.key} a valid value, e.g. --set {culprit.key}={_example(culprit.key)}"
            )
    elif origin == "defaults":
        fix = "fix the parameter"
    else:
        fix = f"fix it in {origin} ({hint if hint else 'a valid value'}) or override it with --set {key or where}=..."
    return f"{origin}: {where}: {msg}{extra}{more}; {fix}"


# ------------------------------------------------------------------------- loading


def _as_override(item: str | Override) -> Override:
    if isinstance(item, Override):
        return item
    if "=" not in item:
        raise AtlasError(f"--set {item!r}: expected section.key=value, e.g. collect.batch_size=64")
    key, raw = item.split("=", 1)
    return Override(key.strip(), raw, origin=f"--set {item}")


def load_config(
    path: str | Path | None = DEFAULT_PARAMS, overrides: list[str] | list[Override] | list[str | Override] | None = None
) -> Config:
    """Read ``params.yaml`` (missing file: all defaults), apply overrides, validate."""
    tree: dict[str, Any] = {}
    origin = str(path) if path is not None else "defaults"
    if path is not None and Path(path).exists():
        if not Path(path).is_file():
            raise AtlasError(f"{path}: the parameters file is not a file; pass a YAML file with --params")
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise AtlasError(f"{path}:{where} is not valid YAML; fix the syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise AtlasError(
                f"{path}: cannot read the parameters file ({reason}); pass a readable YAML file with --params"
            ) from None
        if not isinstance(loaded, dict):
            raise AtlasError(f"{path}: expected a mapping of sections (data, model, collect, ...)")
        tree = loaded
    elif path is not None and Path(path) != DEFAULT_PARAMS:
        raise AtlasError(f"{path}: parameters file not found; pass an existing --params file")
    items = [_as_override(item) for item in overrides or []]
    for o in items:
        _set_dotted(tree, o.key, parse_value(o.key, o.raw, o.origin), origin=o.origin)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise AtlasError(_format_validation_error(err, origin, items)) from None
