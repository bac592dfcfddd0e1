"""Backend selection for fastlift's fused ops.

Every op has up to four backends:

``cuda``       compiled CUDA kernels in ``fastlift._C`` (CUDA tensors, CUDA build only)
``triton``     Triton kernels in ``fastlift.kernels`` (CUDA tensors; CPU tensors only under
               ``TRITON_INTERPRET=1``, which is how they are tested without a GPU)
``cpu``        compiled C++ (OpenMP) kernels in ``fastlift._C`` (CPU tensors)
``reference``  the pure-torch implementation, the oracle every other backend is tested against

The backend is chosen per call (``backend=`` argument), else by the ``FASTLIFT_BACKEND``
environment variable, else automatically from the tensor's device and what this install has.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import torch

from fastlift import _extension

BACKENDS = ("cuda", "triton", "cpu", "reference")
_AUTO = (None, "", "auto")


@dataclasses.dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run in this install, and why not when it cannot."""

    available: bool
    reason: str

    def __repr__(self) -> str:
        return f"{'available' if self.available else 'unavailable'} ({self.reason})"


def triton_interpret() -> bool:
    """True when Triton runs its kernels in the interpreter (on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def available_backends() -> dict[str, BackendStatus]:
    """What this install can run: ``{backend: BackendStatus(available, reason)}``.

    Example::

        >>> fastlift.ops.available_backends()["cpu"]
        available (compiled C++ kernels in fastlift._C)
    """
    has_gpu = torch.cuda.is_available()
    out: dict[str, BackendStatus] = {}
    if not _extension.extension_available():
        out["cuda"] = BackendStatus(False, _extension.extension_error())
    elif not _extension.extension_has_cuda():
        out["cuda"] = BackendStatus(False, "fastlift._C was built without CUDA (CPU build of torch or no nvcc)")
    elif not has_gpu:
        out["cuda"] = BackendStatus(False, "fastlift._C has CUDA kernels but no GPU is visible")
    else:
        out["cuda"] = BackendStatus(True, "compiled CUDA kernels in fastlift._C")

    if not _triton_installed():
        out["triton"] = BackendStatus(False, "triton is not installed")
    elif has_gpu:
        out["triton"] = BackendStatus(True, "Triton kernels on CUDA tensors")
    elif triton_interpret():
        out["triton"] = BackendStatus(True, "Triton interpreter on CPU tensors (TRITON_INTERPRET=1)")
    else:
        out["triton"] = BackendStatus(False, "no GPU; set TRITON_INTERPRET=1 to run Triton kernels on CPU tensors")

    if _extension.extension_available():
        out["cpu"] = BackendStatus(True, "compiled C++ kernels in fastlift._C")
    else:
        out["cpu"] = BackendStatus(False, _extension.extension_error())
    out["reference"] = BackendStatus(True, "pure torch, any device")
    return out


def _can_run(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run on ``device``, else the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if not _extension.extension_available():
            return str(_extension.extension_error())
        if device.type != "cpu":
            return f"the cpu backend runs CPU tensors, got a tensor on {device}"
        return None
    if backend == "cuda":
        if not _extension.extension_has_cuda():
            return "fastlift._C was not built with CUDA kernels"
        if device.type != "cuda":
            return f"the cuda backend runs CUDA tensors, got a tensor on {device}"
        return None
    if backend == "triton":
        if not _triton_installed():
            return "triton is not installed"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpret():
            return None
        return f"Triton needs CUDA tensors, or TRITON_INTERPRET=1 for CPU tensors (got {device})"
    return f"unknown backend {backend!r}; choose one of {BACKENDS} or 'auto'"


def resolve_backend(op: str, device: torch.device, backend: str | None = None,
                    supported: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs ``op`` on ``device``.

    ``backend`` (per call) wins over ``FASTLIFT_BACKEND``; ``None``/``"auto"`` picks the fastest one
    available for the device: cuda, then triton, for CUDA tensors; cpu for CPU tensors; else reference.
    Raises ValueError naming the op and the reason when an explicitly requested backend cannot run.
    """
    source = "backend="
    if backend in _AUTO:
        backend = os.environ.get("FASTLIFT_BACKEND", "").strip().lower() or None
        source = "FASTLIFT_BACKEND="
    if backend in _AUTO:
        order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
        for candidate in order:
            if candidate in supported and _can_run(candidate, device) is None:
                if candidate == "reference" and device.type == "cpu":
                    _extension.warn_if_missing()
                return candidate
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"fastlift.ops.{op}: unknown backend {source}{backend!r}; "
                         f"choose one of {', '.join(BACKENDS)} or 'auto'")
    if backend not in supported:
        raise ValueError(f"fastlift.ops.{op}: backend {backend!r} is not implemented for this op "
                         f"(it has {', '.join(supported)})")
    why = _can_run(backend, device)
    if why is not None:
        raise ValueError(f"fastlift.ops.{op}: {source}{backend!r} cannot run here: {why}")
    return backend


def compute_dtype(t: torch.Tensor, name: str, op: str) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are computed in float32.

    The geometry is computed in float32 at least: half precision loses the sub-pixel detail that
    depth is recovered from.
    """
    if t.dtype == torch.float64:
        return torch.float64
    if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return torch.float32
    raise TypeError(f"fastlift.ops.{op}: {name} must be a floating-point tensor, got {t.dtype}")
