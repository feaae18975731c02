"""The one exception type a user sees.

Every bad value that comes in from a user (a parameter, a path, a store made by another model) is
caught at the edge where it enters and raised as :class:`AtlasError` with one line that names the
file or parameter and says what to do. The CLI prints that line and exits with status 2; it never
shows a traceback from deep inside a library.
"""

from __future__ import annotations


class AtlasError(Exception):
    """A one-line, actionable error about user input (parameters, files, stores)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        one_line = " ".join(str(message).split())
        super().__init__(one_line)
