"""Does the 2D domain adapter help? The measured experiment behind docs/adapter.md.

Target domain: the embedded synthetic generator (h36m17, mocap convention, clean 2D): a *small*
training set (``--n-target`` poses of ``--target-subjects`` subjects), the synthetic val split
(4 other subjects) for validation and the synthetic test split (4 more) for the final P-MPJPE.
Source domain: :func:`fastlift.data.wild.synthetic_wild` (COCO-17, COCO hip convention, other
bodies, cameras and motions, detector noise and missing joints), ``--n-source`` poses.

1. ``extend_training_data``'s pipeline: smooth the source along its sequences (``--smooth``
   frames), train the adapter on (target train, smoothed source), adapt, keep complete poses
   (``--keep-incomplete`` keeps all). Measure, against a *broad* target-domain reference (the test
   split's 2D, never trained on), the distribution distance (MMD^2 with Gaussian kernels,
   held-out domain-classifier accuracy) of the converted, the adapted and the true (noise-free,
   target-convention) source poses, and the paired error of converted and adapted poses against
   the truth (with the wild bodies, and with bodies from the target's distribution).
2. Train the same lifter with the same step budget on: ``target`` (target only), ``converted``
   (target + source converted by convert_keypoints only), ``adapted`` (target + adapted source),
   optionally ``oracle`` (target + the true target-domain view of the source poses: a perfect
   adapter's upper bound) and ``converted_clean`` (the adapted pipeline without the adapter
   network: smoothed, converted, complete poses only). In every extended set the target poses are repeated to at least
   ``--target-fraction`` of it (0.5, as extend_training_data). Report P-MPJPE on the test split
   (last and best-on-val checkpoints) and the mean validation P-MPJPE over the second half of
   training (less noisy than one number).

Usage (one CPU thread per lifter run; ``--jobs`` runs in parallel)::

    python bench/adapter_experiment.py --out /tmp/adapter_exp --seeds 0 1 2 --jobs 2
    python bench/adapter_experiment.py --out /tmp/adapter_exp --adapter-only

Results: ``OUT/adapter_results.json``, ``OUT/results.json`` and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

CONDITIONS = ("target", "converted", "adapted", "oracle", "converted_clean")


def _lifter_config(args, data, out, seed):
    from fastlift.training import TrainConfig
    return TrainConfig(data=data, val=os.path.join(args.out, "data", "val.npz"),
                       test=os.path.join(args.out, "data", "test.npz"), out=out, seed=seed,
                       width=args.width, d_width=args.width, t_width=args.width // 2, batch_size=args.batch_size,
                       steps=args.steps, val_every=args.val_every, val_samples=2048, ckpt_every=0, ckpt_minutes=0.0,
                       threads=1, progress=False, tensorboard=False, max_minutes=0.0)


def run_one(args):
    """Child process: one lifter run (``--_run COND SEED``)."""
    import torch
    torch.set_num_threads(1)
    from fastlift.training.engine import Trainer
    cond, seed = args._run[0], int(args._run[1])
    out = os.path.join(args.out, "runs", f"{cond}_s{seed}")
    cfg = _lifter_config(args, os.path.join(args.out, "data", f"train_{cond}.npz"), out, seed)
    t = time.perf_counter()
    summary = Trainer(cfg, log=lambda *a, **k: None, install_signal_handlers=False).fit()
    vals = []
    with open(os.path.join(out, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            if row.get("val_p_mpjpe"):
                vals.append((int(row["step"]), float(row["val_p_mpjpe"])))
    late = [v for s, v in vals if s >= args.steps // 2]
    res = {"condition": cond, "seed": seed, "seconds": round(time.perf_counter() - t, 1),
           "train_poses": None, "test": summary["test"].get("test"), "test_best": summary["test"].get("test_best"),
           "val_curve": vals, "val_p_mpjpe_second_half_mean": float(np.mean(late)) if late else None}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)


def make_data(args, log=print):
    import torch
    torch.set_num_threads(1)
    from fastlift.data import synthetic
    from fastlift.data.normalize import normalize_2d_np
    from fastlift.data.wild import synthetic_wild
    from fastlift.training import adapter as A

    d = os.path.join(args.out, "data")
    os.makedirs(d, exist_ok=True)
    target = synthetic.generate(args.n_target, seed=args.data_seed, split="train", n_subjects=args.target_subjects)
    val = synthetic.generate(args.n_val, seed=args.data_seed, split="val")
    test = synthetic.generate(args.n_test, seed=args.data_seed, split="test")
    src, truth = synthetic_wild(args.n_source, seed=args.data_seed, return_truth=True)
    # the same poses with the bodies drawn from the target's distribution (before the wild rescaling)
    truth_tb = synthetic_wild(args.n_source, seed=args.data_seed, return_truth=True, truth_body="target")[1]
    for name, ps in (("target", target), ("val", val), ("test", test), ("wild", src), ("wild_truth", truth)):
        ps.save(os.path.join(d, f"{name}.npz"))
    log(f"data: target {len(target)} ({args.target_subjects} subjects), val {len(val)}, test {len(test)}, "
        f"wild source {len(src)} ({src.layout})")

    t = time.perf_counter()
    cfg = A.AdapterConfig(seed=args.seed0, steps=args.adapter_steps, threads=1)
    src_s = A.temporal_smooth(src, args.smooth)  # the extend_training_data pipeline: smooth, adapt
    adapter, rep = A.train_adapter(target, src_s, config=cfg, log=log)
    adapted = A.adapt_poses(adapter, src_s, imputed_confidence=cfg.imputed_confidence,
                            complete_only=not args.keep_incomplete)
    converted = A.convert_only(src)
    # the adapted pipeline without the adapter network: smoothed, converted, complete poses only
    converted_clean = A.convert_only(src_s)
    converted_clean = converted_clean.subset((converted_clean.confidence > 0).all(1))
    adapter_s = time.perf_counter() - t
    import torch as _t
    _t.save({"state_dict": adapter.state_dict(), "hparams": adapter.hparams}, os.path.join(d, "adapter.pt"))

    # distances against a broad target-domain reference (the test split's 2D: other subjects and
    # sequences, never trained on), and paired errors against the truth
    ref, _ = A.prepare_target(test)
    y, sd = A.adapt_arrays(adapter, src_s)
    sd_raw = A.prepare_source(src)
    assert np.array_equal(sd_raw.index, sd.index)
    sd_sm = sd
    tn, _ = normalize_2d_np(truth.keypoints_2d[sd.index])
    hs = A.mmd_bandwidths(ref.reshape(len(ref), -1) * 10)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(sd))[:4000]
    half = len(ref) // 2
    dist = {"target_vs_target": A.distribution_report(ref[:half], ref[half:], hs, 300),
            "target_train_vs_reference": A.distribution_report(ref, A.prepare_target(target)[0], hs, 300),
            "converted": A.distribution_report(ref, sd_raw.base[pick], hs, 300),
            "smoothed_converted": A.distribution_report(ref, sd_sm.base[pick], hs, 300),
            "adapted": A.distribution_report(ref, y[pick], hs, 300),
            "truth": A.distribution_report(ref, tn[pick], hs, 300)}
    present = sd.base_conf > 0
    paired = {}
    for tname, tr in (("wild_bodies", tn), ("target_bodies", normalize_2d_np(truth_tb.keypoints_2d[sd.index])[0])):
        e = {k: np.linalg.norm((v - tr) * 10, axis=-1)
             for k, v in (("converted", sd_raw.base), ("smoothed_converted", sd_sm.base), ("adapted", y))}
        paired[tname] = {f"{k}_present": float(v[present].mean()) for k, v in e.items()}
        paired[tname]["adapted_imputed"] = float(e["adapted"][~present].mean()) if (~present).any() else None
        npres = np.maximum(present.sum(0), 1)
        paired[tname]["per_joint_present"] = {k: np.round((v * present).sum(0) / npres, 4).tolist()
                                             for k, v in e.items()}
    rep_small = {k: v for k, v in rep.items() if k not in ("config",)}
    for name, extra in (("converted", converted), ("adapted", adapted), ("oracle", truth),
                        ("converted_clean", converted_clean)):
        A.concat_training_data(target, extra, args.target_fraction).save(os.path.join(d, f"train_{name}.npz"))
    A.concat_training_data(target, target.subset(slice(0, 0))).save(os.path.join(d, "train_target.npz"))
    out = {"adapter_seconds": round(adapter_s, 1), "adapter_report": rep_small, "distances_vs_test_split": dist,
           "paired_error_head_root_units": paired, "n_converted": len(converted), "n_adapted": len(adapted),
           "n_converted_clean": len(converted_clean)}
    log(json.dumps({k: out[k] for k in ("distances_vs_test_split", "paired_error_head_root_units")}, indent=1))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/fastlift_adapter_exp")
    p.add_argument("--n-target", type=int, default=5000)
    p.add_argument("--target-subjects", type=int, default=2)
    p.add_argument("--n-source", type=int, default=50000)
    p.add_argument("--n-val", type=int, default=5000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--seed0", type=int, default=0, help="adapter seed")
    p.add_argument("--adapter-steps", type=int, default=1000)
    p.add_argument("--keep-incomplete", action="store_true",
                   help="keep adapted poses with missing joints (default: complete poses only)")
    p.add_argument("--target-fraction", type=float, default=0.5,
                   help="repeat the target poses to at least this fraction of each extended set")
    p.add_argument("--smooth", type=float, default=1.5,
                   help="temporal smoothing of the source (frames) before adapting")
    p.add_argument("--steps", type=int, default=1500, help="lifter steps (same for every condition)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS[:3]), choices=CONDITIONS)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--adapter-only", action="store_true")
    p.add_argument("--reuse-data", action="store_true", help="keep OUT/data from an earlier call")
    p.add_argument("--skip-existing", action="store_true", help="do not repeat lifter runs that have a result.json")
    p.add_argument("--_run", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._run:
        return run_one(args)
    os.makedirs(args.out, exist_ok=True)
    prep_path = os.path.join(args.out, "adapter_results.json")
    if args.reuse_data and os.path.isfile(prep_path):
        with open(prep_path) as f:
            prep = json.load(f)
    else:
        prep = make_data(args)
        with open(prep_path, "w") as f:
            json.dump(prep, f, indent=1)
    if args.adapter_only:
        return 0
    jobs = [(c, s) for s in args.seeds for c in args.conditions
            if not (args.skip_existing and os.path.isfile(os.path.join(args.out, "runs", f"{c}_s{s}", "result.json")))]
    running: list = []
    base = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--width", str(args.width), "--val-every", str(args.val_every)]
    while jobs or running:
        while jobs and len(running) < args.jobs:
            c, s = jobs.pop(0)
            print(f"lifter run: {c} seed {s}", flush=True)
            running.append(subprocess.Popen(base + ["--_run", c, str(s)]))
        time.sleep(2)
        for r in list(running):
            if r.poll() is not None:
                running.remove(r)
                if r.returncode:
                    print(f"a lifter run failed ({r.args[-2:]}, status {r.returncode})", flush=True)
    rows = []
    for s in args.seeds:
        for c in args.conditions:
            path = os.path.join(args.out, "runs", f"{c}_s{s}", "result.json")
            if os.path.isfile(path):
                with open(path) as f:
                    rows.append(json.load(f))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "adapter": prep, "lifter": rows}, f, indent=1)
    print("\n| condition | seed | extra poses | test P-MPJPE last | test P-MPJPE best-val ckpt "
          "| val P-MPJPE 2nd-half mean | flat |")
    print("|---|---|---|---|---|---|---|")
    n_extra = {"target": 0, "converted": prep["n_converted"], "adapted": prep["n_adapted"], "oracle": args.n_source,
               "converted_clean": prep.get("n_converted_clean", -1)}
    for r in rows:
        tb = r["test_best"]["p_mpjpe"] if r.get("test_best") else float("nan")
        print(f"| {r['condition']} | {r['seed']} | {n_extra[r['condition']]} | {r['test']['p_mpjpe']:.1f} | {tb:.1f} | "
              f"{r['val_p_mpjpe_second_half_mean']:.1f} | {r['test']['p_mpjpe_flat']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
