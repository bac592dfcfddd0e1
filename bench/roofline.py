"""Measured machine ceilings that fastlift's benchmarks are judged against.

* copy bandwidth (GB/s): read + write bytes of a large ``Tensor.copy_`` per second, the roofline
  for the memory-bound geometry kernels;
* GEMM rate (GFLOP/s): float32 (and bfloat16) matrix multiply, the bound for the MLP training step.

Run ``python bench/roofline.py`` to print both for this machine.
"""
from __future__ import annotations

import functools
import platform
import time

import torch


def _best_time(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gbs(device: str = "cpu", nbytes: int = 256 * 2**20) -> float:
    """Best-of-7 bandwidth of copying ``nbytes`` float32 into another buffer, counting read+write."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src))
    return 2 * nbytes / t / 1e9


@functools.lru_cache(maxsize=None)
def gemm_gflops(device: str = "cpu", n: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-7 rate of an (n x n) @ (n x n) matrix multiply, in GFLOP/s."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = _best_time(lambda: a @ b)
    return 2 * n**3 / t / 1e9


def machine_description() -> str:
    """One line naming the machine: CPU model, cores torch uses, torch version, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}{gpu}"


if __name__ == "__main__":
    print(machine_description())
    print(f"copy bandwidth: {copy_bandwidth_gbs():.1f} GB/s (read+write, 256 MiB float32)")
    print(f"GEMM fp32 1024^3: {gemm_gflops():.1f} GFLOP/s")
    print(f"GEMM bf16 1024^3: {gemm_gflops(dtype=torch.bfloat16):.1f} GFLOP/s")
