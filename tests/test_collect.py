"""The collect stage end to end on real photos and the real MobileNetV2 (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import zarr
from PIL import Image

from pipeline.cli import main as cli_main
from pipeline.params import load_config
from stages.collect import stage as collect
from stages.config import Config
from stages.context import StageContext
from stages.images.crops import render_view, view_box
from stages.sections import CollectSection
from store.atlas_store import AtlasStore
from store.errors import AtlasError

REPO = Path(__file__).resolve().parents[1]
ROW_ARRAYS = ["activations", "yx", "top_pred_idx", "top_pred_logit", "attr_idx", "attr_val", "attr_label"]


def _config(source: Path, store: Path, **collect_overrides: object) -> Config:
    base = {
        "views_per_image": 3,
        "positions_per_image": 2,
        "rows_per_chunk": 4,
        "batch_size": 5,
        "num_workers": 0,
        "top_k": 7,
    }
    base.update(collect_overrides)
    sets = [f"data.source={source}", f"data.store={store}", "model.layer=features.13.conv.0"]
    sets += [f"collect.{k}={v}" for k, v in base.items()]
    return load_config(None, sets)


def _arrays(store_path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store_path), mode="r")
    out = {name: group["samples"][name][:] for name in ROW_ARRAYS}
    out["status"] = group["inputs"]["status"][:]
    out["done"] = group["blocks"]["done"][:]
    return out


@pytest.fixture(scope="module")
def reference_store(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted, unsharded run that other tests compare against."""
    path = tmp_path_factory.mktemp("ref") / "store.zarr"
    summary = collect.run(CollectSection.of(_config(photo_folder, path)), StageContext(device=torch.device("cpu")))
    assert summary.stored == 12 and summary.skipped == {}
    return path


def test_shapes_dtypes_and_metadata(reference_store: Path, mobilenet) -> None:
    store = AtlasStore.open(reference_store, mode="r")
    assert store.n_rows == 4 * 3 * 2 and store.channels == 576
    arrays = _arrays(reference_store)
    assert arrays["activations"].dtype == np.float16 and arrays["activations"].shape == (24, 576)
    assert arrays["attr_idx"].shape == (24, 7) and arrays["top_pred_idx"].shape == (24, 5)
    assert arrays["done"].all() and (arrays["status"] == 1).all()
    yx = arrays["yx"]
    assert ((yx >= 1) & (yx <= 12)).all(), "positions must avoid the 1-cell border of the 14x14 map"
    attrs = store.attrs
    assert attrs["model"]["name"] == "mobilenet_v2" and attrs["model"]["layer"] == "features.13.conv.0"
    assert attrs["model"]["weights_sha256"] == mobilenet.weights_sha256
    assert attrs["dataset"]["n_images"] == 4 and len(attrs["dataset"]["fingerprint"]) == 64
    assert attrs["sampling"]["positions_per_image"] == 2 and attrs["sampling"]["seed"] == 0
    assert {"torch", "zarr", "numpy"} <= set(attrs["versions"])
    assert attrs["counts"]["stored"] == 12 and attrs["counts"]["skipped"] == 0
    assert len(attrs["class_names"]) == 1000 and attrs["label_names"] == ["other", "tabby"]


def test_activations_equal_a_plain_forward_of_the_view(reference_store: Path, mobilenet) -> None:
    """Recompute each stored row with an ordinary forward hook on the full model."""
    store = AtlasStore.open(reference_store, mode="r")
    arrays = _arrays(reference_store)
    paths = store.image_paths()
    captured: list[torch.Tensor] = []
    layer = dict(mobilenet.module.named_modules())["features.13.conv.0"]
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        for row in (0, 7, 13, 22):
            inp = row // 2
            image, view = inp // 3, inp % 3
            img = Image.open(paths[image]).convert("RGB")
            box = view_box(img.width, img.height, image, view, 3, (0.25, 1.0), 0)
            x = torch.from_numpy(np.asarray(render_view(img, box, 224), np.float32) / 255).permute(2, 0, 1)[None]
            captured.clear()
            with torch.no_grad():
                logits = mobilenet.module(mobilenet.normalize(x))
            y, x_ = arrays["yx"][row]
            expected = captured[0][0, :, y, x_].numpy()
            np.testing.assert_allclose(arrays["activations"][row].astype(np.float32), expected, rtol=2e-3, atol=2e-2)
            assert arrays["top_pred_idx"][row][0] == int(logits.argmax())
    finally:
        handle.remove()


