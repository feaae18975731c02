"""The CLI's edges: every flag of every command, fed a malformed value, ends with one error line.

The walk goes over :data:`pipeline.cli.COMMANDS` (through :func:`pipeline.cli.build_parser`, so a new
command or a new config field is walked without touching this file) and runs each command in-process
with one flag (or positional, or ``--set``, or ``--params``) malformed: a wrong type, an empty string,
a path in a folder that cannot be created (under a file), a path without an extension, a nonsense
choice, a broken comma list. Each case must end with a non-zero status, no exception out of
``main()`` (that would be a traceback), and exactly one ``atlas <command>: error: ...`` line as the
last line on stderr. Values a command accepts as valid run into a cheap failing setup instead of real
work (an empty working folder: no store, no photos; an image that is missing; a model that does not
exist), so no case loads a model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image

from pipeline import cli
from pipeline.params import load_config
from store.errors import AtlasError

# the positionals each command is walked with: valid where the command must get past them, and an
# input that is missing where that is the cheap way to stop (no model is ever loaded)
BASE_POSITIONALS = {
    "render-unit": ["direction:missing.npy"],
    "explain": ["photo.jpg"],  # exists; the store does not
    "sanity-check": ["missing.jpg"],
    "layers": ["no_such_model_xyz"],
    "demo-data": ["blocker.txt/sub"],
    "serve": ["missing_folder"],
}
# Appended to a command's cases (but those of the flag it sets): what the walk needs from the
# parameters. align: no pairs, so a value that passes validation stops at the one-line "align.pairs
# is empty" instead of loading the demo's two default pairs' models in every case (minutes in all).
TRAILING = {"align": ("--pairs", ["--set", "align.pairs=[]"])}


def _malformed(ws: Path) -> dict[str, str]:
    return {
        "wrong type": "abc",
        "empty": "",
        "negative": "-1",
        "nonsense choice": "no-such-choice",
        "folder under a file": str(ws / "blocker.txt" / "sub" / "out.png"),
        "missing folder": str(ws / "missing" / "sub" / "out.png"),
        "no extension": str(ws / "noext"),
        "existing file": str(ws / "blocker.txt"),
        "broken comma list": "a,,b",
        "broken YAML list": "[unclosed",
        "bad pair": "lemon:orange:tabby",
    }


SET_VALUES = [
    "",
    "abc",
    "=1",
    ".x=1",
    "collect.bogus=1",
    "data=1",
    "grid.levels=",
    "grid.levels=10,,20",
    "explain.methods=[unclosed",
    "collect.batch_size.x=1",
    "compare.pairs=lemon",
    "align.pairs=a,b",
]


# positionals that name a folder to be written: any name is a valid folder, so only the ones that cannot be
OUTPUT_FOLDERS = {("demo-data", "out_dir"): ("empty", "folder under a file", "existing file")}

# commands whose documented answer to a missing store is a report and another status (docs/store.md)
REPORTS = {"verify": (1, "verify ")}


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    """An empty working folder (no params.yaml, no store, no photos) but for one photo and one plain file."""
    ws = tmp_path
    (ws / "blocker.txt").write_text("")  # a plain file where a folder would have to be (empty: no image list)
    (ws / "scalar.yaml").write_text("just a string\n")
    (ws / "params_dir").mkdir()
    Image.new("RGB", (32, 32), (120, 60, 30)).save(ws / "photo.jpg")
    return ws


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _cases(parser: argparse.ArgumentParser, command: str, ws: Path) -> list[tuple[str, list[str]]]:
    """(description, argv) for every malformed value of every argument of ``command``."""
    base = list(BASE_POSITIONALS.get(command, []))
    values = _malformed(ws)
    cases: list[tuple[str, list[str]]] = []
    positional = 0
    for action in _subparser(parser, command)._actions:
        if action.nargs == 0 or isinstance(action, argparse._HelpAction):
            continue  # switches (-q, --repair) take no value
        if not action.option_strings:
            keep = OUTPUT_FOLDERS.get((command, action.dest), tuple(values))
            for what, value in ((w, v) for w, v in values.items() if w in keep):
                args = list(base)
                args[positional : positional + 1] = [value]
                cases.append((f"{action.dest} ({what}: {value!r})", [command, *args]))
            positional += 1
            continue
        flag = max(action.option_strings, key=len)
        if flag == "--set":
            cases += [(f"--set {v!r}", [command, *base, "--set", v]) for v in SET_VALUES]
            continue
        if flag == "--params":
            for what, value in {
                "missing": str(ws / "missing.yaml"),
                "a folder": str(ws / "params_dir"),
                "empty": "",
                "not a mapping": str(ws / "scalar.yaml"),
                "not YAML": str(ws / "photo.jpg"),
            }.items():
                cases.append((f"--params ({what})", [command, *base, "--params", value]))
            continue
        for what, value in values.items():
            cases.append((f"{flag} ({what}: {value!r})", [command, *base, f"{flag}={value}"]))
    own_flag, trailing = TRAILING.get(command, ("", []))
    return [(what, argv if what.startswith(f"{own_flag} ") else argv + trailing) for what, argv in cases]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str, str]:
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


WALKED = [c.name for c in cli.COMMANDS if c.name != "install-weights"]  # takes no argument at all


@pytest.mark.parametrize("command", WALKED)
def test_every_flag_of_every_command_fails_with_one_line(
    command: str,
    workspace: Path,
    parser: argparse.ArgumentParser,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)  # one parser for the whole walk
    failures = []
    cases = _cases(parser, command, workspace)
    assert len(cases) >= 3
    for what, argv in cases:
        try:
            code, out, err = _run(argv, capsys)
        except Exception as exc:
            failures.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        lines = [line for line in err.splitlines() if line.strip()]
        report = REPORTS.get(command)
        if report is not None and code == report[0] and "Traceback" not in err and not lines:
            if out.splitlines()[-1].startswith(report[1]):
                continue  # the command's documented report of the problem (verify: the store is missing)
        errors = [line for line in lines if line.startswith(f"atlas {command}: error: ")]
        if code in (0, None) or "Traceback" in err or len(errors) != 1 or lines[-1] != errors[0]:
            failures.append(f"{what}: exit {code!r}, stderr {err[-400:]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


# ------------------------------------------------------------------------- lists on the command line


def _flag_config(parser: argparse.ArgumentParser, argv: list[str]):
    from pipeline.commands.common import config_from_args

    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(
    "key, comma, yaml_list, expected",
    [
        ("explain.methods", "saliency,cam", "[saliency, cam]", ["saliency", "cam"]),
        ("explain.methods", "saliency", "[saliency]", ["saliency"]),
        ("grid.levels", "10,20", "[10, 20]", [10, 20]),
        ("grid.levels", " 10 , 20 ", "[10,20]", [10, 20]),
        ("grid.levels", "10", "[10]", [10]),
        ("render.levels", "10", "[10]", [10]),
        ("classes.names", "tiger cat,281", "['tiger cat', 281]", ["tiger cat", 281]),
        (
            "compare.pairs",
            "lemon:orange,tabby:281",
            "[[lemon, orange], [tabby, 281]]",
            [("lemon", "orange"), ("tabby", 281)],
        ),
        ("collect.view_scale", "0.5,1", "[0.5, 1.0]", (0.5, 1.0)),
        ("align.ridge", "0.1,1", "[0.1, 1]", [0.1, 1.0]),
    ],
)
def test_comma_lists_and_yaml_lists_parse_to_the_same_value(
    key: str, comma: str, yaml_list: str, expected: object
) -> None:
    section, name = key.split(".")
    via_comma = getattr(getattr(load_config(None, [f"{key}={comma}"]), section), name)
    via_yaml = getattr(getattr(load_config(None, [f"{key}={yaml_list}"]), section), name)
    assert via_comma == via_yaml == expected


def test_list_flags_take_comma_lists(parser: argparse.ArgumentParser) -> None:
    config = _flag_config(parser, ["explain", "photo.jpg", "--methods", "saliency,cam", "--classes", "tabby,281"])
    assert config.explain.methods == ["saliency", "cam"] and config.explain.classes == ["tabby", 281]
    assert _flag_config(parser, ["grid", "--levels", "10,20"]).grid.levels == [10, 20]
    assert _flag_config(parser, ["compare", "--pairs", "lemon:tabby"]).compare.pairs == [("lemon", "tabby")]
    assert _flag_config(parser, ["tiles", "--levels", "null"]).tiles.levels is None
    # a text field keeps what was typed: '#000000' is a colour, not a YAML comment
    assert _flag_config(parser, ["tiles", "--background", "#000000"]).tiles.background == "#000000"
    assert _flag_config(parser, ["explain", "x.jpg", "--weights", "1"]).model.weights == "1"


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, _out, err = _run(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"atlas {argv[0]}: error: ")
    return lines[0]


def test_errors_name_where_the_value_came_from(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    line = _error_line(["explain", "photo.jpg", "--methods", "saliency,camm"], capsys)
    assert "--methods: explain.methods.1:" in line and "'camm'" in line and "e.g. --methods saliency," in line
    line = _error_line(["explain", "photo.jpg", "--set", "explain.methods=[saliency, camm]"], capsys)
    assert "--set explain.methods=[saliency, camm]:" in line and "'camm'" in line
    line = _error_line(["grid", "--levels", "10,,20"], capsys)
    assert "--levels" in line and "empty item" in line
    line = _error_line(["compare", "--pairs", "lemon-orange"], capsys)
    assert "--pairs" in line and "A:B" in line
    line = _error_line(["grid", "--set", "grid.levels=[10, 20", "-q"], capsys)
    assert "--set grid.levels=[10, 20" in line and "YAML list" in line
    # the value came from the parameters file: the file is named, and what to do
    (workspace / "p.yaml").write_text("explain:\n  methods: saliency,cam\n")
    line = _error_line(["explain", "photo.jpg", "--params", "p.yaml"], capsys)
    assert line.startswith("atlas explain: error: p.yaml: explain.methods:") and "fix it in p.yaml" in line
    # the flag overrides the file: the file's bad value is gone
    line = _error_line(["explain", "photo.jpg", "--params", "p.yaml", "--methods", "saliency,cam"], capsys)
    assert "explain.methods" not in line and "store" in line
    line = _error_line(["collect", "--scheduler", "abc"], capsys)
    assert "--scheduler: cluster.scheduler:" in line
    line = _error_line(["serve", "--port", "abc"], capsys)
    assert "--port" in line


@pytest.mark.parametrize(
    "argv, fragment",
    [
        # the case: no extension on explain's PNG; the store is missing too, but the output is checked first
        (["explain", "photo.jpg", "--methods", "[saliency]", "--out", "x"], "--out (explain.out) x: no extension"),
        (["explain", "photo.jpg", "--out", "x.txt"], "extension '.txt'"),
        (["explain", "photo.jpg", "--out", "blocker.txt/x.png"], "blocker.txt is a file"),
        (["explain", "photo.jpg", "--atlas", "blocker.txt"], "--atlas (data.atlas) blocker.txt: is a file"),
        (["plot-layout", "--out", "layout"], "--out layout: no extension"),
        (["render-unit", "channel:3", "--out", "unit"], "--out unit: no extension"),
        (["render-unit", "chanel:3"], "target 'chanel:3' is not one of"),
        (["sanity-check", "photo.jpg", "--figure", "fig"], "--figure (sanity.figure) fig: no extension"),
        (["sanity-check", "photo.jpg", "--out", "blocker.txt/r.json"], "--out (sanity.out)"),
        (["sanity-check", "missing.jpg"], "image missing.jpg: not found"),
        (["collect", "--store", "blocker.txt/s.zarr"], "--store (data.store)"),
        (["run", "--atlas", "blocker.txt/atlas"], "--atlas (data.atlas)"),
        (["tiles", "--atlas", "photo.jpg"], "is a file, not a folder"),
        (["demo-data", "blocker.txt"], "out_dir blocker.txt: is a file"),
    ],
)
def test_outputs_are_checked_before_any_work(
    argv: list[str], fragment: str, workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    assert fragment in _error_line(argv, capsys)
    assert not (workspace / "data").exists()  # nothing was written


def test_params_file_errors(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    (workspace / "params_dir").mkdir(exist_ok=True)
    assert "not a file" in _error_line(["grid", "--params", "params_dir"], capsys)
    assert "cannot read" in _error_line(["grid", "--params", "photo.jpg"], capsys)
    with pytest.raises(AtlasError, match="not a valid YAML list"):
        load_config(None, ["grid.levels=[1,"])


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["serve", "--port", "70000"], "--port 70000"),
        (["serve", "--port", "-1"], "--port -1"),
        (["serve", "--host", ""], "--host ''"),
        (["layers", "mobilenet_v2", "--image-size", "0"], "--image-size 0"),
        (["status", "--shards", "0"], "--shards 0"),
    ],
)
def test_numbers_out_of_range_stop_before_the_work(
    argv: list[str], fragment: str, workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    (workspace / "data" / "atlas").mkdir(parents=True)  # serve's default folder exists: the flag itself must stop it
    assert fragment in _error_line(argv, capsys)
