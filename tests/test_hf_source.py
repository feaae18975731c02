"""A Hugging Face dataset saved on disk as data.source: image and label columns by name, class
names from its ClassLabel feature, the same store as the folder tree, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.collect import stage as collect
from stages.context import StageContext
from stages.images import archives
from stages.images.decoding import decode_rgb
from stages.images.sources import open_image_source
from stages.sections import CollectSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError
from tests.imagenet_fixtures import WNIDS, samples, write_tree
from tests.test_imagenet_layouts import ROW_ARRAYS, arrays, config

datasets = pytest.importorskip("datasets", reason="the hf extra (pip install 'activation-atlas[hf]')")


def _save(folder: Path, items: list, image_column: str = "image", label_column: str = "label") -> Path:
    names = [w for w, _ in WNIDS]
    features = datasets.Features({image_column: datasets.Image(), label_column: datasets.ClassLabel(names=names)})
    table = {
        image_column: [{"bytes": data, "path": None} for _, _, _, data in items],
        label_column: [names.index(wnid) for wnid, _, _, _ in items],
    }
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    items = samples(2)
    write_tree(root / "tree", items)
    _save(root / "imagenet_hf", items)
    _save(root / "renamed", items, image_column="jpg", label_column="synset")
    return {"root": root, "tree": root / "tree", "hf": root / "imagenet_hf", "renamed": root / "renamed"}


def test_saved_dataset_gives_classes_and_the_same_store_as_the_folder(data: dict[str, Path], tmp_path: Path) -> None:
    source = open_image_source(data["hf"])
    assert source.kind == "hf" and source.label_names == tuple(w for w, _ in WNIDS) and len(source) == 6
    tree_store, hf_store = tmp_path / "tree.zarr", tmp_path / "hf.zarr"
    collect.run(CollectSection.of(config(data["tree"], tree_store)), StageContext(device=torch.device("cpu")))
    collect.run(CollectSection.of(config(data["hf"], hf_store)), StageContext(device=torch.device("cpu")))
    ours, ref = arrays(hf_store), arrays(tree_store)
    assert list(ours["label_class"]) == [cls for _, _, cls, _ in samples(2)]
    for name in ROW_ARRAYS + ["status", "label_class"]:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
    path = str(AtlasStore.open(hf_store, mode="r").image_paths()[3])
    assert path.endswith("imagenet_hf!/image/3")  # later stages read the row back from the path
    tree_image = decode_rgb(data["tree"] / "n01443537" / "n01443537_1001.JPEG", 10**8).image
    assert np.array_equal(np.asarray(decode_rgb(path, 10**8).image), np.asarray(tree_image))


def test_columns_by_name(data: dict[str, Path]) -> None:
    source = open_image_source(data["renamed"], image_column="jpg", label_column="synset")
    assert source.label_names == tuple(w for w, _ in WNIDS) and list(source.labels) == [0, 0, 1, 1, 2, 2]
    assert source.decode(5, 10**8).ok
    with pytest.raises(AtlasError, match=r"no image column 'image' \(columns: jpg, synset\); set data.image_column"):
        open_image_source(data["renamed"])
    unlabelled = open_image_source(data["renamed"], image_column="jpg")  # no 'label' column: unlabelled
    assert (unlabelled.labels == -1).all() and unlabelled.label_names == ()


def test_dataset_dict_and_missing_package_are_one_line_errors(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = datasets.DatasetDict(
        {"train": datasets.load_from_disk(str(data["hf"])), "validation": datasets.load_from_disk(str(data["hf"]))}
    )
    both.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(AtlasError, match=r"a DatasetDict with splits train, validation; set data.source to one split"):
        open_image_source(tmp_path / "dd")
    assert len(open_image_source(tmp_path / "dd" / "validation")) == 6
    archives.load_hf.cache_clear()
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the hf extra were not installed
    with pytest.raises(AtlasError, match=r"pip install 'activation-atlas\[hf\]'"):
        open_image_source(data["hf"])
    archives.load_hf.cache_clear()
