"""Deterministic random crops ("views"), so a few hundred photos give many distinct inputs.

The atlas needs on the order of 10^5-10^6 activation samples (the paper used one random
spatial position from each of 1M ImageNet images); the offline demo has a few hundred photos.
Each photo therefore yields ``collect.views_per_image`` views: view 0 is the whole image,
exactly the reference's input (the whole image resized to 224x224, no crop), and views 1..
are crops in the style of torchvision's ``RandomResizedCrop`` (area fraction drawn from
``collect.view_scale``, aspect ratio in [3/4, 4/3]).

Every box is drawn from ``numpy.random.default_rng([seed, image_index, view])`` and nothing
else, so a view is the same whichever worker decodes it, in whichever order, in whichever
shard, and after a resume.

``collect.view0`` chooses view 0's transform: ``resize`` (the default: the whole image squashed to
a square, the paper's reference) or ``eval``, the weights' published evaluation transform (resize
the short side to R, e.g. 256, then centre-crop ``size``, e.g. 224), given to :func:`view_box` as
``eval_crop=(R, size)``. Its box is the centre crop expressed in the photo's own (fractional)
pixel coordinates (:func:`eval_center_box`), so :func:`render_view` makes it in one resample, the
same sampling grid as torchvision's ``Resize(R)`` + ``CenterCrop(size)``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # (left, top, right, bottom), PIL's convention; whole pixels but
#                                          for view 0 under collect.view0=eval (eval_center_box)
EvalCrop = tuple[int, int]  # (resize the short side to R, centre-crop S x S): collect.view0=eval
VIEW0_TRANSFORMS = ("resize", "eval")

_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop's default ratio
_ATTEMPTS = 10  # as in RandomResizedCrop; afterwards the aspect limit is relaxed
_SEED_MASK = (1 << 64) - 1  # SeedSequence wants non-negative integers


def view_rng(seed: int, image_index: int, view: int) -> np.random.Generator:
    """The generator for one view; depends on nothing but these three numbers."""
    return np.random.default_rng([seed & _SEED_MASK, image_index & _SEED_MASK, view & _SEED_MASK])


def _fitted_box(width: int, height: int, area: float) -> tuple[int, int]:
    """Crop size covering ``area`` when no aspect in range fits (very elongated images).

    The area fraction is kept (it is what ``view_scale`` promises) and the aspect ratio gives
    way: the crop takes the full short side and as much of the long side as the area needs.
    """
    if width >= height:
        h = height
        w = min(width, max(1, round(area / h)))
    else:
        w = width
        h = min(height, max(1, round(area / w)))
    return w, h


def _crop_size(width: int, height: int, scale: tuple[float, float], rng: np.random.Generator) -> tuple[int, int]:
    total = width * height
    log_low, log_high = math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])
    area = total * rng.uniform(scale[0], scale[1])
    for _ in range(_ATTEMPTS):
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(area * aspect))
        h = round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return w, h
        area = total * rng.uniform(scale[0], scale[1])
    return _fitted_box(width, height, area)


def eval_resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """The image's size after torchvision's ``Resize(resize)`` (short side to ``resize``, long side
    truncated: ``torchvision.transforms.functional._compute_resized_output_size``)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def eval_center_box(width: int, height: int, resize: int, crop: int) -> Box:
    """The box of ``Resize(resize)`` then ``CenterCrop(crop)`` in the original image's pixels.

    The crop's offset in the resized image is torchvision's ``int(round((side - crop) / 2))``; the
    box maps it back through each axis' own scale (``new_w / width``, ``new_h / height``, as the
    two-step resize scales each axis). Exact for whole-pixel results: a square image with
    ``resize == crop`` gives ``(0, 0, width, height)``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0 < crop <= resize:
        raise ValueError(f"the evaluation crop needs 0 < crop <= resize, got crop {crop}, resize {resize}")
    new_w, new_h = eval_resized_size(width, height, resize)
    left = int(round((new_w - crop) / 2.0))
    top = int(round((new_h - crop) / 2.0))
    return (left * width / new_w, top * height / new_h, (left + crop) * width / new_w, (top + crop) * height / new_h)


def view_box(
    width: int,
    height: int,
    image_index: int,
    view: int,
    views_per_image: int,
    scale: tuple[float, float],
    seed: int,
    *,
    eval_crop: EvalCrop | None = None,
) -> Box:
    """The crop box of one view of one image: for view 0 (or a single view) the whole image, or with
    ``eval_crop=(R, S)`` (``collect.view0: eval``) the centre crop of the evaluation transform."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0 <= view < views_per_image:
        raise ValueError(f"view must be in [0, {views_per_image}), got {view}")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if views_per_image == 1 or view == 0:
        return (0, 0, width, height) if eval_crop is None else eval_center_box(width, height, *eval_crop)
    rng = view_rng(seed, image_index, view)
    w, h = _crop_size(width, height, scale, rng)
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return (left, top, left + w, top + h)


def render_view(image: Image.Image, box: Box, size: int) -> Image.Image:
    """Crop ``box`` and resize to ``size`` x ``size`` in one antialiased bilinear resample.

    Pillow's ``resize(box=...)`` filters over the source pixels of the box (antialiasing when
    shrinking, as torchvision's ``Resize`` does on PIL input), and the aspect ratio is not
    kept, matching the reference's plain resize to 224x224. A fractional box (view 0 under
    ``collect.view0: eval``) samples the same grid as resizing the whole image, then cropping.
    """
    left, top, right, bottom = box
    if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
        raise ValueError(f"box {box} is not inside the {image.width}x{image.height} image")
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)
