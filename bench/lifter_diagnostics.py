"""Where a lifter's error is: per-checkpoint diagnostics on the embedded synthetic test split.

    python bench/lifter_diagnostics.py runs/a runs/b runs/c [--supervised runs/sup] [--stride 2]

For each checkpoint (a run folder or a ``.pt``), on every ``stride``-th test pose:
- ``p_mpjpe``: P-MPJPE in mm (the runs' own test number when stride is 1);
- ``knee_bent_forward``: the fraction of legs whose knee bends the wrong way, i.e. the hinge
  axis ``thigh x shin`` points against the hip axis (right hip -> left hip): a human knee does not
  hyperextend, so the ground truth gives ~0;
- ``depth_rmse``: per joint, the RMS error of the depth offset from the root in units of the
  pose's mean image-plane radius (scale-free, the depth that the lifter predicts).
- ``seq_prop_var``: the variance within a sequence of the lift's bone proportions (each bone's
  length over the sum of the pose's bone lengths), averaged over sequences (ground truth: 0);
- ``seq_prop_corr``: the correlation over poses of that deviation from the sequence's mean with
  the pose's P-MPJPE;
- ``bone_oracle``: the P-MPJPE the lift would have with each bone's true length (its 2D and the
  depth sign of each bone kept): how much of the error is in the bones' lengths;
- ``wrong_depth_sign``: the fraction of clearly depth-oriented bones (depth over length above 0.3
  in the ground truth) that point the wrong way in depth, overall and for the worst bones;
- ``asymmetry``: ``bone_symmetry_loss`` of the lifts (left/right bone-length difference);
- ``sign_oracle``: the P-MPJPE the lift would have with each bone's depth sign taken from the
  ground truth (its lengths and 2D kept): how much of the error is in the limbs' depth directions;
- ``sign_persistence``: of the clearly depth-oriented bones that point the wrong way, the fraction
  that still do about 5 frames later in the same sequence (where the bone is still clear): near 1
  when a lifter's sign errors are stable choices, near the overall rate when they are flickers.
- ``knee_axis``: for legs whose knee is bent by more than 20 degrees in the ground truth, the
  median / 90th / 99th percentile of the angle between the knee's axis (thigh x shin) and the hip
  axis made perpendicular to the thigh (what ``w_knee_hinge`` constrains), over all such legs and
  over those whose shin (clearly depth-oriented) points the wrong way in depth;
- ``by_motion``: the P-MPJPE per synthetic motion kind.
With ``--d-flip``, for each run folder: does its discriminator know the depth sign of a limb? For
each limb, the lift with that bone's depth mirrored about its parent (its subtree moved along, each
joint kept on its ray) is re-projected under ``--d-flip-views`` of the run's random rotations, and
D's logit is compared with that of the lift itself: the fraction of the wrongly signed (clear)
bones whose mirror D prefers, against that of the rightly signed ones; and the P-MPJPE of the lifts
with every limb mirrored where D prefers the mirror by a margin (D taken as a judge of signs).

Then the P-MPJPE of the mean of the unsupervised checkpoints' lifts (a prediction average: what
part of the error differs between independently trained lifters, and what part they share) and of
every pair of them.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np
import torch

from fastlift.data.layouts import get_layout
from fastlift.data.synthetic import default_splits
from fastlift.evaluation.inference import Lifter
from fastlift.evaluation.metrics import p_mpjpe
from fastlift.training import losses as L
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


def bones(parents) -> tuple[list[int], list[int]]:
    child = [j for j, p in enumerate(parents) if p >= 0]
    return child, [parents[j] for j in child]


def seq_prop_deviation(Y: torch.Tensor, seq: np.ndarray, parents) -> np.ndarray:
    """(N,) squared distance of each pose's bone proportions from its sequence's mean proportions."""
    child, parent = bones(parents)
    b = (Y[:, child] - Y[:, parent]).norm(dim=-1).double()
    prop = (b / b.sum(1, keepdim=True)).numpy()
    keys, inv = np.unique(seq, return_inverse=True)
    mean = np.stack([prop[inv == k].mean(0) for k in range(len(keys))])
    return ((prop - mean[inv]) ** 2).sum(1)


def seq_prop_var(Y: torch.Tensor, seq: np.ndarray, parents) -> float:
    """Variance within a sequence of the bone proportions of ``Y``, averaged over sequences."""
    dev = seq_prop_deviation(Y, seq, parents)
    return float(np.mean([dev[seq == s].mean() for s in np.unique(seq)]))


def bone_oracle(Y: torch.Tensor, gt: torch.Tensor, parents) -> float:
    """P-MPJPE of ``Y`` rebuilt from the root out with each bone's true length (scaled to the
    lift's image-plane size), its x-y offset and the sign of its depth offset kept."""
    r, g = (Y - Y[:, :1]).double(), (gt - gt[:, :1]).double()
    s = r[..., :2].norm(dim=-1).sum(1) / g[..., :2].norm(dim=-1).sum(1)
    out = torch.zeros_like(r)
    for j, p in zip(*bones(parents)):  # parents come before their children in the layout
        b = r[:, j] - r[:, p]
        length = (g[:, j] - g[:, p]).norm(dim=-1) * s
        dz = torch.sign(b[:, 2]) * (length ** 2 - b[:, 0] ** 2 - b[:, 1] ** 2).clamp_min(0).sqrt()
        out[:, j] = out[:, p] + torch.stack([b[:, 0], b[:, 1], dz], -1)
    return float(p_mpjpe(out, gt.double()))


