"""Shared test fixtures.

Triton kernels run on CPU tensors through the interpreter: TRITON_INTERPRET must be set before
triton is first imported, so it is set here, before any test module loads.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

@pytest.fixture
def poisoned():
    """Every uninitialised allocation (torch.empty / at::empty, any device) is filled with NaN.

    A kernel that leaves an element of its output unwritten then fails the comparison with the
    reference instead of passing by luck.
    """
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        probe = torch.empty(7)
        assert torch.isnan(probe).all(), "poisoning of uninitialised memory is not active"
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
