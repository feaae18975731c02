"""A full disk or a read-only store stops a stage with one line; after the fix the same command resumes.

Tested on real filesystems: a small tmpfs this test mounts (and remounts bigger, or read-only),
when the test may mount (root with CAP_SYS_ADMIN, as on the CI machine); otherwise a subprocess
under ``RLIMIT_FSIZE`` stands in for the full disk and a read-only folder mode for the read-only
store. No ``write`` is mocked. After the failure nothing may be marked done that is not fully on
disk (``atlas verify`` finds no damage), and the rerun must give the same arrays and files as an
uninterrupted run (the session's ``small_atlas``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main as atlas_main
from stages import verify
from stages.config import Config
from stages.context import StageContext
from stages.sections import VerifySection
from store.digest import group_digests
from tests.atlas_fixtures import SmallAtlas

REPO = Path(__file__).resolve().parents[1]


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0
    )


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[bool]:
    """A tmpfs of ``size_kb`` at ``path`` (True), or nothing when this machine may not mount (False)."""
    mounted = os.geteuid() == 0 and _mount(path, f"size={size_kb}k")
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = atlas_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _collect_args(small_atlas: SmallAtlas, store: Path) -> list[str]:
    c = small_atlas.config.collect
    return [
        "collect",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--source",
        str(small_atlas.photos),
        "--store",
        str(store),
        "--set",
        f"collect.views_per_image={c.views_per_image}",
        "--set",
        f"collect.positions_per_image={c.positions_per_image}",
        "--set",
        f"collect.rows_per_chunk={c.rows_per_chunk}",
        "--set",
        "collect.num_workers=0",
        "--set",
        f"collect.batch_size={c.batch_size}",
        "--set",
        "collect.device=cpu",
        "--set",
        f"model.layer={small_atlas.config.model.layer}",
    ]


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("atlas ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_collect_on_a_full_disk_stops_in_one_line_and_resumes_identically(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    store = disk / "store.zarr"
    with small_filesystem(disk, 240) as mounted:
        if not mounted:
            _collect_under_file_size_limit(small_atlas, tmp_path)
            return
        code, _out, err = _cli(capsys, *_collect_args(small_atlas, store))
        assert code == 2, err[-2000:]
        line = _one_line(err)
        assert f"cannot write {disk}" in line and "No space left on device" in line and "free space" in line, line
        assert "rerun the same command" in line
        report = verify.run(
            VerifySection.of(Config.model_validate({"data": {"store": str(store), "atlas": str(tmp_path / "no")}})),
            StageContext(),
        ).report
        assert report.ok, [p.line() for p in report.damage]  # nothing marked done that is not on disk
        _remount(disk, "size=4m")
        code, _out, err = _cli(capsys, *_collect_args(small_atlas, store))
        assert code == 0, err[-2000:]
        assert group_digests(store) == group_digests(small_atlas.store.path)


def _collect_under_file_size_limit(small_atlas: SmallAtlas, tmp_path: Path) -> None:
    """Without mount rights: the same run in a subprocess whose files may not reach the largest chunk's size."""
    store = tmp_path / "limited" / "store.zarr"
    largest = max(p.stat().st_size for p in small_atlas.store.path.rglob("*") if p.is_file())
    limit = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({largest - 1}, {largest - 1})); "
        "from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", limit, *_collect_args(small_atlas, store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = _one_line(proc.stderr)
    assert f"cannot write {store}" in line and "File too large" in line, line
    config = Config.model_validate({"data": {"store": str(store), "atlas": str(tmp_path / "no")}})
    assert verify.run(VerifySection.of(config), StageContext()).report.ok
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *_collect_args(small_atlas, store)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert group_digests(store) == group_digests(small_atlas.store.path)


def _copy_for_grid(small_atlas: SmallAtlas, folder: Path) -> Path:
    src = small_atlas.store.path
    for name in ("", ".layout"):
        shutil.copytree(src.with_name(f"{src.stem}{name}.zarr"), folder / f"store{name}.zarr")
    return folder / "store.zarr"


def test_grid_on_a_read_only_store_stops_in_one_line_and_resumes(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    grid_args = [
        "grid",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--store",
        str(disk / "store.zarr"),
        "--set",
        f"grid.levels={small_atlas.levels}",
        "--set",
        f"grid.min_count={small_atlas.config.grid.min_count}",
    ]
    with small_filesystem(disk, 16384) as mounted:
        if mounted:
            store = _copy_for_grid(small_atlas, disk)
            _remount(disk, "ro")
        else:
            if os.geteuid() == 0:
                pytest.skip("root without mount rights: a folder mode does not stop root from writing")
            store = _copy_for_grid(small_atlas, disk)
            disk.chmod(0o555)
        try:
            code, _out, err = _cli(capsys, *grid_args)
            assert code == 2, err[-2000:]
            line = _one_line(err)
            assert f"cannot write {disk}" in line, line
            assert ("Read-only file system" in line and "remount it writable" in line) or "Permission denied" in line
        finally:
            _remount(disk, "rw") if mounted else disk.chmod(0o755)
        assert not store.with_name("store.grid.zarr").exists()
        code, _out, err = _cli(capsys, *grid_args)
        assert code == 0, err[-2000:]
        for name in ("grid", "whitening"):
            assert group_digests(store.with_name(f"store.{name}.zarr")) == group_digests(
                small_atlas.store.derived_path(name)
            )


def test_tiles_on_a_full_disk_stop_in_one_line_and_resume_identically(
    small_atlas: SmallAtlas, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / f"export-{uuid.uuid4().hex[:6]}"
    tiles_args = [
        "tiles",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--store",
        str(small_atlas.store.path),
        "--tile-size",
        "256",
        "--examples",
        "0",
    ]
    code, _out, err = _cli(capsys, *tiles_args, "--atlas", str(tmp_path / "reference"))
    assert code == 0, err[-2000:]
    with small_filesystem(disk, 400) as mounted:
        if not mounted:
            pytest.skip("this machine may not mount a small filesystem (the collect test covers RLIMIT_FSIZE)")
        code, _out, err = _cli(capsys, *tiles_args, "--atlas", str(disk))
        assert code == 2, err[-2000:]
        line = _one_line(err)
        assert f"cannot write {disk}" in line and "No space left on device" in line, line
        assert not (disk / "main").exists()  # nothing half-written in place
        _remount(disk, "size=16m")
        code, _out, err = _cli(capsys, *tiles_args, "--atlas", str(disk))
        assert code == 0, err[-2000:]
        ref = tmp_path / "reference" / "main"
        files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file() and p.name != "checksums.json")
        assert files and files == sorted(
            p.relative_to(disk / "main")
            for p in (disk / "main").rglob("*")
            if p.is_file() and p.name != "checksums.json"
        )
        assert all((ref / f).read_bytes() == (disk / "main" / f).read_bytes() for f in files)
