"""pytest-benchmark suites of fastlift's kernels: ``pytest bench/``.

Triton kernels run under the interpreter on CPU tensors when no GPU is present (slow: those
providers are skipped unless FASTLIFT_BENCH_TRITON=1).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
