"""Every stage is crash-safe: SIGKILL at random moments, rerun, identical outputs; two at once, no damage.

Real processes, real files, real SIGKILL (``tests/crash_driver.py`` forks a child per run from
one process that imported the stages once). Each stage runs on private copies of the session's
``small_atlas`` store: once uninterrupted (the reference), then killed up to three times at random
moments and rerun to completion, and (render, tiles) twice at the same time on one output. After every kill, what the next stage would accept of the partial outputs must equal the
reference (a reader may refuse an unfinished output, never take a partial one as complete); at
the end the array contents (``store.digest.group_digests``) and exported files must equal the
reference's, and ``atlas verify`` must find no damage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stages import verify
from stages.config import Config
from stages.context import StageContext
from stages.sections import VerifySection
from store.atlas_store import AtlasStore
from store.digest import group_digests
from store.files import read_manifest
from tests.atlas_fixtures import SmallAtlas

REPO = Path(__file__).resolve().parents[1]
# stage -> (groups of the small atlas it needs, whether two runs go at once)
MAIN_STAGES = {
    "reduce": ((), False),
    "grid": ((".layout",), False),
    "render": ((".layout", ".grid", ".whitening"), True),
    "tiles": ((".layout", ".grid", ".whitening", ".icons"), True),
}
SUBSET_STAGES = {"classes": ((".whitening",), False), "compare": ((".whitening",), False)}


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """Every core busy with a spinning process (at least two) while the test runs; stopped after."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 2))
    ]
    try:
        yield len(spinners)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def _copy(small_atlas: SmallAtlas, root: Path, groups: tuple[str, ...], config: Config) -> Config:
    src = small_atlas.store.path
    for name in ("", *groups):
        shutil.copytree(src.with_name(f"{src.stem}{name}.zarr"), root / f"store{name}.zarr")
    cfg = Config.model_validate(config.model_dump())
    cfg.data.store, cfg.data.atlas = str(root / "store.zarr"), str(root / "atlas")
    return cfg


def _light(small_atlas: SmallAtlas) -> Config:
    """The small atlas's settings with cheaper icons and fewer, larger tiles (the kills need many runs)."""
    cfg = Config.model_validate(small_atlas.config.model_dump())
    cfg.render.steps = 4
    cfg.tiles.tile_size, cfg.tiles.examples = 256, 1
    return cfg


def _subset_config(small_atlas: SmallAtlas) -> Config:
    cfg = _light(small_atlas)
    store = small_atlas.store
    idx, val = (np.asarray(a.compute()) for a in store.attribution_topk())
    counts = np.bincount(idx[(val > 0) & (idx >= 0)].ravel(), minlength=len(store.class_names))
    a, b = np.argsort(-counts, kind="stable")[:2].tolist()
    cfg.reduce.tsne_perplexity, cfg.reduce.n_neighbors = 3.0, 5
    cfg.classes.names, cfg.classes.method, cfg.classes.min_rows, cfg.classes.min_count = [str(a)], "tsne", 10, 0
    cfg.classes.n_neighbors = 5
    cfg.compare.pairs, cfg.compare.min_rows, cfg.compare.min_count, cfg.compare.tsne_perplexity = (
        [(str(a), str(b))],
        10,
        0,
        5.0,
    )
    return cfg


def _jobs(
    small_atlas: SmallAtlas, root: Path, stages: dict[str, tuple[tuple[str, ...], bool]], config: Config
) -> list[dict]:
    jobs = []
    for k, (stage, (groups, concurrent)) in enumerate(stages.items()):
        job = {
            "stage": stage,
            "seed": k + 100 * int(os.environ.get("CRASH_SEED", "0")),
            "kills": 3 if stage in ("render", "tiles") else 2,
        }
        for role in ("reference", "work", *(("concurrent",) if concurrent else ())):
            folder = root / stage / role
            job[role] = _copy(small_atlas, folder, groups, config).model_dump(mode="json")
        jobs.append(job)
    return jobs


