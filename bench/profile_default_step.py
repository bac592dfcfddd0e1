"""Time (and optionally profile) one training step of the default recipe on the CPU.

    python bench/profile_default_step.py [--step 1000] [--set d_steps=1 --set d_width=384] [--profile]

The trainer is built on the embedded synthetic data with the default config (one thread), its
step counter set to ``--step`` (1000: the bone-length cue is on, so the partner frames are
lifted), and ``--iters`` unsupervised steps are timed after ``--warmup``. ``--set key=value``
overrides a config field (values parsed as JSON where they can be). ``--profile`` prints the
operators that took the most time over 10 more steps.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--step", type=int, default=1000, help="the trainer's step counter (schedules depend on it)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    from fastlift.training.config import resolve_config
    from fastlift.training.engine import Trainer
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    torch.set_num_threads(1)
    cfg = resolve_config(cli_values=dict(out=tempfile.mkdtemp(prefix="profile_step_"), progress=False,
                                         tensorboard=False, **overrides))
    tr = Trainer(cfg, log=lambda *a: None, install_signal_handlers=False)
    tr.step = args.step
    it = tr._iterate()
    for m in (tr.lifter, tr.disc, tr.tdisc):
        m.train()
    for _ in range(args.warmup):
        tr.unsupervised_step(next(it))
    t_load = 0.0
    t0 = time.perf_counter()
    for _ in range(args.iters):
        a = time.perf_counter()
        batch = next(it)
        t_load += time.perf_counter() - a
        tr.unsupervised_step(batch)
    dt = (time.perf_counter() - t0) / args.iters
    print(f"{overrides or 'default'}: step {dt * 1000:.1f} ms (of which loading {t_load / args.iters * 1000:.1f} ms), "
          f"batch {cfg.batch_size}, one thread")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(10):
                tr.unsupervised_step(next(it))
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