def test_label_attribution_matches_the_topk_value(reference_store: Path) -> None:
    store = AtlasStore.open(reference_store, mode="r")
    arrays = _arrays(reference_store)
    labels = store.row_labels()
    tabby = store.attrs["label_names"].index("tabby")
    for row in np.flatnonzero(labels == tabby):
        assert np.isfinite(arrays["attr_label"][row])
        hit = np.flatnonzero(arrays["attr_idx"][row] == 281)
        if hit.size:
            assert arrays["attr_val"][row][hit[0]] == pytest.approx(arrays["attr_label"][row], rel=2e-3, abs=1e-3)
    assert np.isnan(arrays["attr_label"][labels != tabby]).all(), "'other' is no ImageNet class: unknown"
    vals = arrays["attr_val"].astype(np.float32)
    assert (np.diff(vals, axis=1) <= 1e-3).all(), "top-k attributions are sorted, largest first"


def test_two_shards_equal_one_run_and_rerun_is_idempotent(
    photo_folder: Path, reference_store: Path, tmp_path: Path
) -> None:
    path = tmp_path / "sharded.zarr"
    cfg = _config(photo_folder, path)
    first = collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(1, 2)))
    assert first.missing_blocks > 0
    collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(0, 2)))
    again = collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu"), shard=(0, 2)))
    assert again.inputs_run == 0 and again.missing_blocks == 0
    ours, ref = _arrays(path), _arrays(reference_store)
    for name in ROW_ARRAYS + ["status", "done"]:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)


def wait_for_done_blocks(proc: subprocess.Popen, path: Path, blocks: int) -> None:
    """Wait until the collect process ``proc`` has finished ``blocks`` blocks of ``path`` (an event, with a
    generous ceiling, not a speed requirement); it must still be running then."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (path / "blocks" / "done" / "zarr.json").exists():
            if int(zarr.open_group(str(path), mode="r")["blocks"]["done"][:].sum()) >= blocks:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"collect ended before it could be killed: {proc.stderr.read().decode()[-500:]}"


def _collect_cli_args(photo_folder: Path, path: Path) -> list[str]:
    """``atlas collect`` of ``photo_folder`` into ``path`` with small blocks (several per run, so a
    kill lands between them), one decoding worker (so there is a child process to outlive the
    kill) and the in-process reference's parameters, so the two runs can be compared row for row."""
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "collect",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--source",
        str(photo_folder),
        "--store",
        str(path),
        "--views-per-image",
        "12",
        "--positions-per-image",
        "2",
        "--rows-per-chunk",
        "4",
        "--batch-size",
        "5",
        "--num-workers",
        "1",
        "--top-k",
        "7",
        "--layer",
        "features.13.conv.0",
    ]  # the in-process reference's layer


def _kill_mid_run(proc: subprocess.Popen, path: Path) -> None:
    """SIGKILL the collect ``proc`` once two blocks of ``path`` are done; its decoding workers must
    die with it rather than run on as orphans."""
    wait_for_done_blocks(proc, path, 2)
    workers = psutil.Process(proc.pid).children(recursive=True)  # its image-decoding processes
    assert workers, "collect.num_workers 1 should have started a decoding worker"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"decoding workers outlived the killed collect: {[w.pid for w in alive]}"


def test_sigkill_mid_run_then_resume_completes_every_input_once(photo_folder: Path, tmp_path: Path) -> None:
    path = tmp_path / "killed.zarr"
    args = _collect_cli_args(photo_folder, path)
    # the CLI processes must use this process's thread count: float sums (and so the float16 rows)
    # can differ in the last bit between 1 and 2 intra-op threads, and the reference run is in-process
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _kill_mid_run(proc, path)
    partial = _arrays(path)
    assert 0 < partial["done"].sum() < partial["done"].size, "killed mid-run: some blocks done, some not"
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-800:]
    final = _arrays(path)
    assert final["done"].all() and (final["status"] == 1).all()
    assert AtlasStore.open(path).counts() == {
        "inputs": 48,
        "stored": 48,
        "pending": 0,
        "skipped": 0,
        **{f"skipped_{r}": 0 for r in AtlasStore.open(path).attrs["skip_reasons"]},
    }
    # every input exactly once, at its fixed address: identical to an uninterrupted run
    whole = tmp_path / "whole.zarr"
    collect.run(
        CollectSection.of(_config(photo_folder, whole, views_per_image=12)), StageContext(device=torch.device("cpu"))
    )
    ref = _arrays(whole)
    for name in ROW_ARRAYS:
        np.testing.assert_array_equal(final[name], ref[name], err_msg=name)


