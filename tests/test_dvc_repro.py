"""`dvc repro` of the repo's own dvc.yaml, for real, in a temporary git + DVC repository.

The repo's dvc.yaml and the code it runs are copied into a fresh repository whose params.yaml is
the repo's with tiny settings (four scikit-image photos, 2 views, PCA layout, one 3x3 level,
4-step 32 px icons). After one `dvc repro` of the main chain (demo_data -> collect -> reduce ->
grid -> render -> tiles), each parameter change is checked against the table in docs/dvc.md:
`dvc status --json` names the stages that read the parameter, and `dvc repro --dry
--force-downstream` the stages that rerun (every stage downstream of a changed output reruns).
`dvc exp run -S render.steps=5` then runs for real, offline, and must run only render and tiles.
The class and comparison stages (which also read model/grid/render params) are not run here:
every command targets the main chain's last stage. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.config import Config
from stages.model.weights import install_default_weights

REPO = Path(__file__).resolve().parents[1]
CODE = ("pipeline", "stages", "store")
# The table of docs/dvc.md, for the stages this test knows; tiles is expected where dvc.yaml has it.
KNOWN = {"demo_data", "collect", "reduce", "grid", "render", "tiles"}
FROM_COLLECT = {"collect", "reduce", "grid", "render", "tiles"}
TINY = {
    "data": {"source": "data/photos"},
    "collect": {
        "views_per_image": 2,
        "positions_per_image": 4,
        "rows_per_chunk": 64,
        "num_workers": 0,
        "batch_size": 8,
        "device": "cpu",
    },
    "reduce": {"method": "pca", "n_neighbors": 5, "fit_samples": 100},
    "grid": {"levels": [3], "min_count": 1},
    "render": {"levels": [3], "steps": 4, "size": 32, "batch_size": 16, "device": "cpu"},
    "tiles": {"tile_size": 64, "examples": 1, "example_px": 32, "layout_points": 100},
}


def _path_with(root: Path) -> str:
    """PATH for the stages: ``python3`` is the interpreter under test, whatever PATH had first.

    dvc.yaml runs every stage as ``python3 -m pipeline.cli``. The test must not depend on which
    ``python3`` comes first on the machine's PATH (the system one may lack the project's packages
    when the suite runs from a virtualenv that is not activated), so a ``python3`` that execs
    ``sys.executable`` goes first, and behind it a bare virtualenv's ``python3`` (no packages), so
    that a stage that escaped the first would fail here on every machine, not just on some.
    """
    shim = root / ".bin"
    if not shim.exists():
        bare = root / ".bare-venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=300)
        shim.mkdir()
        (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (shim / "python3").chmod(0o755)
    return os.pathsep.join([str(shim), str(root / ".bare-venv" / "bin"), os.environ.get("PATH", "")])


def _env(root: Path) -> dict[str, str]:
    ident = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "atlas test"), ("EMAIL", "atlas@example.invalid"))
    }
    return {
        **os.environ,
        **ident,
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
        "PATH": _path_with(root),
        "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache"),
        "PYTHONPATH": str(root),
    }


def _run(root: Path, *args: str) -> str:
    proc = subprocess.run(list(args), cwd=root, env=_env(root), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (
        f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


def _dvc(root: Path, *args: str) -> str:
    return _run(root, sys.executable, "-m", "dvc", *args)


def _stages_run(output: str) -> set[str]:
    """Stages a (dry) repro ran: "Running stage 'x'" or restored from DVC's run cache."""
    return set(re.findall(r"Running stage '([^']+)'", output)) | set(re.findall(r"Stage '([^']+)' is cached", output))


def _status(root: Path) -> set[str]:
    """Stages of the main chain whose own inputs changed (never-run stages off the chain aside)."""
    return set(json.loads(_dvc(root, "status", "--json").strip().splitlines()[-1])) & KNOWN


def _target(root: Path) -> str:
    """The main chain's last stage: tiles (render in a dvc.yaml from before tiles existed)."""
    return "tiles" if "tiles" in _present(root) else "render"


def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        if section in params:  # tiles only once the repo has that section
            params[section].update(values)
    return params