def depth_sign_masks(Y: torch.Tensor, gt: torch.Tensor, child, parent) -> tuple[torch.Tensor, torch.Tensor]:
    """(clear, wrong), each (N, bones): the bone is clearly depth-oriented in the ground truth
    (depth over length above 0.3), and such a bone of the lift points the wrong way in depth."""
    g, b = gt[:, child] - gt[:, parent], Y[:, child] - Y[:, parent]
    clear = g[..., 2].abs() / g.norm(dim=-1) > 0.3
    return clear, (torch.sign(b[..., 2]) != torch.sign(g[..., 2])) & clear


def sign_oracle(Y: torch.Tensor, gt: torch.Tensor, parents) -> float:
    """P-MPJPE of ``Y`` rebuilt from the root out with each bone's x-y offset and length kept and
    the sign of its depth offset taken from the ground truth."""
    r, g = (Y - Y[:, :1]).double(), (gt - gt[:, :1]).double()
    out = torch.zeros_like(r)
    for j, p in zip(*bones(parents)):
        b = r[:, j] - r[:, p]
        dz = torch.where((g[:, j, 2] - g[:, p, 2]) < 0, -1.0, 1.0).double() * b[:, 2].abs()
        out[:, j] = out[:, p] + torch.stack([b[:, 0], b[:, 1], dz], -1)
    return float(p_mpjpe(out, gt.double()))


def sign_persistence(Y: torch.Tensor, gt: torch.Tensor, parents, seq: np.ndarray, gap: int) -> float:
    """Of the clear wrong-signed bones at pose i, the fraction still wrong at pose i + gap (same
    sequence, bone still clear there)."""
    clear, wrong = depth_sign_masks(Y, gt, *bones(parents))
    same = torch.from_numpy(seq[gap:] == seq[:-gap])[:, None]
    both = wrong[:-gap] & clear[gap:] & same
    return float((both & wrong[gap:]).sum() / both.sum().clamp_min(1))


