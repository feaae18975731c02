"""The small real atlas is byte-identical to the one recorded before the layering refactor.

``tests/data/small_atlas_digests.json`` was written by ``python -m tests.golden_small_atlas
--record`` on the tree as it stood before the move to three floors; the session's ``small_atlas``
is built with today's code (same photos, weights, seed and settings, CPU, one thread). Any array
whose bytes changed (collect rows, layout, grid cells, whitening, icons) fails here by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.golden_small_atlas import DIGESTS, atlas_digests


def test_small_atlas_outputs_match_the_recorded_digests(small_atlas) -> None:
    recorded = json.loads(DIGESTS.read_text())
    now = atlas_digests(Path(small_atlas.store.path))
    assert sorted(now) == sorted(recorded)
    changed = [f"{group}/{name}" for group in recorded for name in recorded[group]
               if now[group].get(name) != recorded[group][name]]
    missing = [f"{g}/{n}" for g in now for n in now[g] if n not in recorded[g]]
    assert not changed and not missing, f"outputs changed: {changed}; new arrays: {missing}"
    assert len(recorded["icons"]) >= 4 and any(k.endswith("/icons") for k in recorded["icons"])