def _write_bad_files(folder: Path) -> dict[str, str]:
    """One file per kind of bad input, made here; returns file name -> expected skip reason."""
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    good = folder / "good.jpg"
    Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)).save(good, quality=90)
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (3000, 3000), (120, 30, 200)).save(folder / "huge.png")
    return {
        "empty.jpg": "empty_file",
        "notes.png": "not_an_image",
        "truncated.jpg": "decode_error",
        "huge.png": "too_many_pixels",
    }


def test_bad_inputs_are_skipped_with_reasons_never_dropped(photo_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for jpg in sorted(photo_folder.rglob("*.jpg"))[:2]:
        (folder / jpg.name).write_bytes(jpg.read_bytes())
    expected = _write_bad_files(folder)
    cfg = _config(folder, tmp_path / "s.zarr", views_per_image=2, positions_per_image=1, max_pixels=4_000_000)
    summary = collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu")))
    assert summary.stored == (2 + 1) * 2  # two photos + good.jpg, two views each
    assert summary.skipped == {reason: 2 for reason in expected.values()}
    store = AtlasStore.open(tmp_path / "s.zarr", mode="r")
    counts = store.counts()
    assert counts["stored"] + counts["skipped"] == counts["inputs"] == 7 * 2 and counts["pending"] == 0
    reasons = store.attrs["skip_reasons"]
    status = store.input_status()
    for i, path in enumerate(store.image_paths()):
        name = Path(str(path)).name
        if name in expected:
            assert set(status[2 * i : 2 * i + 2]) == {2 + reasons.index(expected[name])}, name
    assert not store.valid_mask()[np.repeat(status != 1, 1)].any()


def test_collect_into_a_store_of_another_layer_is_refused(
    photo_folder: Path, reference_store: Path, tmp_path: Path
) -> None:
    cfg = _config(photo_folder, reference_store)
    cfg.model.layer = "features.10.conv.0"
    with pytest.raises(AtlasError, match=r"another configuration \(model\.layer"):
        collect.run(CollectSection.of(cfg), StageContext(device=torch.device("cpu")))


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--model", "nonet"], "not a torchvision classifier; choose one of"),
        (["--layer", "features.77"], "not found in MobileNetV2; closest: features.7"),
        (["--positions-per-image", "0"], "collect.positions_per_image"),
        (["--source", "/nonexistent/photos"], "/nonexistent/photos"),
    ],
)
def test_cli_bad_parameters_exit_2_with_one_line(
    extra: list[str], fragment: str, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "collect",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--source",
        str(photo_folder),
        "--store",
        str(tmp_path / "s.zarr"),
        *extra,
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err


def test_cli_empty_folder_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    argv = [
        "collect",
        "-q",
        "--params",
        str(REPO / "params.yaml"),
        "--source",
        str(tmp_path / "empty"),
        "--store",
        str(tmp_path / "s.zarr"),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "empty" in err and len(err.splitlines()) == 1


def test_head_off_stores_same_activations_and_no_attribution(
    photo_folder: Path, reference_store: Path, tmp_path: Path
) -> None:
    path = tmp_path / "trunk_only.zarr"
    collect.run(CollectSection.of(_config(photo_folder, path, head=False)), StageContext(device=torch.device("cpu")))
    ours, ref = _arrays(path), _arrays(reference_store)
    np.testing.assert_array_equal(ours["activations"], ref["activations"])
    np.testing.assert_array_equal(ours["yx"], ref["yx"])
    assert (ours["attr_idx"] == -1).all() and (ours["top_pred_idx"] == -1).all()
    assert np.isnan(ours["attr_label"]).all()
