"""verify: check a store, everything derived from it and the exported atlas; mark damage for redo."""

from stages.verify.stage import run

__all__ = ["run"]
