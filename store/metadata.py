"""JSON-ready metadata and the comparison that refuses a mismatched store.

zarr keeps attributes as JSON, so tuples come back as lists and numpy scalars must be plain
numbers; normalising before writing and before comparing makes "same parameters" exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def json_ready(value: Any) -> Any:
    """``value`` as it will read back from zarr attributes."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def first_difference(old: Any, new: Any, holder: str = "store", prefix: str = "") -> str | None:
    """The first differing key of two nested dicts, as ``key: <holder> has X, this run has Y``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), holder, f"{prefix}{key}.")
            if found:
                return found
        return None
    if old != new:
        return f"{prefix.rstrip('.')}: {holder} has {old!r}, this run has {new!r}"
    return None
