"""Where the photos come from: an ImageFolder tree, a flat folder, or a list file.

``data.source`` may name any of the three; :func:`open_image_source` turns it into an
:class:`ImageSource` whose records are in one deterministic order (sorted by path relative to
the root), so sample ``i`` is the same photo on every machine, in every shard and on every
rerun. The fingerprint lets the store notice that the photo set changed under it.

Folder rules (torchvision's ImageFolder, made forgiving):

* image files directly in the folder and no subfolder with images: ``flat`` (label -1);
* subfolders with images: ``imagefolder``, one label per subfolder (sorted names; images
  anywhere below a class folder count for it, as in torchvision); image files that also sit
  at the top level are kept, unlabelled (-1), rather than dropped or treated as a class;
* names starting with ``.`` (``.ipynb_checkpoints``, ``.DS_Store``) and files with other
  extensions are ignored; subfolders without images do not become (empty) classes.

A list file names one image per line (``#`` comments and blank lines ignored), relative
paths resolved against the list file's folder, optionally ``path<TAB>label``. Every listed
path becomes a record even when missing or oddly named, so the decode step records it as
skipped instead of it vanishing from the counts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import AtlasError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
_EXTENSIONS_TEXT = " ".join(sorted(IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class ImageRecord:
    path: str  # absolute path
    label: int  # index into ImageSource.label_names, -1 when unknown


@dataclass(frozen=True)
class ImageSource:
    kind: str  # "imagefolder" | "flat" | "filelist"
    root: str
    records: tuple[ImageRecord, ...]  # deterministic order (sorted by relative path)
    label_names: tuple[str, ...]  # ImageFolder subfolder names, sorted; () when unlabelled

    def relative_path(self, record: ImageRecord) -> str:
        """The record's path relative to ``root``, with ``/`` separators on every OS."""
        return Path(os.path.relpath(record.path, self.root)).as_posix()

    def fingerprint(self) -> str:
        """sha256 over (relative path, file size, label name) of every record.

        Relative paths and sizes, not absolute paths or mtimes, so a copied or moved folder
        (rsync to a cluster, a fresh checkout) keeps its fingerprint while an added, removed,
        replaced or relabelled photo changes it. Missing files count with size -1.
        """
        digest = hashlib.sha256()
        digest.update(f"{self.kind}\n".encode())
        for record in self.records:
            try:
                size = os.stat(record.path).st_size
            except OSError:
                size = -1
            name = self.label_names[record.label] if record.label >= 0 else ""
            digest.update(f"{self.relative_path(record)}\t{size}\t{name}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()


def is_image_name(name: str) -> bool:
    """True for the accepted image extensions, case-insensitive."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_below(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (symlinks followed, hidden names skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found.extend(Path(dirpath) / f for f in filenames if _visible(f) and is_image_name(f))
    return found


def _sorted_records(root: Path, pairs: list[tuple[Path, int]]) -> tuple[ImageRecord, ...]:
    keyed = [(Path(os.path.relpath(path, root)).as_posix(), path, label) for path, label in pairs]
    keyed.sort(key=lambda item: item[0])
    return tuple(ImageRecord(path=os.path.abspath(path), label=label) for _, path, label in keyed)


def _open_folder(root: Path) -> ImageSource:
    top_files: list[Path] = []
    classes: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        if entry.is_dir():
            images = _images_below(Path(entry.path))
            if images:
                classes[entry.name] = images
        elif entry.is_file() and is_image_name(entry.name):
            top_files.append(Path(entry.path))
    if not top_files and not classes:
        raise AtlasError(
            f"{root}: folder contains no image files ({_EXTENSIONS_TEXT}); "
            "point data.source at a folder of photos, an ImageFolder tree, or a list file"
        )
    label_names = tuple(sorted(classes))
    pairs = [(path, -1) for path in top_files]
    for index, name in enumerate(label_names):
        pairs.extend((path, index) for path in classes[name])
    kind = "imagefolder" if classes else "flat"
    return ImageSource(kind=kind, root=os.path.abspath(root), records=_sorted_records(root, pairs), label_names=label_names)


def _parse_list_line(line: str, list_file: Path, number: int) -> tuple[str, str | None] | None:
    """``path`` or ``path<TAB>label``; None for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    columns = [c.strip() for c in text.split("\t")]
    if len(columns) > 2:
        raise AtlasError(f"{list_file}:{number}: expected 'path' or 'path<TAB>label', found {len(columns)} tab-separated columns")
    label = columns[1] if len(columns) == 2 and columns[1] else None
    return columns[0], label


def _open_file_list(list_file: Path) -> ImageSource:
    if is_image_name(list_file.name):
        raise AtlasError(
            f"{list_file}: is an image, not a list; set data.source to its folder or to a text file listing image paths"
        )
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AtlasError(
            f"{list_file}: not a UTF-8 text file; data.source must be a folder or a text file listing image paths"
        ) from None
    base = list_file.parent
    entries: list[tuple[Path, str | None]] = []
    for number, line in enumerate(lines, start=1):
        parsed = _parse_list_line(line, list_file, number)
        if parsed is not None:
            listed = Path(parsed[0]).expanduser()
            entries.append((listed if listed.is_absolute() else base / listed, parsed[1]))
    if not entries:
        raise AtlasError(f"{list_file}: list file is empty; add one image path per line (optionally path<TAB>label)")
    label_names = tuple(sorted({label for _, label in entries if label is not None}))
    index = {name: i for i, name in enumerate(label_names)}
    pairs = [(path, index[label] if label is not None else -1) for path, label in entries]
    return ImageSource(kind="filelist", root=os.path.abspath(base), records=_sorted_records(base, pairs), label_names=label_names)


def open_image_source(source: str | Path) -> ImageSource:
    """Open ``data.source``: a folder (ImageFolder or flat) or a text file listing images."""
    path = Path(source).expanduser()
    if not path.exists():
        raise AtlasError(
            f"{path}: image source not found; set data.source to an existing folder of photos or "
            "list file (or run `atlas demo-data DIR` for the demo photos)"
        )
    if path.is_dir():
        return _open_folder(path)
    return _open_file_list(path)
