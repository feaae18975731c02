"""Images inside containers: WebDataset tar shards and Hugging Face datasets saved on disk.

An image inside a container has a *member path*, ``<container>!/<member>``: ``/data/shards/
train-000001.tar!/n01440764_10026.jpg`` or ``/data/imagenet_hf!/image/1234`` (column ``image``,
row 1234). That string is what the store keeps in ``images/path``, and :func:`decode_member`
reads it back, so every later stage (dataset examples in the tiles, explain) finds the pixels
the same way it finds a photo on disk.

Tar shards are read with the standard library's :mod:`tarfile`, once, header by header (no
member is extracted, no image decoded): that pass gives every sample's key, label (``.cls`` /
``.json``) and the byte offset and size of its image, so collect's decoding workers then read
each image with one ``pread`` at a known offset, in store order (sequential I/O through the
tar). Not the ``webdataset`` library: its pipeline is an iterable that yields samples in stream
order, while collect addresses samples by index (store blocks, resumption that skips done
blocks without decoding them, shards); and a corrupt member must become a recorded skip, not a
handler's choice. Only uncompressed ``.tar`` (WebDataset's usual format) is read.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store.errors import AtlasError

MEMBER_SEP = "!/"  # ``shard.tar!/member.jpg``, ``dataset!/image/12``
IMAGE_SUFFIXES = frozenset({"jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif"})
_JSON_LABEL_KEYS = ("wnid", "synset", "label", "cls", "class", "class_name", "category")
HF_EXTRA = "hf"


def split_member(path: str) -> tuple[str, str] | None:
    """``(container, member)`` of a member path, None for a plain file path."""
    if MEMBER_SEP not in path:
        return None
    container, member = path.split(MEMBER_SEP, 1)
    return container, member


# ------------------------------------------------------------------------------ tar shards
def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar a-001.tar a-002.tar; ``{x,y}`` lists; nested in order."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(k).zfill(width) for k in range(int(first), int(last) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise AtlasError(f"{pattern}: cannot read the brace pattern {{{body}}}; use {{000000..000146}} or {{a,b}}")
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def _key_and_suffix(name: str) -> tuple[str, str]:
    """WebDataset's grouping: the key is the name up to the first dot of its last component."""
    folder, _, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix.lower()


