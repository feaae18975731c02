"""Names, dtypes and the version of the on-disk layout.

The store is one zarr (v3) group. Collect pre-sizes every array when it creates the store, so the
position of every sample is known before any image is read:

    row = input * positions_per_image + position      input = image * views_per_image + view

That fixed addressing is what makes the store resumable and shardable: a *block* is
``block_inputs`` consecutive inputs (= one zarr chunk of every per-row array); a block is written
whole and then marked done in ``blocks/done`` (one chunk per block, written atomically by zarr's
LocalStore), so a run killed at any moment rewrites at most the blocks it had not marked, and n
shards write disjoint chunk files.

Layout::

    /                     attrs: schema_version, model, dataset, sampling, class_names, ...
    images/path           [n_images] str     absolute path as collected
    images/label          [n_images] int32   dataset label (index into attrs.label_names), -1
    images/label_class    [n_images] int32   the label as a model class index, -1 if unknown
    inputs/status         [n_inputs] uint8   0 pending, 1 stored, 2+ skipped (attrs.skip_reasons)
    samples/activations   [n_rows, C] float16|float32
    samples/yx            [n_rows, 2] int16  spatial position at the layer, -1 for skipped rows
    samples/top_pred_idx  [n_rows, P] int16  top predicted classes (P = top_predictions)
    samples/top_pred_logit[n_rows, P] float16
    samples/attr_idx      [n_rows, K] int16  top-K attributed classes, -1 when the head is off
    samples/attr_val      [n_rows, K] float16 attribution h . d logit_k / d h at (y, x)
    samples/attr_label    [n_rows]    float32 attribution to the image's label class (NaN unknown)
    blocks/done           [n_blocks] uint8   1 once every array of the block is written
    layout/, grid/, whitening/               written by the later stages (store/derived.py)

Schema versions: 1 = the layout above without chunk checksums; 2 = every array carries zarr's
``crc32c`` codec and every chunk of a done block is on disk, even one equal to the fill value
(store/zarrio.py), so ``atlas verify`` can tell a lost chunk from an empty one. A version-1 store is
refused with both versions named and ``atlas migrate`` rewrites it as version 2 (store/migrate.py).
"""

from __future__ import annotations

SCHEMA_VERSION = 2
MIGRATABLE_VERSIONS = (1,)  # older versions `atlas migrate` rewrites as SCHEMA_VERSION
FORMAT_NAME = "activation-atlas-store"

STATUS_PENDING = 0
STATUS_STORED = 1
STATUS_FIRST_SKIP = 2  # status = STATUS_FIRST_SKIP + index into attrs["skip_reasons"]

IMAGES = "images"
INPUTS = "inputs"
SAMPLES = "samples"
BLOCKS = "blocks"

# per-row arrays: name -> (dtype, trailing shape key, fill value). The trailing shape key names
# an attribute of the sampling spec ("channels", "top_predictions", "top_k") or None for 1-D.
ROW_ARRAYS: dict[str, tuple[str, str | None, float | int]] = {
    "yx": ("int16", "2", -1),
    "top_pred_idx": ("int16", "top_predictions", -1),
    "top_pred_logit": ("float16", "top_predictions", 0),
    "attr_idx": ("int16", "top_k", -1),
    "attr_val": ("float16", "top_k", 0),
    "attr_label": ("float32", None, float("nan")),
}

# Metadata keys that must match for a run to write into an existing store.
IDENTITY_KEYS = ("schema_version", "model", "dataset", "sampling")
