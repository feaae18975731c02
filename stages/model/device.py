"""Device selection: the only place a device name becomes a ``torch.device``.

Nothing in the project keeps a global device or assumes ``cuda:0``: stages receive the
``torch.device`` this returns, and a dask/array-job worker passes its own (``cuda:N``).
"""

from __future__ import annotations

import torch

from store.errors import AtlasError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA (the current device of this process), then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AtlasError(f"device {name!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AtlasError(f"device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AtlasError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s); pick cuda:0..")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AtlasError(f"device {name!r}: MPS is not available; use --device cpu or auto")
    return device