def _member_bytes(archive: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """A regular member's bytes (``extractfile`` answers None only for links and folders)."""
    handle = archive.extractfile(info)
    if handle is None:
        shard = os.fsdecode(archive.name) if archive.name is not None else "tar shard"
        raise AtlasError(f"{shard}: member {info.name} is not a regular file; rebuild the shard with tar")
    return handle.read()


def _label_of(suffix: str, data: bytes) -> str | None:
    text = data.decode("utf-8", "replace").strip()
    if suffix in ("cls", "cls2", "label", "idx", "txt", "wnid"):
        return text.split()[0] if text else None
    if suffix == "json":
        try:
            meta = json.loads(text)
        except ValueError:
            return None
        if isinstance(meta, (int, str)):
            return str(meta)
        if isinstance(meta, dict):
            for key in _JSON_LABEL_KEYS:
                if isinstance(meta.get(key), (int, str)):
                    return str(meta[key])
    return None


@dataclass
class TarSamples:
    """One tar's samples in member order."""

    members: list[str] = field(default_factory=list)  # image member name ("" when the key has none)
    keys: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # byte offset of the image data, -1 without image
    sizes: list[int] = field(default_factory=list)  # bytes the header promises
    labels: list[str | None] = field(default_factory=list)
    problem: str = ""  # why the listing stopped early, "" when it did not


def list_tar(path: Path) -> TarSamples:
    """Every sample of an uncompressed tar, from its headers (labels read, images not)."""
    out = TarSamples()
    index: dict[str, int] = {}
    pending_labels: dict[str, str] = {}
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        try:
            archive = tarfile.open(fileobj=handle, mode="r:")
        except tarfile.ReadError as exc:
            raise AtlasError(
                f"{path}: not an uncompressed tar file ({exc}); WebDataset shards must be plain .tar "
                "(decompress .tar.gz first)"
            ) from None
        try:
            for info in archive:
                if not info.isfile():
                    continue
                key, suffix = _key_and_suffix(info.name)
                if not key or info.name.rsplit("/", 1)[-1].startswith("."):
                    continue  # hidden files (._name from macOS tar, .DS_Store)
                last = suffix.rsplit(".", 1)[-1]
                if last in IMAGE_SUFFIXES:
                    if key in index and out.offsets[index[key]] >= 0:
                        continue  # a second image for the key (e.g. .png beside .jpg): the first one counts
                    if key not in index:
                        index[key] = len(out.keys)
                        out.keys.append(key)
                        out.members.append("")
                        out.offsets.append(-1)
                        out.sizes.append(-1)
                        out.labels.append(pending_labels.pop(key, None))
                    i = index[key]
                    out.members[i], out.offsets[i], out.sizes[i] = info.name, info.offset_data, info.size
                elif info.size <= 1 << 16 and (label := _label_of(suffix, _member_bytes(archive, info))) is not None:
                    if key in index:
                        if out.labels[index[key]] is None:
                            out.labels[index[key]] = label
                    else:
                        pending_labels.setdefault(key, label)
        except (tarfile.TarError, OSError, EOFError) as exc:
            out.problem = f"unreadable after byte {handle.tell()} ({type(exc).__name__}: {exc})"
    for key, label in pending_labels.items():  # a label without an image: recorded, decoded as "missing"
        out.keys.append(key)
        out.members.append(key)
        out.offsets.append(-1)
        out.sizes.append(-1)
        out.labels.append(label)
    for i, (offset, size) in enumerate(zip(out.offsets, out.sizes)):
        if offset >= 0 and offset + size > file_size:  # the likelier story than the header error after it
            out.problem = f"ends inside member {out.members[i]} ({max(0, file_size - offset)} of {size} bytes)"
    return out


def read_range(path: str, offset: int, size: int) -> bytes | str:
    """``size`` bytes at ``offset`` of ``path``, or why not (a short read of a cut tar)."""
    if offset < 0:
        return "no image file for this sample key in the tar"
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(data) < size:
        return f"truncated tar member: {len(data)} of {size} bytes"
    return data


@functools.lru_cache(maxsize=8)
def _tar_index(path: str, mtime_ns: int) -> dict[str, tuple[int, int]]:
    samples = list_tar(Path(path))
    return {m: (o, s) for m, o, s in zip(samples.members, samples.offsets, samples.sizes) if m}


# ------------------------------------------------------------------------ Hugging Face datasets
def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def import_datasets():
    try:
        import datasets
    except ImportError:
        raise AtlasError(
            f"Hugging Face datasets need the 'datasets' package: pip install "
            f"'activation-atlas[{HF_EXTRA}]' (or pip install datasets)"
        ) from None
    return datasets


@functools.lru_cache(maxsize=4)
def load_hf(folder: str):
    datasets = import_datasets()
    try:
        loaded = datasets.load_from_disk(folder)
    except Exception as exc:
        raise AtlasError(
            f"{folder}: cannot load the saved dataset ({type(exc).__name__}: {exc}); "
            "point data.source at a folder written by save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        raise AtlasError(
            f"{folder}: a DatasetDict with splits {splits}; set data.source to one split's folder, "
            f"e.g. {folder}/{next(iter(loaded))}"
        )
    return loaded


def hf_image_bytes(folder: str, column: str, row: int) -> bytes | str:
    """The encoded image of one row (an ``Image`` feature's bytes or path, raw bytes, or a path)."""
    try:
        value = load_hf(folder).data.column(column)[row].as_py()
    except (KeyError, IndexError) as exc:
        return f"no row {row} in column {column} ({type(exc).__name__})"
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        try:
            return Path(value).read_bytes()
        except OSError as exc:
            return f"{value}: {type(exc).__name__}"
    return "the image cell is empty"


def hf_labels(dataset, column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """[n] int32 label index and the label names (a ClassLabel's names, else the distinct values)."""
    feature = dataset.features[column]
    values = dataset.data.column(column).to_pylist()
    names = getattr(feature, "names", None)
    if names is not None:
        labels = np.array([-1 if v is None or v < 0 else v for v in values], np.int32)
        return labels, tuple(str(n) for n in names)
    texts = [None if v is None else str(v) for v in values]
    label_names = tuple(sorted({t for t in texts if t is not None}))
    lookup = {name: i for i, name in enumerate(label_names)}
    return np.array([-1 if t is None else lookup[t] for t in texts], np.int32), label_names


# ------------------------------------------------------------------------------ decoding
def member_bytes(path: str) -> bytes | str:
    """The encoded image behind a member path, or why there is none."""
    container, member = split_member(path) or (path, "")
    box = Path(container)
    if box.is_file():
        try:
            index = _tar_index(container, box.stat().st_mtime_ns)
        except AtlasError as exc:
            return str(exc)
        if member not in index:
            return f"no member {member} in the tar"
        return read_range(container, *index[member])
    if box.is_dir():
        column, _, row = member.rpartition("/")
        if not row.isdigit():
            return f"member {member} is not COLUMN/ROW"
        return hf_image_bytes(container, column, int(row))
    return "no such tar or dataset folder"