def d_flip_preference(run: str, x: torch.Tensor, gt: torch.Tensor, names, parents, views: int,
                      limbs=("r_knee", "r_ankle", "l_knee", "l_ankle", "r_elbow", "r_wrist", "l_elbow", "l_wrist",
                             "neck", "head")) -> tuple[dict[str, tuple[float, float]], float, dict[float, float]]:
    """Per limb: (fraction of wrong-signed clear bones whose depth mirror the run's D prefers,
    the same for right-signed ones), D's logits averaged over ``views`` random rotations; then
    the lifts' P-MPJPE and, per margin tau, that of the lifts with every limb mirrored where D
    prefers the mirror by more than tau."""
    from fastlift.training.config import resolve_config
    from fastlift.training.engine import Trainer
    ckpt = run if run.endswith(".pt") else os.path.join(run, "checkpoints", "last.pt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["config"]
    cfg = resolve_config(base=saved, cli_values=dict(resume=ckpt, out=os.path.dirname(os.path.dirname(ckpt)),
                                                    progress=False, tensorboard=False, device="cpu"))
    tr = Trainer(cfg, log=lambda *a: None, install_signal_handlers=False)
    tr.lifter.eval()
    tr.disc.eval()
    kids = {j: [c for c, p in enumerate(parents) if p == j] for j in range(len(parents))}

    def subtree(j):
        return [j] + [d for c in kids[j] for d in subtree(c)]

    with torch.no_grad():
        Y = tr._lift(x)
        Rs = []
        for v in range(views):
            tr.step = 10**6 + v  # a rotation stream of its own
            Rs.append(tr._rotations(len(x), Y))

        def logit(P):
            return torch.stack([tr.d_fwd(tr._project(P, R)[0]).float().view(-1) for R in Rs]).mean(0)

        def mirrored(zz, j, p, which=None):
            d = 2 * (zz[:, p] - zz[:, j])
            zz = zz.clone()
            zz[:, subtree(j)] += (d if which is None else d * which)[:, None]
            return zz

        base, z, out, margin = logit(Y), Y[..., 2], {}, {}
        for name in limbs:
            j = names.index(name)
            p = parents[j]
            clear, wrong = (m[:, 0] for m in depth_sign_masks(Y, gt, [j], [p]))
            z2 = mirrored(z, j, p)
            margin[name] = logit(torch.cat([x * z2[..., None], z2[..., None]], -1)) - base
            prefers = margin[name] > 0
            out[name] = (float(prefers[wrong].float().mean()) if wrong.any() else float("nan"),
                         float(prefers[clear & ~wrong].float().mean()))
        # D as a judge: mirror every limb whose mirror D prefers by more than tau (parents first)
        applied = {}
        for tau in (0.0, 1.0, 2.0):
            zz = z
            for name in limbs:
                j = names.index(name)
                zz = mirrored(zz, j, parents[j], (margin[name] > tau).float())
            applied[tau] = float(p_mpjpe(torch.cat([x * zz[..., None], zz[..., None]], -1), gt))
    return out, float(p_mpjpe(Y, gt)), applied


def knee_axis_angles(Y: torch.Tensor, gt: torch.Tensor, names) -> dict[str, list[float]]:
    """Angle (degrees) between the knee's axis and the hip axis made perpendicular to the thigh, at
    the legs whose ground-truth knee is bent by more than 20 degrees: its median / 90th / 99th
    percentile over all of them (``all``) and over those whose shin is clear and wrongly signed
    in depth (``wrong_shin``)."""
    q = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    hips = (names.index("r_hip"), names.index("l_hip"))
    angles, wrong_mask = [], []
    for side in ("r", "l"):
        h, k, a = (names.index(f"{side}_{n}") for n in ("hip", "knee", "ankle"))
        sin_cos, sin_flex = L.knee_axis_terms(Y.double(), torch.tensor([[h, k, a]]), hips)
        ang = torch.rad2deg(torch.acos((sin_cos / sin_flex.clamp_min(1e-12)).clamp(-1, 1)))[:, 0]
        t, s = gt[:, k] - gt[:, h], gt[:, a] - gt[:, k]
        flex = torch.rad2deg(torch.acos(((t * s).sum(-1) / (t.norm(dim=-1) * s.norm(dim=-1))).clamp(-1, 1)))
        bent = flex > 20
        _, wrong = depth_sign_masks(Y, gt, [a], [k])
        angles.append(ang[bent])
        wrong_mask.append(wrong[:, 0][bent])
    ang, wrong = torch.cat(angles), torch.cat(wrong_mask)
    out = {"all": [round(float(v), 1) for v in torch.quantile(ang, q)]}
    out["wrong_shin"] = [round(float(v), 1) for v in torch.quantile(ang[wrong], q)] if wrong.any() else []
    return out


def wrong_depth_sign(Y: torch.Tensor, gt: torch.Tensor, parents, names) -> tuple[float, dict[str, float]]:
    """Fraction of clearly depth-oriented bones pointing the wrong way in depth, overall and per bone."""
    child, parent = bones(parents)
    clear, wrong = depth_sign_masks(Y, gt, child, parent)
    per = wrong.sum(0).double() / clear.sum(0).clamp_min(1).double()
    return float(wrong.sum() / clear.sum()), {names[j]: round(float(v), 3) for j, v in zip(child, per)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="unsupervised run folders or .pt files")
    ap.add_argument("--supervised", default=None, help="a supervised run, reported beside (not averaged)")
    ap.add_argument("--stride", type=int, default=2, help="use every K-th test pose")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--d-flip", action="store_true", help="also ask each run's discriminator about limb depth signs")
    ap.add_argument("--d-flip-views", type=int, default=8, help="random rotations D's logits are averaged over")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    test = default_splits(0)["test"]
    layout = get_layout("h36m17")
    names, parents = list(layout.joint_names), list(layout.parents)
    child, parent = bones(parents)
    pairs = [(lj, parents[lj], rj, parents[rj]) for lj, rj in zip(layout.left, layout.right) if parents[lj] >= 0]
    sym = [torch.tensor([q[i] for q in pairs]) for i in range(4)]
    idx = np.arange(0, len(test), args.stride)
    x, conf, _ = normalized_2d(test, 0, 10, 10.0, idx)
    gt = torch.as_tensor(np.asarray(test.keypoints_3d)[idx]).float()
    seq = np.asarray(test.sequence)[idx]
    motion = np.asarray(test.action)[idx]
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
                                "depth_rmse_mean": float(rmse[1:].mean()), "supervised": path == args.supervised,
                                "seq_prop_var": seq_prop_var(Y, seq, parents),
                                "seq_prop_corr": float(np.corrcoef(seq_prop_deviation(Y, seq, parents),
                                                                   p_mpjpe(Y, gt, reduction="none").double().numpy())[0, 1]),
                                "bone_oracle": bone_oracle(Y, gt, parents),
                                "sign_oracle": sign_oracle(Y, gt, parents),
                                "sign_persistence": sign_persistence(Y, gt, parents, seq, max(1, round(5 / args.stride))),
                                "asymmetry": float(L.bone_symmetry_loss(Y.double(), *sym))}
        wrong, per_bone = wrong_depth_sign(Y, gt, parents, names)
        err = p_mpjpe(Y, gt, reduction="none").double().numpy()
        out["lifters"][path].update(wrong_depth_sign=wrong, wrong_depth_sign_per_bone=per_bone,
                                    knee_axis=knee_axis_angles(Y, gt, names),
                                    by_motion={str(m): round(float(err[motion == m].mean()), 1) for m in np.unique(motion)})
    if args.d_flip:
        xt = torch.from_numpy(x).float()
        for path in args.checkpoints:
            pref, lift, applied = d_flip_preference(path, xt, gt, names, parents, args.d_flip_views)
            out["lifters"][path]["d_flip_preference"] = pref
            print(f"{path[-40:]:40s} D prefers the depth mirror (of wrong / right signs): "
                  + ", ".join(f"{n} {w:.2f}/{r:.2f}" for n, (w, r) in pref.items()))
            print(f"{'':40s} P-MPJPE {lift:.1f}; with every limb mirrored where D's margin exceeds "
                  + ", ".join(f"{t:g}: {v:.1f}" for t, v in applied.items()))
            out["lifters"][path]["d_flip_applied"] = {"lift": lift, **{str(t): v for t, v in applied.items()}}
    if len(lifts) > 1:
        keys = list(lifts)
        out["mean_of_all"] = float(p_mpjpe(torch.stack([lifts[k] for k in keys]).mean(0), gt))
        out["mean_of_pairs"] = [float(p_mpjpe((lifts[a] + lifts[b]) / 2, gt)) for a, b in itertools.combinations(keys, 2)]
    print(f"{len(idx)} test poses; ground truth: knee bent forward in {out['ground_truth']['knee_bent_forward']:.2%} of legs")
    print(f"ground truth: bone proportions' variance within a sequence {seq_prop_var(gt, seq, parents):.1e}")
    print(f"{'checkpoint':40s} {'P-MPJPE':>8s} {'knee fwd':>9s} {'depth rmse':>10s} {'seq var':>8s} {'corr':>5s} "
          f"{'oracle':>7s} {'sgn orc':>7s} {'persist':>7s} {'sign wrong':>10s} {'asym':>8s}  worst bones")
    for path, r in out["lifters"].items():
        tag = " (supervised)" if r["supervised"] else ""
        worst = sorted(r["wrong_depth_sign_per_bone"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{(path + tag)[-40:]:40s} {r['p_mpjpe']:8.1f} {r['knee_bent_forward']:9.2%} {r['depth_rmse_mean']:10.3f} "
              f"{r['seq_prop_var']:8.1e} {r['seq_prop_corr']:5.2f} {r['bone_oracle']:7.1f} {r['sign_oracle']:7.1f} {r['sign_persistence']:7.2f} {r['wrong_depth_sign']:10.3f} {r['asymmetry']:8.1e}  "
              + ", ".join(f"{n} {v:.2f}" for n, v in worst))
    gk = knee_axis_angles(gt, gt, names)["all"]
    print(f"knee axis against the hip axis at bent knees (deg, median/p90/p99): ground truth {gk}")
    for path, r in out["lifters"].items():
        k = r["knee_axis"]
        print(f"{path[-40:]:40s} knee axis: all {k['all']}, wrongly signed shins {k['wrong_shin']}; P-MPJPE by motion: "
              + ", ".join(f"{m} {v}" for m, v in r["by_motion"].items()))
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
