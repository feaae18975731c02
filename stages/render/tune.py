"""``render.tune: true``: the intra-op threads and sub-batch size that render fastest on this device.

Why: how many icons per second a render step gives depends on the device, the network, the layer
and the icon size, not on anything the user knows in advance. With two threads on a two-core machine
shared with other jobs, one thread was ~10x faster (tests/featurevis_fixtures.py); a large batch
fills a GPU but on a CPU a smaller one may keep the activations in cache. So the first render on a
device measures it: a few forward + input-gradient backward passes (the floor of a render step,
bench/render.py) of the fast forward for each candidate (threads, batch), and keeps the one with the
most images per second. The choice is written to a small JSON file keyed by device, model, weights,
layer, icon size and the speed switches, next to the compile cache
(``<user cache dir>/activation-atlas/render/tune.json``), and read back by every later run: the
measurement is paid once per key, never per batch.

A sub-batch below ``render.batch_size`` splits every store batch into seeded parts as the CUDA memory
cap does (:func:`stages.render.stage.render_batch`), so the icons differ from an untuned run's (still
deterministic for a given choice, which is recorded in the cache file).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stages.featurevis.forward import Forward
from stages.render.compile_cache import cache_dir

log = logging.getLogger(__name__)

_BATCHES = (8, 16, 32, 64, 100, 128)
_STEPS = 3  # timed passes per candidate, after one warm-up pass


@dataclass(frozen=True)
class Choice:
    threads: int
    batch: int
    images_per_s: float


def device_key(device: torch.device) -> str:
    """The hardware a measurement holds for: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model}:{_cpu_count()} cores"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def candidates(device: torch.device, batch_size: int) -> list[tuple[int, int]]:
    """``(threads, batch)`` pairs to time: every thread count up to the cores (CPU), batches up to ``batch_size``."""
    threads = list(range(1, _cpu_count() + 1)) if device.type == "cpu" else [torch.get_num_threads()]
    batches = sorted({b for b in _BATCHES if b < batch_size} | {batch_size})
    return [(t, b) for t in threads for b in batches]


def measure(forward: Forward, layer: str, size: int, device: torch.device, threads: int, batch: int) -> float:
    """Images per wall second of forward + input-gradient backward at ``threads`` and ``batch``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)

        def one() -> None:
            forward(x)[layer].float().sum().backward(inputs=[x])

        one()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(_STEPS):
            one()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return batch * _STEPS / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)


def tuned(
    forward: Forward, layer: str, size: int, batch_size: int, device: torch.device, key: str, path: Path | None = None
) -> Choice:
    """The recorded choice for ``key`` on this device, else measured now and recorded."""
    path = path if path is not None else _default_path()
    full_key = f"{device_key(device)}|{key}|size={size}|max_batch={batch_size}"
    records = _read(path)
    if full_key in records:
        return Choice(**records[full_key])
    scored = [(measure(forward, layer, size, device, t, b), t, b) for t, b in candidates(device, batch_size)]
    rate, threads, batch = max(scored)
    choice = Choice(threads=threads, batch=batch, images_per_s=round(rate, 3))
    log.info(
        "render tune %s: %d thread(s), batch %d (%.2f images/s forward+backward)", full_key, *asdict(choice).values()
    )
    if path is not None:
        records[full_key] = asdict(choice)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError as exc:
            log.warning("render tune: cannot record the choice in %s (%s); it is measured again next run", path, exc)
    return choice


def _default_path() -> Path | None:
    folder = cache_dir("render")
    return folder / "tune.json" if folder is not None else None


def _read(path: Path | None) -> dict[str, dict]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("render tune: %s is unreadable; measuring again", path)
        return {}
    return data if isinstance(data, dict) else {}
