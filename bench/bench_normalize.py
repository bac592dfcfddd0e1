"""Benchmark of the fused 2D normalisation, providers side by side.

    pytest bench/bench_normalize.py                    # pytest-benchmark table, small N
    python bench/bench_normalize.py [--n 1048576] [--device cpu|cuda]   # ratios and GB/s

Ratios are against the eager pure-torch reference and ``torch.compile`` of it, measured in the same
run; GB/s counts the bytes the op must move (read (N,J,2), write (N,J,2) and (N,)) against the
measured copy bandwidth of bench/roofline.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from roofline import copy_bandwidth_gbs, machine_description  # noqa: E402

from fastlift.ops import available_backends, normalize_2d, normalize_2d_reference  # noqa: E402


def _providers(device: str):
    status = available_backends()
    out = {"reference": lambda x: normalize_2d_reference(x)}
    compiled = torch.compile(normalize_2d_reference)
    out["compile"] = lambda x: compiled(x)
    if device == "cpu" and status["cpu"].available:
        out["cpu"] = lambda x: normalize_2d(x, backend="cpu")
    if device == "cuda":
        if status["cuda"].available:
            out["cuda"] = lambda x: normalize_2d(x, backend="cuda")
        if status["triton"].available:
            out["triton"] = lambda x: normalize_2d(x, backend="triton")
    return out


def _forward_backward(fn, x):
    x = x.detach().requires_grad_(True)
    y, s = fn(x)
    (y.sum() + s.sum()).backward()
    return x.grad


def _time(fn, repeats=20):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


PROVIDERS = ["reference", "compile", "cpu"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("n", [4096, 65536])
def test_normalize_2d_forward(benchmark, provider, n):
    providers = _providers("cpu")
    if provider not in providers:
        pytest.skip(f"{provider} not available")
    x = torch.randn(n, 17, 2) * 100
    benchmark.group = f"normalize_2d forward N={n}"
    benchmark(providers[provider], x)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_normalize_2d_forward_backward(benchmark, provider):
    providers = _providers("cpu")
    if provider not in providers:
        pytest.skip(f"{provider} not available")
    x = torch.randn(65536, 17, 2) * 100
    benchmark.group = "normalize_2d forward+backward N=65536"
    benchmark(_forward_backward, providers[provider], x)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1 << 20, help="number of poses")
    parser.add_argument("--joints", type=int, default=17)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    x = torch.randn(args.n, args.joints, 2, device=args.device) * 100
    bytes_fwd = x.numel() * 4 * 2 + args.n * 4
    bytes_fb = bytes_fwd + x.numel() * 4 * 3 + args.n * 4 * 2  # + read x, grad_y, write grad_x, grad_s, s
    roof = copy_bandwidth_gbs(args.device)
    print(machine_description())
    print(f"normalize_2d, N={args.n}, J={args.joints}, {args.device}; copy bandwidth {roof:.1f} GB/s")
    providers = _providers(args.device)
    times = {}
    for name, fn in providers.items():
        times[name] = (_time(lambda: fn(x)), _time(lambda: _forward_backward(fn, x), repeats=10))
    ref_f, ref_fb = times["reference"]
    cmp_f, cmp_fb = times["compile"]
    print(f"{'provider':10s} {'fwd ms':>8s} {'x ref':>6s} {'x compile':>9s} {'GB/s':>6s} {'%roof':>6s} | "
          f"{'fwd+bwd ms':>10s} {'x ref':>6s} {'x compile':>9s}")
    for name, (tf, tfb) in times.items():
        gbs = bytes_fwd / tf / 1e9
        print(f"{name:10s} {tf*1e3:8.2f} {ref_f/tf:6.1f} {cmp_f/tf:9.1f} {gbs:6.1f} {100*gbs/roof:5.0f}% | "
              f"{tfb*1e3:10.2f} {ref_fb/tfb:6.1f} {cmp_fb/tfb:9.1f}")


if __name__ == "__main__":
    main()
