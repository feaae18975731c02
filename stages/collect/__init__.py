"""collect: random spatial activations of one layer, top predictions and attributions into the store."""

from stages.collect.stage import run

__all__ = ["run"]