def _write_photos(folder: Path) -> None:
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True)
    for i, name in enumerate(("chelsea", "astronaut", "coffee", "rocket")):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{i}_{name}.jpg", quality=92)


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo with the repo's dvc.yaml and code, tiny params, after one full `dvc repro`."""
    install_default_weights()
    root = tmp_path_factory.mktemp("dvc_repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CODE:
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    (root / ".gitignore").write_text("/data/\n/.dvc-site-cache/\n/.bin/\n/.bare-venv/\n")
    _write_photos(root / "data" / "photos" / "photo")
    _run(root, "git", "init", "-q")
    _dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")  # bytecode inside the stage packages is no input
    _dvc(root, "config", "core.analytics", "false")
    # demo_data builds the real demo set from Debian packages; here the photos are already in
    # place, so record them as that stage's output instead of running it.
    _dvc(root, "commit", "-f", "demo_data")
    ran = _stages_run(_dvc(root, "repro", _target(root)))
    assert ran == (KNOWN & _present(root)) - {"demo_data"}
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "tiny atlas")
    return root


def _present(root: Path) -> set[str]:
    return set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


def _with_params(root: Path, dotted: str, value: object) -> tuple[set[str], set[str]]:
    """(stages `dvc status` reports, stages a dry forced-downstream repro runs) with one parameter
    changed; params.yaml is restored afterwards."""
    path = root / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    section, key = dotted.split(".")
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return _status(root), _stages_run(_dvc(root, "repro", "--dry", "--force-downstream", _target(root)))
    finally:
        path.write_text(original)


def test_every_parameter_lives_in_params_yaml() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, field in Config.model_fields.items():
        missing = set(field.annotation.model_fields) - set(params.get(section) or {})
        assert not missing, f"params.yaml lacks {section}: {sorted(missing)}"


def test_repro_is_up_to_date_after_one_run(dvc_repo: Path) -> None:
    assert _status(dvc_repo) == set()
    assert (dvc_repo / "data" / "store.icons.zarr" / "zarr.json").exists()


def test_grid_param_reruns_grid_render_tiles(dvc_repo: Path) -> None:
    direct, ran = _with_params(dvc_repo, "grid.min_count", 2)
    assert direct == {"grid"}
    assert ran & KNOWN == {"grid", "render", "tiles"} & _present(dvc_repo)


def test_model_layer_reruns_everything_from_collect(dvc_repo: Path) -> None:
    direct, ran = _with_params(dvc_repo, "model.layer", "features.12.conv.0")
    assert direct == {"collect", "render"}  # both load the model
    assert ran & KNOWN == FROM_COLLECT & _present(dvc_repo)


def test_tiles_param_reruns_tiles_only(dvc_repo: Path) -> None:
    if "tiles" not in _present(dvc_repo):
        pytest.skip("dvc.yaml has no tiles stage")
    direct, ran = _with_params(dvc_repo, "tiles.quality", 80)
    assert direct == {"tiles"} and ran & KNOWN == {"tiles"}


def test_where_it_runs_reruns_nothing(dvc_repo: Path) -> None:
    direct, ran = _with_params(dvc_repo, "cluster.workers", 4)
    assert direct == set() and ran == set()


def test_exp_run_of_a_render_param_reruns_render_and_tiles_only(dvc_repo: Path) -> None:
    direct, ran = _with_params(dvc_repo, "render.steps", 5)
    assert direct == {"render"} and ran & KNOWN == {"render", "tiles"} & _present(dvc_repo)
    output = _dvc(dvc_repo, "exp", "run", "-S", "render.steps=5", _target(dvc_repo))
    assert _stages_run(output) & KNOWN == {"render", "tiles"} & _present(dvc_repo)
    for stage in {"collect", "reduce", "grid"}:
        assert f"Stage '{stage}' didn't change" in output
    assert "Ran experiment" in output and _status(dvc_repo) == set()
    icons = json.loads((dvc_repo / "data" / "store.icons.zarr" / "zarr.json").read_text())
    assert icons["attributes"]["params"]["steps"] == 5
