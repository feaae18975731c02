"""ImageNet's layouts: WNID train folders, the validation folder with each ground-truth format,
--labels CSV, the class-balanced subsample, and what `atlas info` says about labels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline.cli import main as cli_main
from pipeline.params import load_config
from stages.collect import stage as collect
from stages.context import StageContext
from stages.images.class_names import imagenet_classes, label_classes
from stages.images.sources import open_image_source, subsample
from stages.sections import CollectSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from tests.imagenet_fixtures import WNIDS, samples, write_tree

ROW_ARRAYS = ["activations", "yx", "top_pred_idx", "top_pred_logit", "attr_idx", "attr_val", "attr_label"]


def config(source: Path | str, store: Path, *extra: str):
    """Small and fast: 96 px inputs (features.13.conv.0 is then 6 x 6), two views per image."""
    sets = [
        f"data.source={source}",
        f"data.store={store}",
        "model.image_size=96",
        "model.layer=features.13.conv.0",
        "collect.views_per_image=2",
        "collect.positions_per_image=1",
        "collect.rows_per_chunk=4",
        "collect.batch_size=4",
        "collect.num_workers=0",
        "collect.top_k=5",
    ]
    return load_config(None, sets + list(extra))


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    out = {name: group["samples"][name][:] for name in ROW_ARRAYS}
    out["status"] = group["inputs"]["status"][:]
    out["label_class"] = group["images"]["label_class"][:]
    return out


def test_wnid_table_agrees_with_torchvision_class_names() -> None:
    from torchvision.models import MobileNet_V2_Weights

    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    table = imagenet_classes()
    assert len(table) == 1000 == len(categories)
    wnids = [w for w, _ in table]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000  # class index order = sorted WNIDs
    exact = 0
    for i, (_, words) in enumerate(table):
        name = categories[i].lower()
        synonyms = [w.lower() for w in words]
        exact += name in synonyms
        # torchvision disambiguates its two duplicate names ("crane bird", "maillot tank suit")
        assert name in synonyms or any(name.startswith(s + " ") or name.startswith(s.split()[0]) for s in synonyms), (
            i,
            name,
            words,
        )
    assert exact == 998
    # WNIDs map to the model's index, duplicates by position, and to own class lists by name
    assert list(label_classes(["n01440764", "n03126707", "n02012849", "n99999999"], categories)) == [0, 517, 134, -1]
    assert list(label_classes(["n01440764", "n01443537"], ["goldfish", "tench"])) == [1, 0]


def test_wnid_tree_labels_collect_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = samples(2)
    root = write_tree(tmp_path / "train", items)
    source = open_image_source(root)
    assert source.kind == "imagefolder" and source.label_names == tuple(w for w, _ in WNIDS)
    store = tmp_path / "s.zarr"
    summary = collect.run(CollectSection.of(config(root, store)), StageContext(device=torch.device("cpu")))
    assert summary.stored == 2 * len(items)
    assert list(arrays(store)["label_class"]) == [cls for _, _, cls, _ in items]
    assert cli_main(["info", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"images {len(items)}: {len(items)} with a known model class (100.0%), 3 labels of which 3" in out
    assert "warning" not in out


def test_labels_matching_no_class_warn_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "tree"
    for k, folder in enumerate(["n99999999", "holiday_pics"]):
        (root / folder).mkdir(parents=True)
        (root / folder / "a.jpg").write_bytes(samples(1)[k][3])
    store = tmp_path / "s.zarr"
    with caplog.at_level(logging.WARNING):
        collect.run(CollectSection.of(config(root, store)), StageContext(device=torch.device("cpu")))
    assert any("none of its 2 labels" in r.getMessage() for r in caplog.records)
    assert cli_main(["info", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "warning" in line]
    assert len(lines) == 1 and "'holiday_pics', 'n99999999'" in lines[0] and "--labels" in lines[0]
    assert "images 2: 0 with a known model class (0.0%), 2 labels of which 0 are model classes" in out


def _val_folder(tmp_path: Path) -> tuple[Path, list[int], list[str]]:
    """ILSVRC2012_val_00000001.JPEG .. 6 and their model classes."""
    val = tmp_path / "val"
    val.mkdir()
    items = samples(2)
    order = [4, 0, 2, 5, 1, 3]  # val images in a mixed class order
    for k, i in enumerate(order, start=1):
        (val / f"ILSVRC2012_val_{k:08d}.JPEG").write_bytes(items[i][3])
    return val, [items[i][2] for i in order], [items[i][0] for i in order]


def _devkit_meta(path: Path, devkit_order: list[str]) -> None:
    """A meta.mat shaped like the devkit's: a struct array synsets with ILSVRC2012_ID and WNID."""
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array(
        [(np.array([[i + 1]]), np.array([w]), np.array(["x"]), np.array([[0]])) for i, w in enumerate(devkit_order)],
        dtype=dtype,
    )
    savemat(str(path), {"synsets": synsets[:, None]})


