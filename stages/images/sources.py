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

import glob
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stages.images.archives import (
    MEMBER_SEP,
    expand_braces,
    hf_labels,
    is_hf_dataset_dir,
    list_tar,
    load_hf,
    read_range,
)
from stages.images.decoding import Decoded, decode_rgb, decode_rgb_bytes
from store.errors import AtlasError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
_EXTENSIONS_TEXT = " ".join(sorted(IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class ImageRecord:
    path: str  # absolute path (or member path ``container!/member``, stages/images/archives.py)
    label: int  # index into ImageSource.label_names, -1 when unknown


class RecordList(Sequence):
    """The records of a source, made on access: a million-image source keeps one list of relative
    paths and one int32 array of labels, not a million record objects."""

    def __init__(self, source: ImageSource) -> None:
        self._source = source

    def __len__(self) -> int:
        return len(self._source.rel_paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return ImageRecord(path=self._source.path(index), label=int(self._source.labels[index]))


@dataclass(frozen=True, eq=False)
class ImageSource:
    kind: str  # "imagefolder" | "flat" | "filelist" | "tar" | "hf"
    root: str
    rel_paths: list[str]  # relative to root, "/"-separated, in the source's one order
    labels: np.ndarray  # [n] int32 index into label_names, -1 when unknown
    label_names: tuple[str, ...]  # sorted label names; () when unlabelled
    sizes: np.ndarray | None = None  # [n] int64 byte sizes known from the listing (tar members); None: stat
    offsets: np.ndarray | None = None  # [n] int64 byte offset of each tar member's data
    content_id: str = ""  # a content hash the container keeps (a saved HF dataset's fingerprint)
    selection: dict | None = None  # the subsample drawn (data.max_images / data.per_class), None: all
    notes: tuple[str, ...] = ()  # problems met while listing, one line each (logged by collect)

    @property
    def records(self) -> RecordList:
        return RecordList(self)

    def __len__(self) -> int:
        return len(self.rel_paths)

    def path(self, index: int) -> str:
        """Absolute path of image ``index`` (normalised, as ``os.path.abspath`` gives it)."""
        return os.path.normpath(os.path.join(self.root, self.rel_paths[index]))

    def paths(self) -> list[str]:
        return [self.path(i) for i in range(len(self.rel_paths))]

    def relative_path(self, record: ImageRecord) -> str:
        """The record's path relative to ``root``, with ``/`` separators on every OS."""
        return Path(os.path.relpath(record.path, self.root)).as_posix()

    def fingerprint(self) -> str:
        """sha256 over (relative path, file size, label name) of every record.

        Relative paths and sizes, not absolute paths or mtimes, so a copied or moved folder
        (rsync to a cluster, a fresh checkout) keeps its fingerprint while an added, removed,
        replaced or relabelled photo changes it. Missing files count with size -1. Tar members
        count with the size their header gives; a saved dataset adds its own content hash.
        """
        digest = hashlib.sha256()
        digest.update(f"{self.kind}\n".encode())
        if self.content_id:
            digest.update(f"content {self.content_id}\n".encode())
        if self.selection:
            digest.update(f"selection {json.dumps(self.selection, sort_keys=True)}\n".encode())
        names = [""] * (len(self.label_names) + 1)
        names[:-1] = self.label_names  # names[-1] == "" for label -1
        root = self.root
        for i, rel in enumerate(self.rel_paths):
            if self.sizes is not None:
                size = int(self.sizes[i])
            else:
                try:
                    size = os.stat(os.path.join(root, rel)).st_size
                except OSError:
                    size = -1
            digest.update(f"{rel}\t{size}\t{names[self.labels[i]]}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def decode(self, index: int, max_pixels: int, draft_side: int = 0) -> Decoded:
        """Image ``index`` as RGB, or the recorded reason why not (never raises for a bad file)."""
        if self.kind == "tar" and self.offsets is not None and self.sizes is not None:
            container = os.path.join(self.root, self.rel_paths[index].split(MEMBER_SEP, 1)[0])
            data = read_range(container, int(self.offsets[index]), int(self.sizes[index]))
            if isinstance(data, str):
                return Decoded(None, "missing" if data.startswith("no ") else "decode_error", data)
            return decode_rgb_bytes(data, max_pixels, draft_side)
        return decode_rgb(self.path(index), max_pixels, draft_side)

    def labelled_counts(self) -> tuple[int, int]:
        """(images with a label, images)."""
        return int((self.labels >= 0).sum()), len(self.rel_paths)


def is_image_name(name: str) -> bool:
    """True for the accepted image extensions, case-insensitive."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_below(root: Path, entry: str, out: list[str]) -> int:
    """Append the relative paths of the image files anywhere below ``root/entry`` (symlinks
    followed, hidden names skipped); returns how many."""
    before = len(out)
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(os.path.join(base, entry), followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        prefix = Path(os.path.relpath(dirpath, base)).as_posix() + "/"
        out.extend(prefix + f for f in filenames if _visible(f) and is_image_name(f))
    return len(out) - before


def _tar_names(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if _visible(e.name) and e.name.endswith(".tar") and e.is_file())


def _open_folder(root: Path) -> ImageSource:
    rel: list[str] = []  # the one list of paths; sorted in place below
    classes: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        if entry.is_dir():
            if _images_below(root, entry.name, rel):
                classes.append(entry.name)
        elif entry.is_file() and is_image_name(entry.name):
            rel.append(entry.name)
    if not rel:
        tars = _tar_names(root)
        if tars:
            return _open_tars([root / name for name in tars], str(root))
        raise AtlasError(
            f"{root}: folder contains no image files ({_EXTENSIONS_TEXT}) and no .tar shards; "
            "point data.source at a folder of photos, an ImageFolder tree, tar shards, a saved dataset or a list file"
        )
    if _tar_names(root):
        log.warning(
            "%s: has image files, so its .tar files are not read; point data.source at the tars "
            "(a folder of only .tar files or a pattern like 'train-{000000..000146}.tar') to collect them",
            root,
        )
    rel.sort()
    label_names = tuple(sorted(classes))
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.fromiter((index.get(r.split("/", 1)[0], -1) if "/" in r else -1 for r in rel), np.int32, len(rel))
    kind = "imagefolder" if classes else "flat"
    return ImageSource(kind=kind, root=os.path.abspath(root), rel_paths=rel, labels=labels, label_names=label_names)


def _parse_list_line(line: str, list_file: Path, number: int) -> tuple[str, str | None] | None:
    """``path`` or ``path<TAB>label``; None for blank and comment lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    columns = [c.strip() for c in text.split("\t")]
    if len(columns) > 2:
        raise AtlasError(
            f"{list_file}:{number}: expected 'path' or 'path<TAB>label', found {len(columns)} tab-separated columns"
        )
    label = columns[1] if len(columns) == 2 and columns[1] else None
    return columns[0], label


def _with_labels(root: str, kind: str, rel: list[str], names: list[str | None], **extra: object) -> ImageSource:
    """A source from relative paths in their final order and a label name (or None) per path."""
    label_names = tuple(sorted({n for n in names if n is not None}))
    index = {name: i for i, name in enumerate(label_names)}
    labels = np.fromiter((-1 if n is None else index[n] for n in names), np.int32, len(names))
    return ImageSource(kind=kind, root=root, rel_paths=rel, labels=labels, label_names=label_names, **extra)  # type: ignore[arg-type]


def _open_file_list(list_file: Path) -> ImageSource:
    if is_image_name(list_file.name):
        raise AtlasError(
            f"{list_file}: is an image, not a list; set data.source to its folder or to a text file listing image paths"
        )
    base = os.path.abspath(list_file.parent)
    rel: list[str] = []
    names: list[str | None] = []
    label_strings: dict[str, str] = {}  # one string object per label, not one per line
    slash = os.sep == "/"
    try:
        with open(list_file, encoding="utf-8") as handle:  # line by line: no second copy of a million lines
            for number, line in enumerate(handle, start=1):
                parsed = _parse_list_line(line, list_file, number)
                if parsed is not None:
                    listed = os.path.expanduser(parsed[0]) if parsed[0].startswith("~") else parsed[0]
                    # relpath(abspath(base/listed), base) == normpath(listed) for a relative path
                    local = os.path.relpath(listed, base) if os.path.isabs(listed) else os.path.normpath(listed)
                    rel.append(local if slash else Path(local).as_posix())
                    names.append(None if parsed[1] is None else label_strings.setdefault(parsed[1], parsed[1]))
    except UnicodeDecodeError:
        raise AtlasError(
            f"{list_file}: not a UTF-8 text file; data.source must be a folder or a text file listing image paths"
        ) from None
    if not rel:
        raise AtlasError(f"{list_file}: list file is empty; add one image path per line (optionally path<TAB>label)")
    if any(rel[i] > rel[i + 1] for i in range(len(rel) - 1)):  # a sorted list (the usual case) is kept as is
        order = sorted(range(len(rel)), key=rel.__getitem__)
        rel = [rel[i] for i in order]
        names = [names[i] for i in order]
    return _with_labels(base, "filelist", rel, names)


def _open_tars(tars: list[Path], shown: str) -> ImageSource:
    """WebDataset shards, in the given order (sorted names for a folder, the pattern's order)."""
    missing = [t for t in tars if not t.is_file()]
    if missing:
        raise AtlasError(
            f"{missing[0]}: tar shard not found ({len(missing)} of {len(tars)} named by {shown} "
            "are missing); fix the pattern or the folder"
        )
    root = os.path.commonpath([os.path.abspath(t.parent) for t in tars])
    rel: list[str] = []
    names: list[str | None] = []
    offsets: list[int] = []
    sizes: list[int] = []
    notes: list[str] = []
    for tar in tars:
        samples = list_tar(tar)
        prefix = Path(os.path.relpath(os.path.abspath(tar), root)).as_posix() + MEMBER_SEP
        rel.extend(prefix + (m or k) for m, k in zip(samples.members, samples.keys))
        names.extend(samples.labels)
        offsets.extend(samples.offsets)
        sizes.extend(samples.sizes)
        if samples.problem:
            notes.append(
                f"{tar}: {samples.problem}; its samples up to there are collected, a cut member is "
                "recorded as skipped (decode_error), anything after it is not in the tar any more"
            )
    if not rel:
        raise AtlasError(
            f"{shown}: the tar shards hold no image files ({_EXTENSIONS_TEXT}); "
            "WebDataset samples are KEY.jpg (+ KEY.cls / KEY.json) members"
        )
    return _with_labels(
        root,
        "tar",
        rel,
        names,
        offsets=np.asarray(offsets, np.int64),
        sizes=np.asarray(sizes, np.int64),
        notes=tuple(notes),
    )


def _open_hf(folder: Path, image_column: str, label_column: str) -> ImageSource:
    dataset = load_hf(os.path.abspath(folder))
    columns = list(dataset.features)
    if image_column not in columns:
        raise AtlasError(
            f"{folder}: no image column {image_column!r} (columns: {', '.join(columns)}); "
            "set data.image_column (--image-column)"
        )
    n = len(dataset)
    if label_column and label_column in columns:
        labels, label_names = hf_labels(dataset, label_column)
    else:
        if label_column:
            log.info(
                "%s: no label column %r (columns: %s); collecting unlabelled", folder, label_column, ", ".join(columns)
            )
        labels, label_names = np.full(n, -1, np.int32), ()
    name = os.path.basename(os.path.abspath(folder))
    rel = [f"{name}{MEMBER_SEP}{image_column}/{row}" for row in range(n)]
    if not rel:
        raise AtlasError(f"{folder}: the dataset has no rows")
    return ImageSource(
        kind="hf",
        root=os.path.dirname(os.path.abspath(folder)),
        rel_paths=rel,
        labels=labels,
        label_names=label_names,
        sizes=np.full(n, -1, np.int64),
        content_id=str(getattr(dataset, "_fingerprint", "")),
    )


def _apply_label_file(source: ImageSource, label_file: str) -> ImageSource:
    from stages.images.label_files import match_labels

    if source.kind not in ("flat", "imagefolder"):
        raise AtlasError(
            f"data.labels={label_file}: a labels file labels a folder of images; data.source is a "
            f"{source.kind} source, which carries its own labels: leave data.labels empty"
        )
    names, _unmatched = match_labels(label_file, source.rel_paths)
    relabelled = _with_labels(source.root, source.kind, source.rel_paths, names)
    return replace(relabelled, kind=source.kind)


def is_pattern(source: str) -> bool:
    return any(ch in source for ch in "{*?[")


def open_image_source(
    source: str | Path, labels: str | None = None, image_column: str = "image", label_column: str = "label"
) -> ImageSource:
    """Open ``data.source``: a folder (ImageFolder or flat), tar shards (a folder of ``.tar``, one
    ``.tar`` or a pattern ``train-{000000..000146}.tar``), a saved Hugging Face dataset, or a
    text file listing images. ``labels``: a labels file for a folder (stages/images/label_files.py)."""
    text = os.path.expanduser(str(source))
    path = Path(text)
    if not path.exists() and is_pattern(text):
        names = [
            n
            for part in expand_braces(text)
            for n in (sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part])
        ]
        if not names:
            raise AtlasError(f"{text}: the pattern names no file; check the shard folder and numbering")
        opened = _open_tars([Path(n) for n in names], text)
    elif not path.exists():
        raise AtlasError(
            f"{path}: image source not found; set data.source to an existing folder of photos or "
            "list file (or run `atlas demo-data DIR` for the demo photos)"
        )
    elif is_hf_dataset_dir(path):
        opened = _open_hf(path, image_column, label_column)
    elif path.is_dir():
        opened = _open_folder(path)
    elif path.suffix == ".tar":
        opened = _open_tars([path], text)
    else:
        opened = _open_file_list(path)
    if labels:
        opened = _apply_label_file(opened, labels)
    return opened


def subsample(source: ImageSource, max_images: int | None, per_class: int | None, seed: int) -> ImageSource:
    """A seeded, class-balanced draw: at most ``per_class`` images of each label, at most
    ``max_images`` in all, taken round-robin over the labels (unlabelled images count as one more
    label), kept in the source's order. The same source, numbers and seed draw the same images."""
    if max_images is None and per_class is None:
        return source
    n = len(source.rel_paths)
    rng = np.random.default_rng([seed & ((1 << 64) - 1), 0x5EED])
    keys = rng.random(n)
    order = np.lexsort((keys, source.labels))  # by label, random within a label
    sorted_labels = source.labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts  # each image's place in its label's random order
    chosen = rank < per_class if per_class is not None else np.ones(n, bool)
    if max_images is not None and chosen.sum() > max_images:
        candidates = np.flatnonzero(chosen)
        # round-robin: every label's first pick, then every label's second ...; ties in random order
        by_round = candidates[np.lexsort((keys[candidates], rank[candidates]))]
        chosen = np.zeros(n, bool)
        chosen[by_round[:max_images]] = True
    keep = np.flatnonzero(chosen)
    pick = lambda a: None if a is None else a[keep]  # noqa: E731
    selection = {"max_images": max_images, "per_class": per_class, "seed": seed, "of": n}
    return replace(
        source,
        rel_paths=[source.rel_paths[i] for i in keep],
        labels=source.labels[keep],
        sizes=pick(source.sizes),
        offsets=pick(source.offsets),
        selection=selection,
    )
