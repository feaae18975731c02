"""Labels for a folder of images from a file (``data.labels``): ImageNet's validation layout and any CSV.

Three formats, told apart by name and content:

* Kaggle's ``LOC_val_solution.csv``: header ``ImageId,PredictionString``; the label is the first
  WNID of the prediction string, the image is the file whose name without extension is ImageId.
* The ILSVRC2012 devkit's ``ILSVRC2012_validation_ground_truth.txt``: line k holds the label of
  ``ILSVRC2012_val_{k:08d}.JPEG`` as an ``ILSVRC2012_ID`` (1..1000) in the devkit's own synset
  order, which is *not* the sorted-WNID class order models use. The order is read from the
  devkit's ``meta.mat`` (``ILSVRC2012_devkit_t12/data/meta.mat``, beside the ground-truth file).
* Anything else: CSV ``path,label`` (an optional header row), the path relative to the image
  folder (or just the file name), the label a WNID, a class name or index, or any name.

Labels name images; images without a row stay unlabelled (-1), and rows naming no image of the
folder are counted and reported (one line), never silently dropped.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from store.errors import AtlasError

log = logging.getLogger(__name__)

_HEADER_PATHS = {"path", "file", "filename", "file_name", "image", "imageid", "image_id", "name"}


def _devkit_synsets(ground_truth: Path) -> dict[int, str]:
    meta = ground_truth.with_name("meta.mat")
    if not meta.is_file():
        raise AtlasError(
            f"{ground_truth}: the devkit's labels are ILSVRC2012_IDs in its own synset order, read from "
            f"meta.mat beside it; copy ILSVRC2012_devkit_t12/data/meta.mat to {meta}"
        )
    try:
        from scipy.io import loadmat

        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["ILSVRC2012_ID"]) <= 1000}
    except Exception as exc:
        raise AtlasError(f"{meta}: not the devkit's meta.mat ({type(exc).__name__}: {exc})") from None


def _read_devkit(path: Path, lines: list[str]) -> dict[str, str]:
    synsets = _devkit_synsets(path)
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit() or int(text) not in synsets:
            raise AtlasError(f"{path}:{number}: expected an ILSVRC2012_ID between 1 and 1000, found {text!r}")
        out[f"ILSVRC2012_val_{number:08d}"] = synsets[int(text)]
    return out


def _read_loc_csv(path: Path, rows: list[list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2 or not row[1].split():
            raise AtlasError(f"{path}:{number}: expected 'ImageId,PredictionString' with a WNID first")
        out[row[0].strip()] = row[1].split()[0]
    return out


def _read_csv(path: Path, rows: list[list[str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    start = 1 if rows and rows[0] and rows[0][0].strip().lower() in _HEADER_PATHS else 0
    for number, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 2 or not row[0].strip():
            raise AtlasError(f"{path}:{number}: expected 'path,label' (2 columns), found {len(row)} columns")
        out[row[0].strip()] = row[1].strip()
    return out


def read_label_file(path: str | Path) -> dict[str, str]:
    """image key (a relative path, a file name or a name without extension) -> label name."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AtlasError(
            f"{file}: labels file not found; set data.labels (--labels) to a CSV of path,label, "
            "LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt"
        )
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise AtlasError(f"{file}: not a UTF-8 text file; data.labels must be a CSV of path,label") from None
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if file.suffix == ".txt" and first.isdigit():
        return _read_devkit(file, lines)
    rows = list(csv.reader(lines))
    if rows and [c.strip() for c in rows[0][:2]] == ["ImageId", "PredictionString"]:
        return _read_loc_csv(file, rows)
    return _read_csv(file, rows)


def match_labels(label_file: str | Path, relative_paths: list[str]) -> tuple[list[str | None], int]:
    """Each image's label name (None: no row) and how many rows named no image."""
    table = read_label_file(label_file)
    by_name: dict[str, int] = {}
    by_stem: dict[str, int] = {}
    for i, rel in enumerate(relative_paths):
        name = rel.rsplit("/", 1)[-1]
        by_name.setdefault(name, i)
        by_stem.setdefault(os.path.splitext(name)[0], i)
    by_rel = {rel: i for i, rel in enumerate(relative_paths)}
    labels: list[str | None] = [None] * len(relative_paths)
    unmatched: list[str] = []
    for key, label in table.items():
        norm = Path(key).as_posix().lstrip("./") if not key.startswith("../") else key
        found = by_rel.get(norm, by_name.get(norm, by_stem.get(norm)))
        if found is None:
            unmatched.append(key)
        else:
            labels[found] = label
    if unmatched:
        log.warning(
            "%s: %d of %d rows name no image in the folder (first: %s); they are not collected",
            label_file,
            len(unmatched),
            len(table),
            unmatched[0],
        )
    return labels, len(unmatched)
