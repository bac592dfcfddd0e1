"""Benchmark of the fused rotate-and-project with its loss (the cycle's steps 5 and 6), providers
side by side.

    pytest bench/bench_rotate_project.py                  # pytest-benchmark table, small N (< 1 min)
    python bench/bench_rotate_project.py [--n 65536] [--device cpu|cuda] [--sweep] [--threads T]

The timed step is one forward and backward of

    x_back, _ = rotate_project(Y_relift, R, transpose=True)          # rotate back, project
    loss_2d, loss_3d = cycle_consistency_loss(x, x_back, Y_rot, Y_relift)
    (loss_2d + loss_3d).backward()                                   # gradients to Y_relift and R

Providers: ``reference`` (the pure-torch ops, eager), ``compile`` (``torch.compile`` of that same
reference function), ``cpu`` (``weighted_cycle_reprojection_loss(..., 1, 1)``: the loss and its
gradient in one pass over the data, the backward hands the stored gradient over),
``cpu-2pass`` (``cycle_reprojection_loss``: x_back never stored, one pass forward and one
backward), ``cpu-2op`` (the two C++ ops ``rotate_project`` + ``cycle_consistency_loss``), and on
a GPU the same three for ``cuda`` and ``triton`` (there ``cuda``/``triton`` run the two passes
inside the weighted op). Ratios are measured in the same run. Effective GB/s counts the bytes the
step must move at least (read x, Y_relift, R, Y_rot once; write dL/dY_relift and dL/dR once)
against the copy bandwidth of bench/roofline.py.
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

from fastlift.ops import available_backends, cycle_consistency_loss, cycle_consistency_loss_reference, \
    cycle_reprojection_loss, lift_to_3d, rotate_project, rotate_project_reference, sample_rotations, \
    weighted_cycle_reprojection_loss  # noqa: E402

J = 17


def make_inputs(n: int, device: str = "cpu", seed: int = 0):
    """(x, Y_relift, R, Y_rot) as one cycle step makes them, on ``device``: normalised 2D poses
    (head-root ~ 1/c), lifted with depth offsets d ~ N(0, 1) (depth ~ c + 1), Haar rotations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, J, 2, generator=g) * 0.1
    Y_relift = lift_to_3d(torch.randn(n, J, 2, generator=g) * 0.1, torch.randn(n, J, generator=g))
    Y_rot = lift_to_3d(x, torch.randn(n, J, generator=g))
    Y_rot = Y_rot - Y_rot[:, :1]
    R = sample_rotations(n, seed=seed, distribution="haar")
    return tuple(t.to(device) for t in (x, Y_relift, R, Y_rot))


def step_bytes(n: int, j: int = J, itemsize: int = 4) -> int:
    """Bytes one forward+backward must move at least: inputs read once, dL/dY_relift and dL/dR written
    once (what the one-pass op moves; a forward and a backward pass read the inputs twice)."""
    inputs = n * (j * 2 + j * 3 + 9 + j * 3)
    grads = n * (j * 3 + 9)
    return itemsize * (inputs + grads)


def _reference_loss(x, Y_relift, R, Y_rot):
    x_back, _ = rotate_project_reference(Y_relift, R, transpose=True)
    l2, l3 = cycle_consistency_loss_reference(x, x_back, Y_rot, Y_relift)
    return l2 + l3


def _two_op_loss(backend):
    def f(x, Y_relift, R, Y_rot):
        x_back, _ = rotate_project(Y_relift, R, transpose=True, backend=backend)
        l2, l3 = cycle_consistency_loss(x, x_back, Y_rot, Y_relift, backend=backend)
        return l2 + l3
    return f


def _fused_loss(backend):
    def f(x, Y_relift, R, Y_rot):
        loss, _, _ = weighted_cycle_reprojection_loss(x, Y_relift, R, Y_rot, 1.0, 1.0, backend=backend)
        return loss
    return f


def _two_pass_loss(backend):
    def f(x, Y_relift, R, Y_rot):
        l2, l3 = cycle_reprojection_loss(x, Y_relift, R, Y_rot, backend=backend)
        return l2 + l3
    return f


def providers(device: str) -> dict:
    """name -> loss function (x, Y_relift, R, Y_rot) -> scalar, for what this install can run."""
    status = available_backends()
    out = {"reference": _reference_loss, "compile": torch.compile(_reference_loss)}
    kernel = ["cpu"] if device == "cpu" else ["cuda", "triton"]
    for b in kernel:
        if status[b].available and (b != "triton" or device == "cuda" or os.environ.get("FASTLIFT_BENCH_TRITON")):
            out[b] = _fused_loss(b)
            out[f"{b}-2pass"] = _two_pass_loss(b)
            out[f"{b}-2op"] = _two_op_loss(b)
    return out


def forward_backward(fn, x, Y_relift, R, Y_rot):
    Yl = Y_relift.detach().requires_grad_(True)
    Rg = R.detach().requires_grad_(True)
    loss = fn(x, Yl, Rg, Y_rot)
    loss.backward()
    return Yl.grad, Rg.grad


def best_time(fn, repeats: int = 10, warmup: int = 3, budget_s: float = 20.0) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


# ------------------------------------------------------------------------------------------------
# pytest-benchmark suites (small N; ``pytest bench/bench_rotate_project.py``)

