"""Fused geometry ops of fastlift.

Each op is a ``torch.library`` custom op (``torch.ops.fastlift.*``) with a fake implementation and
a registered backward, so ``torch.compile`` and ``torch.export`` trace through it. The backend is
chosen per call, by ``FASTLIFT_BACKEND``, or automatically: see :func:`available_backends`.
"""
from fastlift.ops._backend import BACKENDS, BackendStatus, available_backends, resolve_backend
from fastlift.ops.normalize import normalize_2d, normalize_2d_reference

__all__ = [
    "BACKENDS",
    "BackendStatus",
    "available_backends",
    "resolve_backend",
    "normalize_2d",
    "normalize_2d_reference",
]
