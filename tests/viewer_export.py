"""A small hand-made export (docs/export_format.md) for the viewer tests, without the pipeline.

The real exporter (``atlas tiles``) needs a collected, gridded and rendered store; the viewer only
needs the folder contract. This writes one with Pillow: a main atlas with two levels (20 and 40
cells per side, 32 px icons), a class atlas and a class comparison (one level each, with axes),
every JSON file with its ``.js`` twin, DZI pyramids written by the tiles stage's own writer. The
"icons" are crops of real photos (scikit-image's), laid out so that each photo owns a region of
the canvas, like the clusters of a real layout; class names are ImageNet's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stages.tiles.geometry import DziGeometry
from stages.tiles.pyramid import compose_canvas, write_dzi
from stages.tiles.viewer_assets import install_viewer

ICON_PX = 32
TILE_SIZE = 256
# photo -> (ImageNet class index, name): the class each photo's region is labelled with
PHOTOS = {
    "chelsea": (281, "tabby"),
    "coffee": (967, "espresso"),
    "rocket": (812, "space shuttle"),
    "astronaut": (834, "suit"),
}


def _photos() -> list[tuple[np.ndarray, int, str]]:
    import skimage.data

    return [(getattr(skimage.data, name)(), idx, label) for name, (idx, label) in PHOTOS.items()]


def write_json_twin(path: Path, obj: Any, js_prefix: str) -> None:
    """``path`` (JSON) and its ``.js`` twin ``<js_prefix>{...};`` (the export contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, separators=(",", ":"))
    path.write_text(text)
    path.with_suffix(".js").write_text(f"{js_prefix}{text};\n")


def _crop(photo: np.ndarray, u: float, v: float, side_frac: float, px: int) -> np.ndarray:
    """A ``px`` square crop of ``photo`` around fractions (u, v), of side ``side_frac`` x its short side."""
    h, w = photo.shape[:2]
    side = max(8, int(min(h, w) * side_frac))
    x0 = int(np.clip(u * w - side / 2, 0, w - side))
    y0 = int(np.clip(v * h - side / 2, 0, h - side))
    return np.asarray(Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side]).resize((px, px), Image.Resampling.LANCZOS))


def _level_cells(
    n: int, kept: list[tuple[int, int]], photos: list, region, out: Path, examples: int
) -> tuple[list[dict], np.ndarray]:
    """cells.json entries and the icons of the kept cells of one n x n level."""
    cells, icons = [], []
    rng = np.random.default_rng(n)
    for cell_index, (i, j) in enumerate(kept):
        u, v = (i + 0.5) / n, (j + 0.5) / n
        k = region(u, v)
        photo, cls, name = photos[k]
        icons.append(_crop(photo, u, v, 0.25, ICON_PX))
        others = [photos[(k + d) % len(photos)] for d in (1, 2, 3, 4)]
        values = np.sort(rng.uniform(0.05, 0.4, 4))[::-1]
        classes = [{"index": cls, "name": name, "value": round(0.5 + 0.4 * rng.random(), 3)}]
        classes += [{"index": o[1], "name": o[2], "value": round(float(val), 3)} for o, val in zip(others, values)]
        paths = []
        for e in range(examples):
            rel = f"examples/level_{n}/{cell_index}_{e}.jpg"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_crop(photo, (u + 0.1 * e) % 1, v, 0.4, 64)).save(out / rel, quality=85)
            paths.append(rel)
        cells.append(
            {
                "cell": cell_index,
                "i": i,
                "j": j,
                "bounds": [i / n, j / n, (i + 1) / n, (j + 1) / n],
                "icon_bounds": [i / n, j / n, (i + 1) / n, (j + 1) / n],
                "count": int(rng.integers(6, 90)),
                "classes": classes,
                "objective": round(float(rng.uniform(0.5, 3.0)), 3),
                "cossim": round(float(rng.uniform(0.4, 0.9)), 3),
                "examples": paths,
            }
        )
    return cells, np.stack(icons)


