"""The one exception class of the data layer."""
from __future__ import annotations

__all__ = ["PoseDataError"]


class PoseDataError(ValueError):
    """A pose file or pose array that cannot be used as it is.

    Raised for malformed or truncated files, missing or unexpected keys, shape and dtype
    mismatches, unknown layouts or layouts with no mapping, and bad arguments to the readers and
    the loader. The message names the file (or the argument) and the problem.
    """
