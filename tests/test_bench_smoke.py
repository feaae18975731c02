"""Every bench in bench/ runs its ``--smoke`` size as a user would run it, so none can rot unnoticed.

Each bench is a subprocess (``python bench/X.py --smoke ... --out TMP.json``) against the session's
real small atlas (``small_atlas``: real MobileNetV2 weights, four real photos, the tests' layer
``features.13.conv.0``) or its photo folder. A bench that builds the default model (params.yaml's,
which is the typed default: ``features.17.conv.0``) instead of the store's fails on the small atlas;
one that builds the small atlas's layer regardless fails on the second render run, on the store
scale_collect's smoke collects at params.yaml's layer; and no bench may spell a layer at all
(``test_no_bench_names_a_model``).
Each test checks exit 0 and that the JSON holds real measured rows (positive rates, the layer
actually used). The runs go through a pool of three when the first test asks for them: ~150
CPU-seconds in all, small atlas included, so a little over a minute of wall time on an otherwise
idle 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.params import load_config

pytestmark = pytest.mark.slow  # real weights end to end; still part of CI

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
TIMEOUT_S = 900  # a ceiling per bench run on a slow, busy machine (each smoke takes well under a minute idle)
LIBRARIES = {"benchlib.py"}  # bench/ modules that are not benches


def _has_browser() -> bool:
    """As tests/test_viewer_browser.py: selenium plus a chromium and its driver on PATH."""
    browser = any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome")))
    return bool(browser and shutil.which("chromedriver") and importlib.util.find_spec("selenium"))


@dataclass
class Result:
    name: str
    args: list[str]
    returncode: int
    seconds: float  # wall
    cpu_seconds: float  # user + sys of the bench and its children (what the load of other jobs does not inflate)
    output: str
    out: Path

    def json(self) -> dict[str, Any]:
        assert self.returncode == 0, f"{self.name} exited {self.returncode}:\n{self.output[-4000:]}"
        assert self.out.is_file(), f"{self.name} wrote no {self.out}:\n{self.output[-2000:]}"
        return json.loads(self.out.read_text())


def _run(name: str, args: list[str], out: Path) -> Result:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    }
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = t0 + TIMEOUT_S
        while (status := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)  # the bench and the processes it started
                status = os.wait4(proc.pid, 0)
                fh.write(f"\ntimed out after {TIMEOUT_S} s\n")
                break
            time.sleep(0.1)
    _, code, usage = status
    proc.returncode = os.waitstatus_to_exitcode(code)
    return Result(
        name, args, proc.returncode, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, log.read_text(), out
    )


def _bench(tmp: Path, name: str, script: str, *args: str) -> tuple[list[str], Path]:
    """One bench's entry: ``bench/<script> <args> --out <tmp>/<name>.json`` and that JSON, so every
    bench writes its report where the smoke test reads it back."""
    out = tmp / f"{name}.json"
    return [f"bench/{script}", *args, "--out", str(out)], out


def _photo_commands(tmp: Path, photos: str) -> dict[str, tuple[list[str], Path]]:
    """The benches that need only the photo folder (they collect their own store), the slowest first."""
    return {
        "scale_collect": _bench(
            tmp,
            "scale_collect",
            "scale.py",
            "collect",
            "--smoke",
            "--source",
            photos,
            "--work",
            str(tmp / "scale_collect"),
        ),
        "collect": _bench(tmp, "collect", "collect.py", "--smoke", "--source", photos),
        "decode": _bench(tmp, "decode", "decode.py", "--smoke"),
        "listing": _bench(tmp, "listing", "listing.py", "--smoke", "--work", str(tmp / "listing")),
    }


def _store_commands(tmp: Path, store: str) -> dict[str, tuple[list[str], Path]]:
    """The benches that measure the small atlas's store, the slowest first."""
    return {
        "scale_stages": _bench(
            tmp,
            "scale_stages",
            "scale.py",
            "stages",
            "--smoke",
            "--tiles",
            "--real",
            store,
            "--work",
            str(tmp / "scale_stages"),
        ),
        "reduce": _bench(
            tmp, "reduce", "reduce.py", "--smoke", "--store", store, "--workdir", str(tmp / "reduce_work")
        ),
        "render": _bench(tmp, "render", "render.py", "--smoke", "--store", store),
        "gallery": _bench(tmp, "gallery", "gallery.py", "--smoke", "--store", store, "--png", str(tmp / "gallery.png")),
        "gallery_steps": _bench(
            tmp,
            "gallery_steps",
            "gallery.py",
            "--smoke",
            "--steps-figure",
            "--store",
            store,
            "--png",
            str(tmp / "steps.png"),
        ),
        "tiles": _bench(tmp, "tiles", "tiles.py", "--smoke", "--store", store),
        "converge": _bench(tmp, "converge", "converge.py", "--smoke", "--store", store),
    }


