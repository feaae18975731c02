"""explain: one image through the atlas (nearest cell per position, NMF groups)."""

from stages.explain.stage import run

__all__ = ["run"]
