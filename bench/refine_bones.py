"""P-MPJPE and N-MPJPE of trained lifters on the synthetic test split, as lifted and refined to
one skeleton per person (fastlift.evaluation.refine), and each unsupervised run's ratio to the
supervised reference.

    python bench/refine_bones.py runs/a runs/b ... --supervised runs/sup [runs/sup2 ...] [--json out.json]

Every number comes from ``fastlift.evaluation.report.evaluate_lifter`` (what ``python -m
fastlift.evaluate --refine-bones ...`` prints) on the embedded synthetic test split (20 000 poses,
seed 0; ``--noise-px``: with Gaussian noise on its 2D keypoints), once per grouping: ``subject``
(the default, ``auto``, on this data) and ``sequence``.
"""
from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="unsupervised run folders or checkpoints")
    ap.add_argument("--supervised", nargs="+", default=[], help="supervised run folders (the reference)")
    ap.add_argument("--noise-px", type=float, default=0.0,
                    help="Gaussian keypoint noise (pixels) on the test split's 2D (0: the clean split)")
    ap.add_argument("--softness", type=float, default=0.35, help="refine_bone_lengths' softness (0: every bone snapped)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from fastlift.data.synthetic import default_splits
    from fastlift.evaluation.inference import Lifter
    from fastlift.evaluation.report import evaluate_lifter
    test = default_splits(0, noise_px=args.noise_px)["test"]
    rows = {}
    for path in args.runs + args.supervised:
        lifter = Lifter.from_checkpoint(path, device="cpu")
        r = {}
        for how in ("subject", "sequence"):
            rep = evaluate_lifter(lifter, test, refine_bones=how, refine_softness=args.softness)
            r.update(p_mpjpe=rep.p_mpjpe, n_mpjpe=rep.n_mpjpe)
            r[f"p_{how}"], r[f"n_{how}"] = rep.extra["p_mpjpe_refined"], rep.extra["n_mpjpe_refined"]
        r["supervised"] = path in args.supervised
        rows[path] = r
    sup = [r for r in rows.values() if r["supervised"]]
    ref = {k: sum(r[k] for r in sup) / len(sup) for k in ("p_mpjpe", "p_subject", "p_sequence")} if sup else None
    print(f"{'run':42s} {'P raw':>7s} {'P subj':>7s} {'P seq':>7s} {'N raw':>7s} {'N subj':>7s} {'N seq':>7s}"
          + ("   ratio raw / subj / seq (to the mean supervised)" if ref else ""))
    for path, r in rows.items():
        line = (f"{path[-42:]:42s} {r['p_mpjpe']:7.2f} {r['p_subject']:7.2f} {r['p_sequence']:7.2f} "
                f"{r['n_mpjpe']:7.2f} {r['n_subject']:7.2f} {r['n_sequence']:7.2f}")
        if ref and not r["supervised"]:
            line += (f"   {r['p_mpjpe'] / ref['p_mpjpe']:.2f} / {r['p_subject'] / ref['p_subject']:.2f} / "
                     f"{r['p_sequence'] / ref['p_sequence']:.2f}")
        print(line + ("  (supervised)" if r["supervised"] else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "supervised_mean": ref}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