PROVIDERS = ["reference", "compile", "cpu", "cpu-2pass", "cpu-2op", "cuda", "cuda-2pass", "cuda-2op", "triton",
             "triton-2pass", "triton-2op"]
BENCH_DEVICE = os.environ.get("FASTLIFT_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def provider_table():
    return providers(BENCH_DEVICE)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("n", [4096])
def test_rotate_project_loss_forward_backward(benchmark, provider_table, provider, n):
    if provider not in provider_table:
        pytest.skip(f"{provider} not available on {BENCH_DEVICE}")
    inputs = make_inputs(n, BENCH_DEVICE)
    fn = provider_table[provider]
    forward_backward(fn, *inputs)  # compile / warm up outside the timing
    benchmark.group = f"rotate_project + loss, forward+backward, N={n}, {BENCH_DEVICE}"
    rounds = 5 if provider in ("reference", "compile") else 30
    benchmark.pedantic(forward_backward, args=(fn, *inputs), rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("provider", ["reference", "cpu", "cuda", "triton"])
def test_rotate_project_alone_forward_backward(benchmark, provider):
    status = available_backends()
    if provider != "reference" and (not status[provider].available or (provider == "triton" and BENCH_DEVICE != "cuda")):
        pytest.skip(f"{provider} not available on {BENCH_DEVICE}")
    if provider == "cpu" and BENCH_DEVICE != "cpu" or provider == "cuda" and BENCH_DEVICE != "cuda":
        pytest.skip(f"{provider} does not run on {BENCH_DEVICE}")
    x, Y, R, _ = make_inputs(4096, BENCH_DEVICE)

    def run():
        Yg = Y.detach().requires_grad_(True)
        x2d, yrot = rotate_project(Yg, R, renormalize=True, backend=provider)
        (x2d.sum() + yrot.sum()).backward()

    run()
    benchmark.group = f"rotate_project (renormalize) alone, forward+backward, N=4096, {BENCH_DEVICE}"
    benchmark.pedantic(run, rounds=5 if provider == "reference" else 30, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------------------------------------
# __main__: the ratio table and the N sweep


def interleaved_best(fns: dict, rounds: int = 15, warmup: int = 2, budget_s: float = 60.0) -> dict:
    """Best time of each callable, timed round-robin (one call each per round) so that every provider
    sees the same machine conditions: on a shared machine this keeps the ratios fair."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    best = {k: float("inf") for k in fns}
    start = time.perf_counter()
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            best[k] = min(best[k], time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


def ratio_table(n: int, device: str, rounds: int = 15) -> None:
    roof = copy_bandwidth_gbs(device)
    nbytes = step_bytes(n)
    print(f"rotate_project + cycle loss, forward+backward, N={n}, J={J}, {device}, "
          f"{torch.get_num_threads()} threads; copy bandwidth {roof:.1f} GB/s; step moves >= {nbytes / 1e6:.1f} MB")
    inputs = make_inputs(n, device)
    fns = {name: (lambda fn=fn: forward_backward(fn, *inputs)) for name, fn in providers(device).items()}
    times = interleaved_best(fns, rounds=rounds)
    ref, cmp = times["reference"], times["compile"]
    print(f"{'provider':11s} {'ms':>9s} {'x ref':>7s} {'x compile':>9s} {'eff GB/s':>9s} {'% copy':>7s}")
    for name, t in times.items():
        gbs = nbytes / t / 1e9
        print(f"{name:11s} {t * 1e3:9.3f} {ref / t:7.1f} {cmp / t:9.1f} {gbs:9.1f} {100 * gbs / roof:6.0f}%")


def sweep(device: str, max_n: int, providers_to_sweep=("cpu",)) -> None:
    table = providers(device)
    names = [p for p in providers_to_sweep if p in table]
    roof = copy_bandwidth_gbs(device)
    print(f"\nN sweep ({device}): best time of forward+backward; ns/pose; effective GB/s (copy {roof:.1f})")
    print(f"{'N':>9s} " + " ".join(f"{nm + ' ms':>12s} {'ns/pose':>8s} {'GB/s':>6s}" for nm in names))
    n = 1
    while n <= max_n:
        inputs = make_inputs(n, device)
        row = [f"{n:9d}"]
        for nm in names:
            if nm in ("reference", "compile") and n > (1 << 16):
                row.append(f"{'-':>12s} {'-':>8s} {'-':>6s}")
                continue
            t = best_time(lambda: forward_backward(table[nm], *inputs), repeats=7 if n >= (1 << 18) else 15)
            row.append(f"{t * 1e3:12.3f} {t / n * 1e9:8.1f} {step_bytes(n) / t / 1e9:6.1f}")
        print(" ".join(row))
        n *= 4


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65536, help="poses for the ratio table (default 65536)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sweep", action="store_true", help="also run the N sweep, 1 to --max-n")
    parser.add_argument("--sweep-providers", default=None,
                        help="comma-separated providers for the sweep (default: the fused kernel path)")
    parser.add_argument("--max-n", type=int, default=1 << 20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (best of)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_description())
    ratio_table(args.n, args.device, args.rounds)
    if args.sweep:
        kernel = "cpu" if args.device == "cpu" else "cuda"
        names = args.sweep_providers.split(",") if args.sweep_providers else (kernel,)
        sweep(args.device, args.max_n, tuple(names))


if __name__ == "__main__":
    main()
