"""Loading of the compiled extension ``fastlift._C`` (internal; users go through fastlift.ops)."""
from __future__ import annotations

import importlib.util
import warnings

import torch  # noqa: F401  (loads libc10/libtorch, which fastlift._C links against)

_C = None
_LOAD_ERROR: str | None = None
_WARNED = False

if importlib.util.find_spec("fastlift._C") is None:
    _LOAD_ERROR = ("this install has no compiled extension (built with FASTLIFT_NO_EXTENSION=1, "
                   "or fastlift imported from a source tree)")
else:
    try:  # importing the library registers its kernels as torch.ops.fastlift_C.*
        from fastlift import _C  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:  # present but broken: say why
        _C = None
        _LOAD_ERROR = f"fastlift._C failed to load: {type(exc).__name__}: {exc}"


def extension_available() -> bool:
    """True when the compiled extension ``fastlift._C`` is loaded."""
    return _C is not None


def extension_has_cuda() -> bool:
    """True when ``fastlift._C`` was compiled with its CUDA kernels."""
    return _C is not None and bool(getattr(_C, "compiled_with_cuda", 0))


def extension_error() -> str | None:
    """Why the extension could not be loaded, or None when it is loaded."""
    return _LOAD_ERROR


def warn_if_missing() -> None:
    """Emit, once per process, the warning that fastlift runs on its pure-torch path."""
    global _WARNED
    if _C is None and not _WARNED:
        _WARNED = True
        warnings.warn(
            "fastlift: the compiled extension fastlift._C is not available "
            f"({_LOAD_ERROR}); CPU ops fall back to the pure-torch reference kernels. "
            "Build it with `pip install --no-build-isolation .` (torch installed first).",
            RuntimeWarning,
            stacklevel=3,
        )
