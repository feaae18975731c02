"""The engine's own error: a bad objective, parameterisation, transform or optimiser setting.

The engine is usable on its own (any ``nn.Module``, no atlas store, no CLI), so it raises its own
type rather than the pipeline's. Like the pipeline's errors it is one line that names the value
and says what to do; the ``atlas`` CLI prints it the same way (exit status 2).
"""

from __future__ import annotations


class FeatureVisError(ValueError):
    """A one-line, actionable error about an argument given to the feature-visualization engine."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
