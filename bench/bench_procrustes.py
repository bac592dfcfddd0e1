"""Benchmark of the fused batched similarity Procrustes alignment, providers side by side.

    pytest bench/bench_procrustes.py                     # pytest-benchmark table, small N (< 1 min)
    python bench/bench_procrustes.py [--n 65536] [--joints 17] [--device cpu|cuda] [--repeats 20]

Providers: ``reference`` (batched ``torch.linalg.svd``, autograd through it), ``roma``
(``roma.rigid_points_registration`` with scaling, plus applying its transform; roma's closed-form
Horn solver in float64), and the fused op's backends available on the device (``cpu``; ``cuda``
and ``triton`` on a GPU). Ratios are against ``reference`` and ``roma`` measured in the same run;
GB/s counts the bytes the fused op must move (forward: read pred and target, write aligned, R, s,
t; forward+backward adds the saved SVD factors and the backward's reads and writes) against the
measured copy bandwidth of bench/roofline.py. All float32.
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

from fastlift.ops import available_backends, procrustes_align, procrustes_align_reference  # noqa: E402

try:
    import roma
except ImportError:  # pragma: no cover
    roma = None


def make_poses(n: int, joints: int = 17, device: str = "cpu", seed: int = 0):
    """(pred, target) float32 (n, joints, 3), mm: a target, and a noisy similarity copy of it."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, joints, 3, generator=g) * 250 + torch.tensor([0.0, 0.0, 4500.0])
    q = torch.randn(n, 4, generator=g)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    R = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(n, 3, 3)
    pred = 0.01 * (target - target.mean(1, keepdim=True)) @ R + torch.randn(n, joints, 3, generator=g)
    return pred.to(device), target.to(device)


def _roma_align(pred, target):
    R, t, s = roma.rigid_points_registration(pred, target, compute_scaling=True)
    return s[:, None, None] * pred @ R.transpose(-1, -2) + t[:, None, :], R, s, t


def providers(device: str) -> dict:
    status = available_backends()
    out = {"reference": lambda p, q: procrustes_align_reference(p, q)}
    if roma is not None:
        out["roma"] = _roma_align
    kernels = ("cpu",) if device == "cpu" else ("cuda", "triton")
    for name in kernels:
        if status[name].available:
            out[name] = lambda p, q, name=name: procrustes_align(p, q, backend=name)
    return out


def _forward_backward(fn, pred, target):
    p = pred.detach().requires_grad_(True)
    out = fn(p, target)
    out[0].sum().backward()
    return p.grad


def _time(fn, repeats: int = 10, warmup: int = 2) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def bytes_moved(n: int, joints: int, fwd_bwd: bool = False, itemsize: int = 4) -> int:
    """Bytes the fused op reads and writes (the memory-traffic floor of a fused kernel)."""
    pose = n * joints * 3
    fwd = (2 * pose + pose + n * (9 + 1 + 3)) * itemsize
    if not fwd_bwd:
        return fwd
    aux = n * (9 + 3) * itemsize                                    # saved V, sig
    bwd = (3 * pose + n * (9 + 1 + 9 + 3 + 9 + 1 + 3) + 2 * pose) * itemsize  # read gy, p, q, R, s, V, sig, gR, gs, gt; write gp, gq
    return fwd + aux + bwd


# (provider, device): the CPU group always, the CUDA group when a GPU is present.
CASES = [("reference", "cpu"), ("roma", "cpu"), ("cpu", "cpu"),
         ("reference", "cuda"), ("roma", "cuda"), ("cuda", "cuda"), ("triton", "cuda")]
_IDS = [f"{p}-{d}" for p, d in CASES]


def _case(provider, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU")
    fns = providers(device)
    if provider not in fns:
        pytest.skip(f"{provider} not available on {device}")
    return fns[provider]


@pytest.mark.parametrize("provider,device", CASES, ids=_IDS)
def test_procrustes_forward(benchmark, provider, device):
    fn = _case(provider, device)
    pred, target = make_poses(4096, device=device)
    benchmark.group = f"procrustes_align forward N=4096 J=17 float32 {device}"
    benchmark(fn, pred, target)


@pytest.mark.parametrize("provider,device", CASES, ids=_IDS)
def test_procrustes_forward_backward(benchmark, provider, device):
    fn = _case(provider, device)
    pred, target = make_poses(4096, device=device)
    benchmark.group = f"procrustes_align forward+backward N=4096 J=17 float32 {device}"
    benchmark(_forward_backward, fn, pred, target)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65536, help="number of poses")
    parser.add_argument("--joints", type=int, default=17)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of each fused provider")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (slow providers: one call each)")
    args = parser.parse_args()
    pred, target = make_poses(args.n, args.joints, args.device)
    roof = copy_bandwidth_gbs(args.device)
    print(machine_description())
    print(f"procrustes_align, N={args.n}, J={args.joints}, float32, {args.device}; "
          f"copy bandwidth {roof:.1f} GB/s (bench/roofline.py)")
    fns = providers(args.device)
    # Rounds interleave the providers (best time of each kept), so that a machine whose load
    # changes during the run biases no provider; the slow ones run once per round.
    times = {name: [float("inf"), float("inf")] for name in fns}
    for fn in fns.values():  # warm-up
        fn(pred, target)
        _forward_backward(fn, pred, target)
    for _ in range(args.rounds):
        for name, fn in fns.items():
            reps = 1 if name in ("reference", "roma") else max(1, args.repeats // args.rounds)
            times[name][0] = min(times[name][0], _time(lambda: fn(pred, target), reps, warmup=0))
            times[name][1] = min(times[name][1], _time(lambda: _forward_backward(fn, pred, target), reps, warmup=0))
    ref_f, ref_fb = times["reference"]
    roma_f, roma_fb = times.get("roma", (float("nan"), float("nan")))
    b_f, b_fb = bytes_moved(args.n, args.joints), bytes_moved(args.n, args.joints, fwd_bwd=True)
    print(f"{'provider':10s} {'fwd ms':>8s} {'Mposes/s':>9s} {'x ref':>7s} {'x roma':>7s} {'GB/s':>6s} {'%roof':>6s} | "
          f"{'fwd+bwd ms':>10s} {'Mposes/s':>9s} {'x ref':>7s} {'x roma':>7s} {'GB/s':>6s}")
    for name, (tf, tfb) in times.items():
        fused = name not in ("reference", "roma")
        gbs = b_f / tf / 1e9
        gbs_fb = b_fb / tfb / 1e9
        print(f"{name:10s} {tf * 1e3:8.2f} {args.n / tf / 1e6:9.2f} {ref_f / tf:7.1f} {roma_f / tf:7.1f} "
              f"{(f'{gbs:6.1f}' if fused else '     -')} {(f'{100 * gbs / roof:5.0f}%' if fused else '     -')} | "
              f"{tfb * 1e3:10.2f} {args.n / tfb / 1e6:9.2f} {ref_fb / tfb:7.1f} {roma_fb / tfb:7.1f} "
              f"{(f'{gbs_fb:6.1f}' if fused else '     -')}")
    print(f"bytes per pose: forward {b_f / args.n:.0f}, forward+backward {b_fb / args.n:.0f}")


if __name__ == "__main__":
    main()
