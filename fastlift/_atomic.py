"""Atomic file writes: a user's data and checkpoints are never left half-written.

Everything fastlift writes (pose files, checkpoints, lifted poses, reports) goes through
:func:`atomic_write_path`: the content is written to a temporary file in the destination's folder,
flushed to disk, and renamed over the destination with ``os.replace`` (atomic on POSIX and
Windows). A crash or a full disk leaves either the old file or the new one, never a mix, and the
temporary file is removed on error.
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["atomic_write_path", "atomic_write"]


def atomic_write_path(path: str, writer, fsync: bool = True) -> str:
    """Call ``writer(tmp_path)`` for a temporary file next to ``path``, then rename it over ``path``.

    The temporary name keeps ``path``'s extension (some writers, ``np.savez`` among them, add one
    otherwise). Returns ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    ext = os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    try:
        writer(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write(path: str, writer, mode: str = "wb", fsync: bool = True) -> str:
    """Call ``writer(fileobj)`` on a temporary file opened with ``mode`` (``"wb"`` or ``"w"``) next
    to ``path``, then rename it over ``path``. Returns ``path``."""
    def run(tmp):
        with open(tmp, mode) as fh:
            writer(fh)
    return atomic_write_path(path, run, fsync=fsync)
