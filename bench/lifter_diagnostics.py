"""Where a lifter's error is: per-checkpoint diagnostics on the embedded synthetic test split.

    python bench/lifter_diagnostics.py runs/a runs/b runs/c [--supervised runs/sup] [--stride 2]

For each checkpoint (a run folder or a ``.pt``), on every ``stride``-th test pose:
- ``p_mpjpe``: P-MPJPE in mm (the runs' own test number when stride is 1);
- ``knee_bent_forward``: the fraction of legs whose knee bends the wrong way, i.e. the hinge
  axis ``thigh x shin`` points against the hip axis (right hip -> left hip): a human knee does not
  hyperextend, so the ground truth gives ~0;
- ``depth_rmse``: per joint, the RMS error of the depth offset from the root in units of the
  pose's mean image-plane radius (scale-free, the depth that the lifter predicts).
Then the P-MPJPE of the mean of the unsupervised checkpoints' lifts (a prediction average: what
part of the error differs between independently trained lifters, and what part they share) and of
every pair of them.
"""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import torch

from fastlift.data.layouts import get_layout
from fastlift.data.synthetic import default_splits
from fastlift.evaluation.inference import Lifter
from fastlift.evaluation.metrics import p_mpjpe
from fastlift.training.inputs import normalized_2d

LEGS = (("r_hip", "r_knee", "r_ankle"), ("l_hip", "l_knee", "l_ankle"))


def knee_bent_forward(Y: torch.Tensor, names: list[str]) -> float:
    """Fraction of the legs of ``Y`` (N, J, 3), right-handed frame, whose knee bends forward."""
    ix = {n: i for i, n in enumerate(names)}
    axis = Y[:, ix["l_hip"]] - Y[:, ix["r_hip"]]
    bad = []
    for hip, knee, ankle in LEGS:
        thigh, shin = Y[:, ix[knee]] - Y[:, ix[hip]], Y[:, ix[ankle]] - Y[:, ix[knee]]
        bad.append((torch.cross(thigh, shin, dim=-1) * axis).sum(-1) < 0)
    return float(torch.stack(bad).float().mean())


def depth_offsets(Y: torch.Tensor) -> torch.Tensor:
    """(N, J) depth offsets from the root over the pose's mean image-plane radius."""
    r = Y.double() - Y[:, :1].double()
    return r[..., 2] / r[..., :2].norm(dim=-1).mean(1, keepdim=True).clamp_min(1e-9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="unsupervised run folders or .pt files")
    ap.add_argument("--supervised", default=None, help="a supervised run, reported beside (not averaged)")
    ap.add_argument("--stride", type=int, default=2, help="use every K-th test pose")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    test = default_splits(0)["test"]
    names = list(get_layout("h36m17").joint_names)
    idx = np.arange(0, len(test), args.stride)
    x, conf, _ = normalized_2d(test, 0, 10, 10.0, idx)
    gt = torch.as_tensor(np.asarray(test.keypoints_3d)[idx]).float()
    gt_depth = depth_offsets(gt)
    out = {"poses": int(len(idx)), "ground_truth": {"knee_bent_forward": knee_bent_forward(gt, names)}, "lifters": {}}
    lifts = {}
    for path in args.checkpoints + ([args.supervised] if args.supervised else []):
        Y = Lifter.from_checkpoint(path, device="cpu").lift_normalized(torch.from_numpy(x)).float()
        if path != args.supervised:
            lifts[path] = Y
        rmse = ((depth_offsets(Y) - gt_depth) ** 2).mean(0).sqrt()
        out["lifters"][path] = {"p_mpjpe": float(p_mpjpe(Y, gt)), "knee_bent_forward": knee_bent_forward(Y, names),
                                "depth_rmse": {n: round(float(v), 4) for n, v in zip(names[1:], rmse[1:])},
                                "depth_rmse_mean": float(rmse[1:].mean()), "supervised": path == args.supervised}
    if len(lifts) > 1:
        keys = list(lifts)
        out["mean_of_all"] = float(p_mpjpe(torch.stack([lifts[k] for k in keys]).mean(0), gt))
        out["mean_of_pairs"] = [float(p_mpjpe((lifts[a] + lifts[b]) / 2, gt)) for a, b in itertools.combinations(keys, 2)]
    print(f"{len(idx)} test poses; ground truth: knee bent forward in {out['ground_truth']['knee_bent_forward']:.2%} of legs")
    print(f"{'checkpoint':40s} {'P-MPJPE':>8s} {'knee fwd':>9s} {'depth rmse':>10s}")
    for path, r in out["lifters"].items():
        tag = " (supervised)" if r["supervised"] else ""
        print(f"{(path + tag)[-40:]:40s} {r['p_mpjpe']:8.1f} {r['knee_bent_forward']:9.2%} {r['depth_rmse_mean']:10.3f}")
    if "mean_of_all" in out:
        pairs = out["mean_of_pairs"]
        print(f"mean of the {len(lifts)} unsupervised lifts: P-MPJPE {out['mean_of_all']:.1f}; "
              f"of each pair: {min(pairs):.1f}-{max(pairs):.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
