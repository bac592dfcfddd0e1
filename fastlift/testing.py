"""Test helpers for fastlift's kernel backends (used by tests/ and bench/, and by projects that
extend fastlift with their own backends). Needs pytest only when :func:`backend_params` is called.
"""
from __future__ import annotations

import torch

from fastlift.ops import available_backends

__all__ = ["backend_device", "backend_params"]


def backend_device(backend: str) -> str:
    """The device a backend's test tensors live on: CUDA for cuda (and triton with a GPU), else CPU."""
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def backend_params(names=("cpu", "triton", "cuda")):
    """``pytest.param`` per compiled/Triton backend, each skipped with its reason when unavailable."""
    import pytest

    status = available_backends()
    params = []
    for name in names:
        marks = [pytest.mark.skipif(not status[name].available, reason=f"{name}: {status[name].reason}")]
        if name == "triton":
            marks.append(pytest.mark.triton)
        params.append(pytest.param(name, marks=marks, id=name))
    return params