def _write_atlas(root: Path, entry: dict, levels: list[int], region, keep, axes: dict, examples: int) -> None:
    """One atlas folder: manifest, a DZI + cells per level, examples, layout (all with .js twins)."""
    out = root / entry["path"]
    photos = _photos()
    manifest_levels = []
    for n in levels:
        kept = [(i, j) for j in range(n) for i in range(n) if keep((i + 0.5) / n, (j + 0.5) / n)]
        cells, icons = _level_cells(n, kept, photos, region, out, examples)
        i = np.array([c["i"] for c in cells])
        j = np.array([c["j"] for c in cells])
        canvas, _ = compose_canvas(icons, i, j, n, np.ones(len(cells)), "#ffffff")
        geometry = DziGeometry(canvas.width, canvas.height, TILE_SIZE, 1)
        write_dzi(canvas, out / f"level_{n}.dzi", geometry, "jpg", 90)
        write_json_twin(
            out / f"level_{n}" / "cells.json",
            cells,
            f'window.ATLAS_CELLS = window.ATLAS_CELLS || {{}}; window.ATLAS_CELLS["{entry["id"]}/{n}"] = ',
        )
        manifest_levels.append(
            {
                "n": n,
                "canvas_px": canvas.width,
                "cell_px": ICON_PX,
                "cells": len(cells),
                "dzi": f"level_{n}.dzi",
                "tiles": f"level_{n}_files/",
                "tile_size": TILE_SIZE,
                "overlap": 1,
                "format": "jpg",
                "cells_json": f"level_{n}/cells.json",
                "cells_js": f"level_{n}/cells.js",
            }
        )
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.05, 0.95, (3000, 2))
    pts = pts[[keep(x, y) for x, y in pts]]
    labels = [photos[region(x, y)][1] for x, y in pts]
    write_json_twin(
        out / "layout.json",
        {"x": pts[:, 0].round(4).tolist(), "y": pts[:, 1].round(4).tolist(), "label": labels},
        f'window.ATLAS_LAYOUTS = window.ATLAS_LAYOUTS || {{}}; window.ATLAS_LAYOUTS["{entry["id"]}"] = ',
    )
    manifest = {
        "id": entry["id"],
        "kind": entry["kind"],
        "title": entry["title"],
        "icon_px": ICON_PX,
        "axes": axes,
        "density_scaling": False,
        "levels": manifest_levels,
        "layout": "layout.js",
    }
    write_json_twin(
        out / "manifest.json",
        manifest,
        f'window.ATLAS_MANIFESTS = window.ATLAS_MANIFESTS || {{}}; window.ATLAS_MANIFESTS["{entry["id"]}"] = ',
    )


def _quadrant(u: float, v: float) -> int:
    return (1 if u >= 0.5 else 0) + (2 if v >= 0.5 else 0)


def _disc(u: float, v: float) -> bool:
    return (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.42**2


def make_viewer_export(root: Path, levels: list[int] | None = None, examples: int = 2) -> Path:
    """Write the hand-made export into ``root`` (viewer included; main atlas ``levels``, default
    20 and 40); return ``root``."""
    main = {"id": "main", "kind": "main", "title": "hand-made test atlas", "path": "main/"}
    tabby = {
        "id": "class/tabby",
        "kind": "class",
        "title": "tabby (winner)",
        "path": "class/tabby/",
        "class": {"index": 281, "name": "tabby"},
    }
    compare = {
        "id": "compare/tabby--espresso",
        "kind": "compare",
        "title": "tabby vs espresso",
        "path": "compare/tabby--espresso/",
        "classes": [{"index": 281, "name": "tabby"}, {"index": 967, "name": "espresso"}],
    }
    _write_atlas(root, main, levels or [20, 40], _quadrant, _disc, {"x": None, "y": None}, examples)
    _write_atlas(
        root, tabby, [8], lambda u, v: 0 if u + v < 1.2 else 2, lambda u, v: True, {"x": None, "y": None}, examples
    )
    _write_atlas(
        root,
        compare,
        [10],
        lambda u, v: 0 if u < 0.5 else 1,
        lambda u, v: 0.1 < v < 0.9,
        {"x": "tabby  <->  espresso", "y": "1-D t-SNE"},
        examples,
    )
    index = {
        "format": "activation-atlas-export",
        "version": 1,
        "model": {"name": "mobilenet_v2", "layer": "features.13.conv.0"},
        "atlases": [main, tabby, compare],
    }
    write_json_twin(root / "atlases.json", index, "window.ATLAS_INDEX = ")
    install_viewer(root)
    return root


if __name__ == "__main__":
    import sys

    print(make_viewer_export(Path(sys.argv[1])))
