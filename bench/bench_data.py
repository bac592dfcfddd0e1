"""Benchmark of the data layer: open a large pose file and iterate one epoch of batches.

    python bench/bench_data.py --n 10000000                 # builds /tmp/fastlift_bench_10000000.npz once
    python bench/bench_data.py --n 10000000 --temporal 1    # with frame pairs for the temporal D

The file is built from ``--unique`` synthetic poses (procedural motion) tiled to ``--n`` poses with
fresh sequence ids, written through memory-mapped temporaries so building needs little memory.
The measurement runs in a fresh child process so that its peak memory is its own:

* load: ``PoseSet.load`` (memory maps every array; includes the chunked NaN scan of the keypoints),
* loader: ``PoseLoader`` construction (copy of the batch arrays to RAM when they fit, temporal
  pairs index, root/head check); ``--mode mmap`` keeps reading batches from the memory map,
  ``--mode read`` reads the file into memory at load,
* epoch: one full epoch of batches on the CPU (torch threads: ``--threads``),
* peak RSS (``ru_maxrss``, includes the file pages the memory maps touched, which the kernel can
  drop at any time) and peak anonymous memory (RssAnon sampled every 100 batches: what the process
  really holds).

``pytest bench/bench_data.py`` runs a small-N version with pytest-benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _rss_anon_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def build_file(path: str, n: int, unique: int, seed: int = 0) -> dict:
    """Write an n-pose synthetic pose file (with 3D) by tiling ``unique`` generated poses."""
    from fastlift.data import PoseSet
    from fastlift.data.synthetic import generate

    t0 = time.perf_counter()
    unique = min(unique, n)
    base = generate(unique, seed=seed, seq_len=250)
    t_gen = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="fastlift_bench_", dir=os.path.dirname(os.path.abspath(path)))
    try:
        fields = {}
        for name in ("keypoints_2d", "keypoints_3d", "confidence", "sequence", "frame", "subject", "action", "camera"):
            a = getattr(base, name)
            fields[name] = np.lib.format.open_memmap(os.path.join(tmp, name + ".npy"), mode="w+", dtype=a.dtype,
                                                     shape=(n,) + a.shape[1:])
        seq_span = int(base.sequence.max() - base.sequence.min()) + 1
        for rep, s in enumerate(range(0, n, unique)):
            e = min(n, s + unique)
            for name, mm in fields.items():
                src = getattr(base, name)[: e - s]
                mm[s:e] = src + rep * seq_span if name == "sequence" else src
        for mm in fields.values():
            mm.flush()
        big = PoseSet(layout="h36m17", source=path, **fields)
        big.save(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"generate_s": t_gen, "build_s": time.perf_counter() - t0, "file_gb": os.path.getsize(path) / 1e9}


def measure(path: str, batch_size: int, temporal: int | None, threads: int, normalization: str,
            with_3d: bool = True, mode: str = "auto", max_batches: int | None = None) -> dict:
    """Open ``path`` and iterate one epoch; returns timings and memory (run in a fresh process)."""
    import torch
    torch.set_num_threads(threads)
    from fastlift.data import PoseLoader, PoseSet

    out = {"anon_start_mb": _rss_anon_mb()}
    t0, c0 = time.perf_counter(), time.process_time()
    poses = PoseSet.load(path, mmap=mode != "read", with_3d=with_3d)
    out["load_s"], out["load_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    out["n"] = len(poses)
    t0, c0 = time.perf_counter(), time.process_time()
    loader = PoseLoader(poses, batch_size=batch_size, shuffle=True, seed=0, temporal_offset=temporal,
                        normalization=normalization, with_3d=with_3d,
                        in_memory=False if mode == "mmap" else None)
    out["copied_to_memory"] = loader.copied_to_memory
    out["loader_init_s"], out["loader_init_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    # warm the fused op (its first call imports torch's custom-op machinery) outside the timing
    loader.make_batch(np.arange(min(8, len(poses))))
    peak_anon = _rss_anon_mb()
    t0 = time.perf_counter()
    c0 = time.process_time()
    seen = 0
    done = 0
    for i, batch in enumerate(loader):
        seen += batch["keypoints_2d"].shape[0]
        done += 1
        if i % 100 == 0:
            peak_anon = max(peak_anon, _rss_anon_mb())
        if max_batches is not None and done >= max_batches:
            break
    frac = done / len(loader)   # < 1 with --max-batches: the epoch figures are extrapolated
    out["epoch_fraction"] = frac
    out["epoch_s"] = (time.perf_counter() - t0) / frac
    out["epoch_cpu_s"] = (time.process_time() - c0) / frac
    seen = int(round(seen / frac))
    out["poses_per_s"] = seen / out["epoch_s"]
    out["batches"] = len(loader)
    out["poses_seen"] = seen
    out["peak_anon_mb"] = max(peak_anon, _rss_anon_mb())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000, help="poses in the file (default 10M)")
    ap.add_argument("--path", help="pose file (default /tmp/fastlift_bench_<n>.npz; built if missing)")
    ap.add_argument("--unique", type=int, default=1_000_000, help="distinct synthetic poses tiled into the file")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the file even if it exists")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--temporal", type=int, default=None, help="temporal offset k (frame pairs)")
    ap.add_argument("--normalization", default="per_sample", choices=["per_sample", "fixed"])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the measuring process")
    ap.add_argument("--no-3d", dest="with_3d", action="store_false",
                    help="batches without keypoints_3d (what an unsupervised run reads); not loaded at all")
    ap.add_argument("--mode", default="auto", choices=["auto", "mmap", "read"],
                    help="auto: memory-map the file, the loader copies the batch arrays to RAM if they fit "
                         "(default); mmap: batches read from the memory map (in_memory=False); read: "
                         "PoseSet.load(mmap=False)")
    ap.add_argument("--keep", action="store_true", help="keep the built file (default: keep only if --path given)")
    ap.add_argument("--max-batches", dest="max_batches", type=int,
                    help="time only this many batches and extrapolate the epoch (for the slow --mode mmap)")
    ap.add_argument("--json", action="store_true", help="print the raw result as JSON")
    ap.add_argument("--_measure", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    path = args.path or os.path.join(tempfile.gettempdir(), f"fastlift_bench_{args.n}.npz")

    if args._measure:
        print(json.dumps(measure(path, args.batch_size, args.temporal, args.threads, args.normalization,
                                 args.with_3d, args.mode, args.max_batches)))
        return 0

    built = None
    if args.rebuild or not os.path.exists(path):
        built = build_file(path, args.n, args.unique)
        print(f"built {path}: {args.n} poses, {built['file_gb']:.2f} GB, in {built['build_s']:.1f} s "
              f"({args.unique} unique poses generated in {built['generate_s']:.1f} s)")
    cmd = [sys.executable, os.path.abspath(__file__), "--_measure", "--path", path, "--batch-size",
           str(args.batch_size), "--threads", str(args.threads), "--normalization", args.normalization]
    if args.temporal:
        cmd += ["--temporal", str(args.temporal)]
    if not args.with_3d:
        cmd += ["--no-3d"]
    cmd += ["--mode", args.mode]
    if args.max_batches:
        cmd += ["--max-batches", str(args.max_batches)]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        return res.returncode
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(r))
    print(f"wall times; CPU times are this process's own (the machine may be shared)")
    print(f"poses {r['n']:,}  batch {args.batch_size}  temporal {args.temporal}  3D {args.with_3d}  "
          f"mode {args.mode}{' (copied to RAM)' if r['copied_to_memory'] else ''}  "
          f"threads {args.threads}  load average {os.getloadavg()[0]:.1f}")
    print(f"  load (+ NaN scan)       {r['load_s']:.2f} s  (CPU time {r['load_cpu_s']:.2f} s)")
    print(f"  PoseLoader init         {r['loader_init_s']:.2f} s  (CPU time {r['loader_init_cpu_s']:.2f} s)"
          f"{'  includes the copy to RAM' if r['copied_to_memory'] else ''}")
    extra = f"  (extrapolated from {args.max_batches} batches)" if r["epoch_fraction"] < 1 else ""
    print(f"  one epoch               {r['epoch_s']:.2f} s  ({r['batches']} batches, {r['poses_per_s'] / 1e3:,.0f} k poses/s; "
          f"CPU time {r['epoch_cpu_s']:.2f} s){extra}")
    print(f"  peak anonymous memory   {r['peak_anon_mb']:.0f} MB  (at start, after imports: {r['anon_start_mb']:.0f} MB)")
    print(f"  peak RSS incl. mmap     {r['peak_rss_mb']:.0f} MB")
    if built is not None and not (args.keep or args.path):
        os.unlink(path)
    return 0


# ------------------------------------------------------------------ pytest-benchmark (small N)
def test_bench_loader_epoch_small(benchmark, tmp_path):
    """One epoch over 20k memory-mapped poses with temporal pairs (pytest bench/bench_data.py)."""
    from fastlift.data import PoseLoader, PoseSet
    from fastlift.data.synthetic import generate

    path = str(tmp_path / "small.npz")
    generate(20_000, seed=0, seq_len=100).save(path)
    poses = PoseSet.load(path)
    loader = PoseLoader(poses, batch_size=512, seed=0, temporal_offset=1)
    loader.make_batch(np.arange(8))

    def epoch():
        return sum(b["keypoints_2d"].shape[0] for b in loader)

    seen = benchmark(epoch)
    assert seen == loader.num_eligible == 20_000 - 200


if __name__ == "__main__":
    sys.exit(main())
