"""grid: bin the layout into cells at every zoom level, average each cell; the whitening matrix."""

from stages.grid.stage import run

__all__ = ["run"]