def _drive(jobs: list[dict], tmp_path: Path) -> dict[str, dict]:
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crash_driver", str(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    problems = [line for line in proc.stdout.splitlines() if line.startswith("PROBLEM ")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not problems, "\n".join(problems)
    results = [json.loads(line[len("RESULT ") :]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    for r in results:  # the children's tracebacks, to explain a failed run
        r["stderr"] = proc.stderr[-4000:]
    return {r["stage"]: r for r in results}


def _outputs(root: Path) -> dict[str, object]:
    """Array contents of every zarr group and bytes of every exported file under ``root`` (paths relative)."""
    out: dict[str, object] = {}
    for group in sorted(root.rglob("*.zarr")):
        if (group / "zarr.json").exists() and not any(part.startswith(".") for part in group.relative_to(root).parts):
            out[group.relative_to(root).as_posix()] = group_digests(group)
    atlas = root / "atlas"
    for path in sorted(atlas.rglob("*")) if atlas.is_dir() else []:
        rel = path.relative_to(atlas)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or rel.parts[0] == "viewer":
            continue
        # checksums.json also names the store it was made from (a path): compare its file list only
        out[f"atlas/{rel.as_posix()}"] = (
            read_manifest(path.parent)["files"] if path.name == "checksums.json" else path.read_bytes()
        )
    return out


def _assert_resumed_like_uninterrupted(results: dict[str, dict], root: Path) -> None:
    for stage, r in results.items():
        detail = {k: v for k, v in r.items() if k != "stderr"}
        assert r["reference_exit"] == 0 and r["final_exit"] == 0, f"{detail}\nchildren's stderr:\n{r['stderr']}"
        assert r["reference_events"] > 0, f"{stage}: the reference run reported no write ({r})"
        assert r["kills"][0]["killed"], f"{stage}: the first run, held at a write, was not killed ({r})"
        assert all(code == 0 for code in r["checks"]), r
        reference = _outputs(root / stage / "reference")
        for role in ("work", "concurrent"):
            if not (root / stage / role).exists():
                continue
            if role == "concurrent":
                assert r["concurrent_exits"] == [0, 0], r
            got = _outputs(root / stage / role)
            assert sorted(got) == sorted(reference), f"{stage} {role}: outputs {sorted(set(got) ^ set(reference))}"
            changed = [k for k in reference if got[k] != reference[k]]
            assert not changed, f"{stage} {role}: {changed} differ from the uninterrupted run"
            config = Config.model_validate(
                {
                    "data": {
                        "store": str(root / stage / role / "store.zarr"),
                        "atlas": str(root / stage / role / "atlas"),
                    }
                }
            )
            report = verify.run(VerifySection.of(config), StageContext()).report
            assert report.ok, f"{stage} {role}: " + "; ".join(p.line() for p in report.damage)


def test_main_stages_survive_sigkill_and_concurrent_runs(
    small_atlas: SmallAtlas, tmp_path: Path, busy_cores: int
) -> None:
    root = tmp_path / "runs"
    results = _drive(_jobs(small_atlas, root, MAIN_STAGES, _light(small_atlas)), tmp_path)
    assert sorted(results) == sorted(MAIN_STAGES)
    _assert_resumed_like_uninterrupted(results, root)
    # the reference runs are the small atlas's own stages: same layout and grid as the session fixture
    ref = AtlasStore.open(root / "grid" / "reference" / "store.zarr")
    assert group_digests(ref.derived_path("grid")) == group_digests(small_atlas.store.derived_path("grid"))


def test_class_and_compare_atlases_survive_sigkill(small_atlas: SmallAtlas, tmp_path: Path, busy_cores: int) -> None:
    root = tmp_path / "runs"
    results = _drive(_jobs(small_atlas, root, SUBSET_STAGES, _subset_config(small_atlas)), tmp_path)
    _assert_resumed_like_uninterrupted(results, root)
    for stage in SUBSET_STAGES:  # each built a subset atlas and exported it
        kind = "class" if stage == "classes" else "compare"
        assert list((root / stage / "work" / "atlas" / kind).glob("*/manifest.json")), stage