def test_val_folder_with_each_ground_truth_format(tmp_path: Path) -> None:
    val, classes, wnids = _val_folder(tmp_path)
    # Kaggle: LOC_val_solution.csv, rows in any order, ImageId without extension
    loc = tmp_path / "LOC_val_solution.csv"
    rows = [f"ILSVRC2012_val_{k:08d},{w} 10 20 30 40 {w} 1 2 3 4" for k, w in enumerate(wnids, start=1)]
    loc.write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    # devkit: ILSVRC2012_IDs in the devkit's synset order (here: the three WNIDs reversed, then the rest)
    devkit_order = [w for w, _ in reversed(WNIDS)] + [w for w, _ in imagenet_classes() if w not in dict(WNIDS)]
    gt = tmp_path / "devkit" / "ILSVRC2012_validation_ground_truth.txt"
    gt.parent.mkdir()
    gt.write_text("\n".join(str(devkit_order.index(w) + 1) for w in wnids) + "\n")
    # any flat folder: path,label with a header, labels as names / indices / WNIDs
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label\n" + "\n".join(f"ILSVRC2012_val_{k:08d}.JPEG,{c}" for k, c in enumerate(classes, 1)) + "\n"
    )

    from torchvision.models import MobileNet_V2_Weights

    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]

    with pytest.raises(AtlasError, match="meta.mat"):
        open_image_source(val, labels=str(gt))  # the devkit's order is needed and missing
    _devkit_meta(gt.with_name("meta.mat"), devkit_order)
    for labels in (loc, gt, csv):
        source = open_image_source(val, labels=str(labels))
        assert source.kind == "flat"
        mapped = label_classes(list(source.label_names), categories)[source.labels]
        assert list(mapped) == classes, labels.name
    # and collected, the class lands in the store
    store = tmp_path / "val.zarr"
    collect.run(CollectSection.of(config(val, store, f"data.labels={loc}")), StageContext(device=torch.device("cpu")))
    assert list(arrays(store)["label_class"]) == classes
    assert AtlasStore.open(store, mode="r").attrs["dataset"]["labels"] == str(loc)


def test_labels_file_rows_naming_no_image_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    val, classes, _ = _val_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text("ILSVRC2012_val_00000001.JPEG,tench\nnot_here.jpg,goldfish\n")
    with caplog.at_level(logging.WARNING):
        source = open_image_source(val, labels=str(csv))
    assert [r.getMessage() for r in caplog.records if "name no image" in r.getMessage()] == [
        f"{csv}: 1 of 2 rows name no image in the folder (first: not_here.jpg); they are not collected"
    ]
    assert int((source.labels >= 0).sum()) == 1  # the other five stay unlabelled, none dropped
    assert len(source) == 6
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg,x,y\n")
    with pytest.raises(AtlasError, match=r"bad.csv:1: expected 'path,label'"):
        open_image_source(val, labels=str(bad))


def test_subsample_is_seeded_class_balanced_and_recorded(tmp_path: Path) -> None:
    items = samples(5)
    root = write_tree(tmp_path / "train", items)
    source = open_image_source(root)
    draw = subsample(source, None, 2, seed=3)
    assert np.bincount(draw.labels).tolist() == [2, 2, 2]
    balanced = subsample(source, 7, None, seed=3)
    assert sorted(np.bincount(balanced.labels).tolist()) == [2, 2, 3]  # round-robin over classes
    assert subsample(source, 7, None, seed=3).rel_paths == balanced.rel_paths  # same seed, same draw
    assert subsample(source, 7, None, seed=4).rel_paths != balanced.rel_paths
    assert balanced.rel_paths == sorted(balanced.rel_paths)  # kept in the source's order
    store = tmp_path / "s.zarr"
    cfg = config(root, store, "data.max_images=4", "data.per_class=1", "collect.views_per_image=1")
    first = collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu")))
    assert first.stored == 3  # per_class 1 caps it below max_images
    again = collect.run(
        CollectSection.of(cfg), StageContext(device=torch.device("cpu"))
    )  # the same draw: the store is accepted, nothing to do
    assert again.inputs_run == 0
    attrs = AtlasStore.open(store, mode="r").attrs
    assert attrs["dataset"]["selection"] == {"max_images": 4, "per_class": 1, "seed": cfg.collect.seed, "of": 15}
    assert sorted(arrays(store)["label_class"].tolist()) == [0, 1, 517]
    with pytest.raises(AtlasError):  # another draw is another data set: refused, not mixed in
        collect.run(
            CollectSection.of(
                config(root, store, "data.max_images=4", "data.per_class=2", "collect.views_per_image=1")
            ),
            StageContext(device=torch.device("cpu")),
        )
