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


class StorageError(AtlasError):
    """The filesystem refused a write (full, read-only, no permission): one line naming the path and the fix."""


class ChecksumError(AtlasError):
    """A chunk's bytes on disk no longer match the checksum written with them."""


# errno -> what the user should do about it (the path is named by the message itself)
_STORAGE_FIXES = {
    "ENOSPC": "free space on that filesystem (or point the output elsewhere)",
    "EDQUOT": "free space within your disk quota (or point the output elsewhere)",
    "EFBIG": "raise the file-size limit (ulimit -f) or point the output elsewhere",
    "EROFS": "remount it writable or point the output at a writable folder",
    "EACCES": "make it writable for this user (chmod/chown) or point the output at a writable folder",
    "EPERM": "make it writable for this user (chmod/chown) or point the output at a writable folder",
}


def storage_error(exc: OSError, path: object) -> Exception:
    """The one-line error for an ``OSError`` raised while writing ``path`` (or ``exc`` itself if it is not
    about storage: a missing file is a bug or a race, and is re-raised as it is by the caller).

    The same command resumes where it stopped once the cause is fixed: every stage writes aside or
    marks its units done last, so nothing half-written is kept as finished.
    """
    import errno as errno_mod

    name = errno_mod.errorcode.get(exc.errno or 0, "")
    fix = _STORAGE_FIXES.get(name)
    if fix is None:
        return exc
    reason = exc.strerror or name
    return StorageError(
        f"cannot write {path}: {reason}; {fix}, then rerun the same command (it resumes; nothing half-written was kept)"
    )