def _viewer_commands(tmp: Path, atlas: str) -> dict[str, tuple[list[str], Path]]:
    """The viewer benches, which drive a headless browser over the exported small atlas."""
    return {
        "viewer_screenshot": _bench(
            tmp, "viewer_screenshot", "viewer_screenshot.py", atlas, "--smoke", "--png", str(tmp / "viewer.png")
        ),
        "viewer": _bench(tmp, "viewer", "viewer.py", "--smoke"),
    }


def _commands(
    tmp: Path, photos: str, store: str | None = None, atlas: str | None = None
) -> dict[str, tuple[list[str], Path]]:
    """Bench name -> (argv after the interpreter, the JSON it writes), the slowest first: the benches
    that need only photos, or (given ``store`` and ``atlas``) those that measure the small atlas."""
    if store is None:
        return _photo_commands(tmp, photos)
    commands = _store_commands(tmp, store)
    if atlas is not None and _has_browser():
        commands.update(_viewer_commands(tmp, atlas))
    return commands


def _params_layer_render(tmp: Path) -> tuple[list[str], Path]:
    """bench/render.py on the store scale_collect's smoke collected at params.yaml's layer, which is
    not the small atlas's: with the small atlas (the tests' layer, not params.yaml's) a bench that
    builds any fixed model instead of the store's fails one of the two."""
    store = tmp / "scale_collect" / "collect.zarr"
    out = tmp / "render_params_layer.json"
    return ["bench/render.py", "--smoke", "--no-lucent", "--store", str(store), "--out", str(out)], out


@dataclass
class Smoke:
    runs: dict[str, Future]
    atlas: Any  # tests.atlas_fixtures.SmallAtlas

    def result(self, name: str) -> dict[str, Any]:
        return self.runs[name].result(timeout=TIMEOUT_S * 3).json()

    @property
    def layer(self) -> str:
        """The layer the small atlas's store was collected at."""
        return self.atlas.store.attrs["model"]["layer"]


@pytest.fixture(scope="module")
def smoke(request: pytest.FixtureRequest, photo_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """The runs (name -> Future[Result]) and the small atlas. The photo benches start first and run
    while the session's small atlas is built (when no earlier test built it); then the store benches
    and, once scale_collect's store exists, render at params.yaml's layer; three at a time."""
    tmp = tmp_path_factory.mktemp("bench_smoke")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(_run, name, args, out) for name, (args, out) in _commands(tmp, str(photo_folder)).items()
        }
        small_atlas = request.getfixturevalue("small_atlas")
        futures.update(
            {
                name: pool.submit(_run, name, args, out)
                for name, (args, out) in _commands(
                    tmp, str(photo_folder), str(small_atlas.store.path), str(small_atlas.atlas_dir)
                ).items()
            }
        )
        after = futures["scale_collect"]
        futures["render_params_layer"] = pool.submit(
            lambda: after.result() and _run("render_params_layer", *_params_layer_render(tmp))
        )
        yield Smoke(futures, small_atlas)
    done = [f.result() for f in futures.values()]
    print(
        f"\nbench smoke runs: {time.perf_counter() - t0:.0f} s wall in all (small atlas included), "
        f"{sum(r.cpu_seconds for r in done):.0f} CPU s; "
        + ", ".join(f"{r.name} {r.seconds:.0f}/{r.cpu_seconds:.0f}" for r in done)
        + " (wall/CPU s)"
    )


