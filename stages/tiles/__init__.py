"""tiles: the rendered levels as deep-zoom pyramids, per-cell data and the static web viewer."""

from stages.tiles.stage import run

__all__ = ["run"]
