"""Listing a million images: time and peak memory of opening ``data.source`` before collect starts.

Builds a synthetic ImageNet-style tree (``--entries`` empty ``.JPEG`` files in 1000 WNID folders;
empty files list and stat like real ones) and the same paths as a list file, then measures in a
fresh process each (so the peak RSS is that of the listing alone, imports included):

* ``list``: ``open_image_source`` (walk, sort, labels);
* ``fingerprint``: the store's dataset fingerprint (one ``stat`` per file);
* ``subsample``: the seeded class-balanced draw ``--max-images`` / ``--per-class``;
* ``store_table``: the image table collect writes (paths, labels, WNID -> model class).

    python bench/listing.py --entries 1000000 --out bench/results/listing.json
    python bench/listing.py --smoke --out /tmp/listing.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_tree(root: Path, entries: int, classes: int) -> float:
    from stages.images.class_names import imagenet_classes

    t0 = time.perf_counter()
    wnids = [w for w, _ in imagenet_classes()][:classes]
    per = -(-entries // len(wnids))
    made = 0
    with open(root.with_suffix(".txt"), "w") as listing:
        for wnid in wnids:
            folder = root / wnid
            folder.mkdir(parents=True)
            for j in range(min(per, entries - made)):
                name = f"{wnid}_{j}.JPEG"
                os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))
                listing.write(f"{wnid}/{name}\t{wnid}\n")
            made += min(per, entries - made)
    return time.perf_counter() - t0


def measure(source: str, max_images: int, per_class: int) -> dict:
    """One process: each phase's seconds and the RSS after it."""
    rss0 = _rss_mb()
    from stages.images.class_names import imagenet_classes, label_classes
    from stages.images.sources import open_image_source, subsample

    categories = [words[0] for _, words in imagenet_classes()]  # an ImageNet model's names, without importing torch
    out = {"rss_after_imports_mb": round(_rss_mb(), 1), "rss_start_mb": round(rss0, 1)}
    t = time.perf_counter()
    src = open_image_source(source)
    out["list_s"], out["rss_after_list_mb"], out["n"] = time.perf_counter() - t, round(_rss_mb(), 1), len(src)
    t = time.perf_counter()
    src.fingerprint()
    out["fingerprint_s"] = time.perf_counter() - t
    t = time.perf_counter()
    drawn = subsample(src, max_images, per_class, seed=0)
    out["subsample_s"], out["subsample_n"] = time.perf_counter() - t, len(drawn)
    t = time.perf_counter()
    paths = src.paths()
    classes = label_classes(list(src.label_names), categories)[src.labels]
    out["store_table_s"], out["known_class"] = time.perf_counter() - t, int((classes >= 0).sum())
    out["rss_after_table_mb"] = round(_rss_mb(), 1)
    del paths
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for key in list(out):
        if key.endswith("_s"):
            out[key] = round(out[key], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--max-images", type=int, default=100_000)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--work", default=None, help="folder for the synthetic tree (default: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="2,000 entries in 20 folders")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic tree")
    parser.add_argument("--out", default=None, help="result JSON")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.max_images, args.per_class)))
        return 0
    if args.smoke:
        args.entries, args.classes, args.max_images, args.per_class = 2000, 20, 500, 10
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="atlas_listing_"))
    root = work / "train"
    if root.exists():
        shutil.rmtree(root)
    work.mkdir(parents=True, exist_ok=True)
    made_s = make_tree(root, args.entries, args.classes)
    result = {
        "entries": args.entries,
        "classes": args.classes,
        "make_tree_s": round(made_s, 1),
        "max_images": args.max_images,
        "per_class": args.per_class,
    }
    for kind, source in (("tree", root), ("list_file", root.with_suffix(".txt"))):
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                str(source),
                "--max-images",
                str(args.max_images),
                "--per-class",
                str(args.per_class),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result[kind] = json.loads(run.stdout.strip().splitlines()[-1])
        print(kind, result[kind], flush=True)
    if not args.keep:
        shutil.rmtree(root)
        root.with_suffix(".txt").unlink()
    for kind in ("tree", "list_file"):
        r = result[kind]
        assert r["n"] == args.entries, r
        assert r["subsample_n"] == min(args.max_images, args.per_class * args.classes), r
        assert r["known_class"] == args.entries, r
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