def test_every_bench_is_smoke_tested():
    """A new bench must join this file (and so have --smoke / --out)."""
    benches = {p.stem for p in BENCH.glob("*.py")} - {Path(n).stem for n in LIBRARIES}
    commands = {**_commands(Path("/t"), "p"), **_commands(Path("/t"), "p", "s")}
    covered = {args[0].split("/")[1][:-3] for args, _ in commands.values()}
    covered |= {"viewer_screenshot", "viewer"}  # left out only when no browser is installed (their tests skip)
    assert benches == covered


def test_small_atlas_layer_is_not_the_params_default(smoke: Smoke):
    """The premise of the store checks below: the store's layer differs from params.yaml's."""
    assert smoke.layer != load_config(REPO / "params.yaml").model.layer


def test_render(smoke: Smoke):
    r = smoke.result("render")
    assert r["model"]["layer"] == smoke.layer
    names = [row["name"] for row in r["rows"]]
    # cos-sim; atlas before (skipped where git has not the baseline revision), default, channels_last, bf16
    assert sum(n.startswith("engine") for n in names) in (4, 5)
    assert r["floor"]["a_over_b"] > 0 and r["floor"]["outside_a_profile"]
    if all(importlib.util.find_spec(m) is not None for m in ("lucent", "kornia")):  # the optional row
        assert names[0].startswith("lucent") and r["speedup_vs_lucent"]
    else:
        assert r["lucent"].startswith("skipped") and r["speedup_vs_lucent"] is None
    for row in r["rows"]:
        assert row["icons"] == r["icons"] > 0 and row["seconds"] > 0 and row["icons_per_s"] > 0
        assert -1 <= row["mean_cossim"] <= 1


def test_render_at_the_params_layer(smoke: Smoke):
    """The same bench on a store of the other layer (params.yaml's, 960 channels): no grid there, so
    the directions are pseudo-cells of its real rows."""
    r = smoke.result("render_params_layer")
    assert r["model"]["layer"] == load_config(REPO / "params.yaml").model.layer
    assert r["directions"].startswith("pseudo-cells") and len(r["rows"]) in (4, 5)
    assert all(row["icons_per_s"] > 0 for row in r["rows"])


def test_no_bench_names_a_model():
    """No bench spells a layer, a weights name or a default ModelConfig: they come from the store or flags."""
    pattern = re.compile(r"features\.\d+|inception\d|mixed\d|IMAGENET1K|ModelConfig\(\)")
    for path in BENCH.glob("*.py"):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        body = code.split('"""', 2)[-1] if code.lstrip().startswith('"""') else code  # the docstring may explain
        assert not pattern.search(body), f"{path.name}: {pattern.search(body).group(0)!r}"


def test_gallery(smoke: Smoke):
    r = smoke.result("gallery")
    assert r["model"]["layer"] == smoke.layer
    assert r["cells"] > 0 and r["cells_icons_per_s"] > 0 and len(r["channels"]) == 2
    assert math.isfinite(r["mean_cossim"]) and Path(r["png"]).stat().st_size > 0


def test_gallery_steps_figure(smoke: Smoke):
    r = smoke.result("gallery_steps")
    assert r["model"]["layer"] == smoke.layer
    assert [row["steps"] for row in r["rows"]] == [1, 2]
    assert all(row["icons"] > 0 and row["icons_per_s"] > 0 for row in r["rows"])
    assert Path(r["png"]).stat().st_size > 0


