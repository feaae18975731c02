"""open_image_source: ImageFolder, flat folder, list file, and the errors a user can hit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from stages.images.sources import ImageSource, open_image_source
from store.errors import AtlasError


def _image(path: Path, color: tuple[int, int, int] = (10, 20, 30), size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def _relative(source: ImageSource) -> list[str]:
    return [source.relative_path(r) for r in source.records]


def test_imagefolder_labels_sorted_and_records_sorted(tmp_path: Path) -> None:
    _image(tmp_path / "dog" / "b.jpg")
    _image(tmp_path / "dog" / "a.PNG")  # upper-case extension counts
    _image(tmp_path / "cat" / "z.jpeg")
    _image(tmp_path / "cat" / "deeper" / "y.webp")  # below a class folder: still that class
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty_class").mkdir()
    _image(tmp_path / ".ipynb_checkpoints" / "x.jpg")
    source = open_image_source(tmp_path)
    assert source.kind == "imagefolder"
    assert source.label_names == ("cat", "dog")  # no class for the empty or hidden folder
    assert _relative(source) == ["cat/deeper/y.webp", "cat/z.jpeg", "dog/a.PNG", "dog/b.jpg"]
    assert [r.label for r in source.records] == [0, 0, 1, 1]
    assert all(Path(r.path).is_absolute() for r in source.records)


def test_top_level_files_next_to_classes_are_unlabelled(tmp_path: Path) -> None:
    _image(tmp_path / "cat" / "a.jpg")
    _image(tmp_path / "loose.jpg")
    source = open_image_source(tmp_path)
    assert source.kind == "imagefolder"
    labels = {source.relative_path(r): r.label for r in source.records}
    assert labels == {"cat/a.jpg": 0, "loose.jpg": -1}


def test_flat_folder(tmp_path: Path) -> None:
    _image(tmp_path / "b.bmp")
    _image(tmp_path / "a.tif")
    (tmp_path / "readme.md").write_text("hi")
    (tmp_path / "no_images_here").mkdir()
    source = open_image_source(str(tmp_path))
    assert source.kind == "flat" and source.label_names == ()
    assert _relative(source) == ["a.tif", "b.bmp"]
    assert {r.label for r in source.records} == {-1}


def test_file_list_resolves_relative_paths_and_keeps_bad_entries(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _image(photos / "one.jpg")
    absolute = _image(tmp_path / "elsewhere" / "two.png")
    listing = photos / "list.txt"
    listing.write_text(f"# my photos\n\none.jpg\tcat\n{absolute}\tdog\nmissing.jpg\ndocument.pdf\tcat\n")
    source = open_image_source(listing)
    assert source.kind == "filelist"
    assert source.label_names == ("cat", "dog")
    by_name = {Path(r.path).name: r for r in source.records}
    assert set(by_name) == {"one.jpg", "two.png", "missing.jpg", "document.pdf"}  # nothing dropped
    assert by_name["one.jpg"].path == str(photos / "one.jpg")
    assert by_name["two.png"].label == 1 and by_name["missing.jpg"].label == -1
    assert by_name["document.pdf"].label == 0


def test_file_list_bad_line_names_the_line(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("a.jpg\tcat\textra\n")
    with pytest.raises(AtlasError, match=r"list.txt:1"):
        open_image_source(listing)


def test_errors_are_one_line_and_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(AtlasError, match="not found") as missing:
        open_image_source(tmp_path / "nowhere")
    assert "nowhere" in str(missing.value) and "\n" not in str(missing.value)

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(AtlasError, match="no image files"):
        open_image_source(tmp_path / "docs")

    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(AtlasError, match="empty"):
        open_image_source(empty)

    with pytest.raises(AtlasError, match="is an image"):
        open_image_source(_image(tmp_path / "single.jpg"))


def test_fingerprint_stable_across_copies_and_sensitive_to_changes(tmp_path: Path) -> None:
    original = tmp_path / "a"
    _image(original / "cat" / "1.jpg")
    _image(original / "dog" / "2.jpg")
    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    first = open_image_source(original).fingerprint()
    assert first == open_image_source(copy).fingerprint()
    assert first == open_image_source(original).fingerprint()

    (copy / "dog" / "2.jpg").rename(copy / "cat" / "2.jpg")  # relabelled
    assert open_image_source(copy).fingerprint() != first

    _image(original / "cat" / "1.jpg", size=32)  # same name, different content size
    assert open_image_source(original).fingerprint() != first


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    names = ["c.jpg", "a.jpg", "b.jpg"]
    for name in names:
        _image(tmp_path / "x" / name)
    for name in reversed(names):
        _image(tmp_path / "y" / name)
    assert [Path(r.path).name for r in open_image_source(tmp_path / "x").records] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [Path(r.path).name for r in open_image_source(tmp_path / "y").records] == ["a.jpg", "b.jpg", "c.jpg"]
