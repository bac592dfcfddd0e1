"""Time-to-accuracy report: validation P-MPJPE against training time for the default recipe, the
paper's recipes, each ablation and the supervised mode, on the embedded synthetic splits.

    python bench/time_to_accuracy.py --out runs/tta --jobs 2                 # every condition, seed 0
    python bench/time_to_accuracy.py --out runs/tta --only default --seeds 0 1 2
    python bench/time_to_accuracy.py --out runs/tta --plot-only              # redraw from the runs

Each condition is one ``python -m fastlift.train`` run (one CPU thread, ``--max-minutes`` wall-clock
budget, its own run directory ``OUT/<condition>-s<seed>``); ``--jobs`` runs that many at once (on a
2-core machine use 2: each run is single-threaded, and both cores are then busy, so the times are
those of a loaded machine). Runs already finished in ``OUT`` are not repeated.

Outputs: ``OUT/time_to_accuracy.png`` (validation P-MPJPE, solid, and the P-MPJPE of the
depth-flipped prediction, dotted, against wall-clock seconds; the zero-depth "flat" lift as a grey
line) and ``OUT/results.md`` / ``OUT/results.json`` (test-split P-MPJPE of the last weights and of
the best-on-validation checkpoint, flat and flipped errors, steps, seconds).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

#: condition -> extra ``fastlift.train`` flags (on top of the default recipe)
CONDITIONS: dict[str, list[str]] = {
    "default": [],
    "supervised": ["--mode", "supervised"],            # the same wall-clock budget (many more steps)
    "supervised-same-steps": ["--mode", "supervised"],  # the default recipe's step count
    "no-discriminator": ["--use-discriminator", "false"],
    "no-l2d": ["--use-l2d", "false"],
    "no-l3d": ["--use-l3d", "false"],
    "no-temporal": ["--use-temporal", "false"],
    "no-guard": ["--collapse-guard", "false"],          # without the rollback of a collapse
    "no-bone-sequence": ["--w-bone-sequence", "0"],     # without the bone-length cue across a sequence
    # the cue's partners from the pose's own sequence, ramped over 500 steps (the default of 2026-12-07, night)
    "sequence-partners": ["--bone-sequence-group", "sequence", "--bone-sequence-ramp", "500"],
    # the rotated lifts re-normalised from any head-root distance (the default of 2026-12-07, late night)
    "no-renorm-floor": ["--renorm-floor", "0"],
    "paper": ["--preset", "paper"],
    "paper-literal": ["--preset", "paper-literal"],
}
COLORS = {"default": "C0", "supervised": "k", "supervised-same-steps": "0.35", "no-discriminator": "C3", "no-l2d": "C1", "no-l3d": "C4",
          "no-temporal": "C2", "no-guard": "C9", "no-bone-sequence": "C8", "sequence-partners": "C6", "no-renorm-floor": "C6", "paper": "C5", "paper-literal": "C7"}


def run_dir(out: str, cond: str, seed: int) -> str:
    return os.path.join(out, f"{cond}-s{seed}")


def run_one(out: str, cond: str, seed: int, minutes: float, extra: list[str]) -> dict:
    d = run_dir(out, cond, seed)
    if os.path.isfile(os.path.join(d, "summary.json")):
        return {"cond": cond, "seed": seed, "dir": d, "reused": True}
    cmd = [sys.executable, "-m", "fastlift.train", "--out", d, "--seed", str(seed), "--threads", "1",
           "--max-minutes", str(minutes), "--no-progress", *CONDITIONS[cond], *extra]
    if cond == "supervised":
        # same wall-clock budget: the supervised step is ~10x cheaper, so give it the steps to fill it
        cmd += ["--steps", "1000000"]
    os.makedirs(d, exist_ok=True)
    t = time.perf_counter()
    with open(os.path.join(d, "stdout.log"), "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    print(f"{cond} seed {seed}: rc {rc}, {time.perf_counter() - t:.0f} s -> {d}", flush=True)
    return {"cond": cond, "seed": seed, "dir": d, "rc": rc}


def read_curve(d: str) -> tuple[list[float], list[float], list[float], float]:
    """(seconds, val P-MPJPE, val flipped P-MPJPE, flat) from a run's metrics.csv."""
    t, p, f, flat = [], [], [], math.nan
    with open(os.path.join(d, "metrics.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("val_p_mpjpe"):
                t.append(float(row["time_s"]))
                p.append(float(row["val_p_mpjpe"]))
                f.append(float(row["val_p_mpjpe_flip"]))
                flat = float(row["val_p_mpjpe_flat"])
    return t, p, f, flat


def summarize(out: str, conds: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    for cond in conds:
        for seed in seeds:
            d = run_dir(out, cond, seed)
            path = os.path.join(d, "summary.json")
            if not os.path.isfile(path):
                continue
            with open(path) as fh:
                s = json.load(fh)
            test = s.get("test", {}).get("test", {})
            best = s.get("test", {}).get("test_best", {})
            rows.append({"condition": cond, "seed": seed, "steps": s["steps"], "seconds": s["train_seconds"],
                         "test_p_mpjpe": test.get("p_mpjpe"), "test_p_mpjpe_best": best.get("p_mpjpe"),
                         "test_flip": test.get("p_mpjpe_flip"), "test_flat": test.get("p_mpjpe_flat"),
                         "val_best": s.get("best", {}).get("value"), "dir": d})
    return rows


def plot(out: str, conds: list[str], seeds: list[int]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    fig, ax = plt.subplots(figsize=(9, 5.2))
    flat = math.nan
    for cond in conds:
        for k, seed in enumerate(seeds):
            d = run_dir(out, cond, seed)
            if not os.path.isfile(os.path.join(d, "metrics.csv")):
                continue
            t, p, f, fl = read_curve(d)
            flat = fl if math.isnan(flat) else flat
            label = cond if k == 0 else None
            c = COLORS.get(cond)
            ax.plot([x / 60 for x in t], p, "-o", ms=2.5, lw=1.4, color=c, label=label, alpha=1.0 if k == 0 else 0.6)
            if not cond.startswith("supervised"):
                ax.plot([x / 60 for x in t], f, ":", lw=1.0, color=c, alpha=0.5)
    if not math.isnan(flat):
        ax.axhline(flat, color="0.5", lw=1, ls="--", label=f"flat lift ({flat:.0f} mm)")
    ax.set_xlabel("training time (minutes, one CPU thread)")
    ax.set_ylabel("validation P-MPJPE (mm)")
    ax.set_ylim(0, max(200.0, flat * 1.6 if not math.isnan(flat) else 200.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("time to accuracy on the synthetic splits (solid: P-MPJPE; dotted: depth-flipped prediction)",
                 fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "time_to_accuracy.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory of the runs and the report")
    p.add_argument("--only", nargs="+", choices=list(CONDITIONS), help="conditions to run (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--minutes", type=float, default=9.3, help="wall-clock budget per run (--max-minutes; the "
                   "default's 9.3; the tables before 2026-12-08 used 8.5)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (each one CPU thread)")
    p.add_argument("--plot-only", action="store_true", help="only read the runs in --out and draw the report")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags passed to every run")
    a = p.parse_args(argv)
    conds = a.only or list(CONDITIONS)
    extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
    os.makedirs(a.out, exist_ok=True)
    if not a.plot_only:
        jobs = [(c, s) for s in a.seeds for c in conds]
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            list(pool.map(lambda cs: run_one(a.out, cs[0], cs[1], a.minutes, extra), jobs))
    rows = summarize(a.out, conds, a.seeds)
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    lines = ["| condition | seed | steps | seconds | test P-MPJPE (last) | test P-MPJPE (best-val ckpt) | flipped | flat |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['condition']} | {r['seed']} | {r['steps']} | {r['seconds']:.0f} | {fmt(r['test_p_mpjpe'])} | "
                     f"{fmt(r['test_p_mpjpe_best'])} | {fmt(r['test_flip'])} | {fmt(r['test_flat'])} |")
    with open(os.path.join(a.out, "results.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    png = plot(a.out, conds, a.seeds)
    if png:
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