def test_converge(smoke: Smoke):
    r = smoke.result("converge")
    assert r["model"]["layer"] == smoke.layer and r["checkpoints"] == [1, 2] and r["attempts"] == 2
    assert {row["param"] for row in r["rows"]} == {"fourier", "maco"} and len(r["rows"]) == 2 * 2 * 2
    for row in r["rows"]:
        assert row["image_steps"] == row["attempts"] * row["steps"] and -1 <= row["mean_cossim"] <= 1
    assert all(c["cpu_ms_per_image_step"] > 0 for c in r["cost"].values())


def test_collect(smoke: Smoke):
    r = smoke.result("collect")
    assert r["model"]["layer"] == load_config(REPO / "params.yaml").model.layer  # photos: params.yaml's model
    assert r["stored"] == r["inputs"] == 4
    assert len(r["inputs_per_second"]) == 4 and all(v > 0 for v in r["inputs_per_second"].values())


def test_reduce(smoke: Smoke):
    r = smoke.result("reduce")
    assert r["data"]["model"]["layer"] == smoke.layer
    assert "real rows" in r["data"]["source"] and "error" not in r["plot"] and Path(r["plot"]["png"]).is_file()
    assert len(r["runs"]) == 5
    for run in r["runs"]:
        assert "error" not in run, run
        assert run["rows"] == 1000 and run["stage_s"] > 0 and 0 < run["trustworthiness"] <= 1


def test_tiles(smoke: Smoke):
    r = smoke.result("tiles")
    assert r["model"]["layer"] == smoke.layer
    assert [row["level"] for row in r["levels"]] == smoke.atlas.levels  # default: every grid level of the store
    for row in r["levels"]:
        assert row["icons"] == "rendered" and row["cells"] > 0 and row["tiles"] > 0 and row["examples"] > 0
    assert r["all_levels_seconds"] > 0


def test_scale_collect(smoke: Smoke):
    r = smoke.result("scale_collect")
    assert r["model"]["layer"] == load_config(REPO / "params.yaml").model.layer
    assert r["complete"] and r["store_counts"]["stored"] == r["inputs"] == 16
    assert all(p["returncode"] == 0 for p in r["processes"][1:]) and r["inputs_per_cpu_s"] > 0


def test_scale_stages(smoke: Smoke):
    r = smoke.result("scale_stages")
    assert r["model"]["layer"] == smoke.layer
    assert r["rows"] == 1000 and r["cells_per_level"] and all(n > 0 for n in r["cells_per_level"].values())
    assert [p["returncode"] for p in r["processes"]] == [0] * 6  # make store, reduce, grid, render, tiles, bench
    tiles = json.loads((smoke.runs["scale_stages"].result().out.with_name("scale_stages_tiles.json")).read_text())
    assert tiles["model"]["layer"] == smoke.layer and tiles["levels"]


def test_viewer_screenshot(smoke: Smoke):
    if "viewer_screenshot" not in smoke.runs:
        pytest.skip(
            "selenium or chromium/chromedriver not found; scripts/test.sh installs them "
            "(apt-get install -y chromium chromium-driver)"
        )
    r = smoke.result("viewer_screenshot")
    assert r["model"]["layer"] == smoke.layer
    for how in ("file", "http"):
        assert 0 < r["timings"][how]["page_load_s"] <= r["timings"][how]["tiles_loaded_s"]
    assert r["screenshot"]["png_kb"] > 0 and Path(r["screenshot"]["png"]).is_file()


def test_viewer(smoke: Smoke):
    """bench/viewer.py exports its own tiny atlas (no store, no model) and times the viewer on it."""
    if "viewer" not in smoke.runs:
        pytest.skip(
            "selenium or chromium/chromedriver not found; scripts/test.sh installs them "
            "(apt-get install -y chromium chromium-driver)"
        )
    r = smoke.result("viewer")
    assert r["levels"] and all(n > 0 for n in r["cells"].values())
    for how in ("file", "http"):
        assert r[how]["ready_ms"] > 0 and r[how]["data_bytes"] > 0
    assert r["hover_home"]["n"] > 0 and r["search"]["n"] > 0
