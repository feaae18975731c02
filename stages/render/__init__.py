"""render: one icon per kept cell by feature visualization; the fidelity report."""

from stages.render.stage import run

__all__ = ["run"]
