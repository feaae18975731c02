"""The figure of one direction: the best patches, their cells' icons, test photos before and after.

One row per measured patch (the first ``rows``, in rank order) and a last row for the first noise
control: the patch as measured, the icon of the comparison-atlas cell it came from, then for each
of the first test photos the clean photo and the photo with the patch at its best placement (the
dynamic one), each titled with the model's top-1 and P(B).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from stages.patches.geometry import paste, patch_side, resize_patch

if TYPE_CHECKING:
    from stages.patches.candidates import Comparison
    from stages.patches.protocol import Outcome
    from stages.patches.stage import Direction


def patched_image(o: Outcome, photo: NDArray[np.float32], i: int) -> NDArray[np.float32]:
    """Test photo ``i`` with the patch at its best (dynamic) placement."""
    place = o.where[int(o.best()[i])]
    side = patch_side(place.r, photo.shape[0])
    return paste(photo, resize_patch(o.patch.image, side, o.patch.resample), place.corner)


def draw_figure(
    d: Direction, photos: NDArray[np.float32], comp: Comparison, path: Path, rows: int = 3, columns: int = 3
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = d.result
    names = comp.subset.class_names
    shown = list(r.outcomes[:rows]) + [o for o in r.controls if o.patch.kind == "noise"][:1]
    tests = r.test[:columns]
    ncol = 2 + 2 * len(tests)
    fig, axes = plt.subplots(
        max(1, len(shown)), ncol, figsize=(1.6 * ncol, 2.1 * max(1, len(shown))), squeeze=False, layout="constrained"
    )
    for row, o in enumerate(shown):
        ax = axes[row]
        rate = o.summary()["dynamic"]
        ax[0].imshow(np.clip(o.patch.image, 0, 1))
        ax[0].set_title(f"{o.patch.name}\ndynamic {rate['k']}/{rate['n']}", fontsize=7)
        if o.patch.cell is not None and comp.icons is not None:
            ax[1].imshow(comp.icons[o.patch.cell])
            ax[1].set_title(
                f"icon, cell {o.patch.cell}\ntoward {d.b[1]} {o.patch.meta.get('toward_b', 0):+.2f}", fontsize=7
            )
        else:
            ax[1].text(0.5, 0.5, "(control:\nno cell)", ha="center", va="center", fontsize=7)
            ax[1].axis("off")
        for k, i in enumerate(tests):
            before = r.clean[i]
            top = int(before.argmax())
            ax[2 + 2 * k].imshow(photos[i])
            ax[2 + 2 * k].set_title(f"before: {names[top][:14]}\nP({d.b[1][:10]}) {before[d.b[0]]:.2f}", fontsize=7)
            j = int(o.best()[k])
            after_top = int(o.result.top1[k, j])
            ax[3 + 2 * k].imshow(np.clip(patched_image(o, photos[i], k), 0, 1))
            colour = "tab:red" if after_top == d.b[0] else "black"
            ax[3 + 2 * k].set_title(
                f"after: {names[after_top][:14]}\nP({d.b[1][:10]}) {o.result.pb[k, j]:.2f}", fontsize=7, color=colour
            )
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(
        f"{comp.atlas_id}: photos of {d.a[1]} -> {d.b[1]}\n{len(r.test)} test photo(s); red: top-1 became {d.b[1]}",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
