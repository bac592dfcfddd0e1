"""Scoring a lifter on a 3D-labelled pose set: streaming metric accumulation, the report, its table
and its JSON (what ``python -m fastlift.evaluate`` prints and writes).

Protocol (stated in every report, see docs/evaluation.md):

* Ground truth: ``keypoints_3d`` in mm, converted to h36m17, root-centred (pelvis).
* Predictions: :class:`fastlift.Lifter` lifts (root-relative, the method's normalised unit),
  2D normalised per sample, exactly as the training engine validates.
* ``p_mpjpe``: similarity Procrustes per pose (VideoPose3D protocol #2, det R = +1).
* ``n_mpjpe``: per-pose least-squares scale after root alignment.
* ``mpjpe``: root alignment and ONE least-squares scale for the whole set (``mpjpe_scale``, mm
  per lift unit); ``--mpjpe-align`` picks another alignment of :data:`fastlift.evaluation.pck.ALIGNMENTS`.
* ``pck150`` / ``auc``: MPI-INF-3DHP convention (``err < t``, 17 joints, AUC over 31 thresholds
  0..150 mm), after Procrustes alignment by default (``--pck-align``).
* Poses the engine would not use (root or head missing, fewer than half the joints present,
  non-finite) are skipped and counted (``n_skipped``).

Everything is batched: per batch one lifter forward, one batched Procrustes, a few reductions and
``bincount`` s; no Python loop runs per pose.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from fastlift.evaluation.pck import ALIGNMENTS, AUC_THRESHOLDS_MM, PCK_THRESHOLD_MM, joint_errors

__all__ = ["ErrorAccumulator", "EvaluationReport", "evaluate_predictions", "evaluate_lifter", "usable_poses",
           "ALIGN_DESCRIPTIONS"]

ALIGN_DESCRIPTIONS = {
    "none": "no alignment (prediction taken as metric and in the ground truth's frame)",
    "root": "root (pelvis) alignment only, no scale",
    "global_scale": "root alignment + one least-squares scale for the whole set",
    "scale": "root alignment + per-pose least-squares scale (N-MPJPE)",
    "procrustes": "per-pose similarity Procrustes: translation, rotation (det R = +1), scale (P-MPJPE)",
}


# ---------------------------------------------------------------------------------------- accumulator
class ErrorAccumulator:
    """Streams per-joint errors (B, J) of several metrics, batch by batch, into every table
    (overall, per group, per joint) and the PCK histograms, in float64. Memory is O(groups x
    thresholds x joints), independent of N.

    Args:
        num_joints: J.
        groupings: name -> (N,) label array over the whole set (e.g. ``{"action": ..., "subject": ...}``);
            batches say which rows they are with ``rows``.
        pck_metric: the metric whose errors PCK and AUC are taken from.
    """

    def __init__(self, num_joints: int, groupings: Mapping[str, np.ndarray] | None = None,
                 pck_metric: str = "p_mpjpe", thresholds=AUC_THRESHOLDS_MM, pck_threshold: float = PCK_THRESHOLD_MM):
        self.J = int(num_joints)
        self.pck_metric = pck_metric
        t = np.asarray(thresholds, dtype=np.float64)
        self.pck_threshold = float(pck_threshold)
        # the PCK threshold is one more bin edge, so PCK@150 and the AUC curve come from one histogram
        edges = np.unique(np.concatenate([t, [self.pck_threshold]]))
        self.edges = torch.from_numpy(edges)
        # float32 copy for searching float32 errors without converting them (exact when every edge is
        # a float32 number, as 0, 5, ..., 150 are; else the float64 path is used)
        self.edges32 = torch.from_numpy(edges.astype(np.float32)) if np.array_equal(edges.astype(np.float32), edges) else None
        self.auc_pos = torch.from_numpy(np.searchsorted(self.edges.numpy(), t))
        self.pck_pos = int(np.searchsorted(self.edges.numpy(), self.pck_threshold))
        self.sums: dict[str, torch.Tensor] = {}          # metric -> (J,) float64 sums over poses
        self.n = 0
        self.hist_joint = torch.zeros(self.J, self.edges.numel() + 1, dtype=torch.float64)
        self.groups: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        self.group_sums: dict[str, dict[str, torch.Tensor]] = {}
        self.group_hist: dict[str, torch.Tensor] = {}
        self.group_count: dict[str, torch.Tensor] = {}
        for name, labels in (groupings or {}).items():
            if labels is None:
                continue
            names, inv = np.unique(np.asarray(labels), return_inverse=True)
            self.groups[name] = (names, torch.from_numpy(inv.reshape(-1).astype(np.int64)))
            G = len(names)
            self.group_sums[name] = {}
            self.group_hist[name] = torch.zeros(G, self.edges.numel() + 1, dtype=torch.float64)
            self.group_count[name] = torch.zeros(G, dtype=torch.float64)

    def add(self, errors: Mapping[str, torch.Tensor], rows=None) -> None:
        """Add per-joint errors (B, J) of the poses ``rows`` (indices into the grouping arrays;
        needed when there are groupings). Metrics may arrive in different calls (two passes)."""
        B = None
        for key, err in errors.items():
            err = err.detach().cpu()
            if not err.is_floating_point():
                err = err.double()
            if err.dim() != 2 or err.shape[1] != self.J:
                raise ValueError(f"errors[{key!r}] must be (B, {self.J}), got {tuple(err.shape)}")
            B = err.shape[0]
            # matrix-vector products: far faster than small strided reductions on a CPU
            col = torch.ones(B, dtype=err.dtype) @ err
            self.sums[key] = self.sums.get(key, torch.zeros(self.J, dtype=torch.float64)) + col.double()
            per_pose = (err @ torch.ones(self.J, dtype=err.dtype)).double() / self.J
            inv_b = None
            for gname, (names, inv) in self.groups.items():
                if rows is None:
                    raise ValueError("ErrorAccumulator.add: rows are needed when there are groupings")
                inv_b = inv[torch.as_tensor(rows)]
                G = len(names)
                gs = self.group_sums[gname]
                gs[key] = gs.get(key, torch.zeros(G, dtype=torch.float64)) + torch.bincount(inv_b, weights=per_pose, minlength=G)
            if key == self.pck_metric:
                flat = err.reshape(-1).contiguous()
                if flat.dtype == torch.float32 and self.edges32 is not None:
                    idx = torch.searchsorted(self.edges32, flat, right=True)
                else:
                    idx = torch.searchsorted(self.edges, flat.double(), right=True)
                T1 = self.edges.numel() + 1
                # one bincount per grouping over (group, joint, bin); the joint histogram is its marginal
                jt = torch.arange(self.J).repeat(B) * T1 + idx                   # (B*J,) joint-bin index
                if not self.groups:
                    self.hist_joint += torch.bincount(jt, minlength=self.J * T1).double().reshape(self.J, T1)
                for n_g, (gname, (names, inv)) in enumerate(self.groups.items()):
                    inv_b = inv[torch.as_tensor(rows)]
                    G = len(names)
                    key3 = inv_b.repeat_interleave(self.J) * (self.J * T1) + jt
                    h = torch.bincount(key3, minlength=G * self.J * T1).double().reshape(G, self.J, T1)
                    self.group_hist[gname] += h.sum(1)
                    if n_g == 0:
                        self.hist_joint += h.sum(0)
                    self.group_count[gname] += torch.bincount(inv_b, minlength=G).double()
                self.n += B

    # ------------------------------------------------------------------ results
    def _pck_auc(self, hist: torch.Tensor) -> tuple[float, float]:
        """hist (T1,) counts of the bin index ``#edges <= err``; correct at edge k iff index <= k."""
        total = float(hist.sum())
        if total == 0:
            return float("nan"), float("nan")
        cum = torch.cumsum(hist, 0)
        pck = 100.0 * float(cum[self.pck_pos]) / total
        auc = 100.0 * float(cum[self.auc_pos].mean()) / total
        return pck, auc

    def overall(self) -> dict[str, float]:
        out = {k: float(v.sum() / max(self.n * self.J, 1)) for k, v in self.sums.items()}
        out["pck150"], out["auc"] = self._pck_auc(self.hist_joint.sum(0))
        return out

    def per_joint(self, joint_names: Sequence[str]) -> dict[str, dict[str, float]]:
        out = {}
        for j, name in enumerate(joint_names):
            row = {k: float(v[j] / max(self.n, 1)) for k, v in self.sums.items()}
            row["pck150"], row["auc"] = self._pck_auc(self.hist_joint[j])
            out[name] = row
        return out

    def per_group(self, name: str) -> dict[str, dict[str, float]]:
        names, _ = self.groups[name]
        cnt = self.group_count[name]
        out = {}
        for i, label in enumerate(names):
            if cnt[i] == 0:
                continue
            row = {k: float(v[i] / cnt[i]) for k, v in self.group_sums[name].items()}
            row["pck150"], row["auc"] = self._pck_auc(self.group_hist[name][i])
            row["n_poses"] = int(cnt[i])
            out[str(label)] = row
        return out


# ---------------------------------------------------------------------------------------- report
@dataclass
class EvaluationReport:
    """The numbers of one evaluation (all errors in mm, PCK / AUC in percent)."""

    n_poses: int
    mpjpe: float
    p_mpjpe: float
    n_mpjpe: float
    pck150: float
    auc: float
    mpjpe_align: str = "global_scale"
    pck_align: str = "procrustes"
    mpjpe_scale: float | None = None
    n_skipped: int = 0
    extra: dict = field(default_factory=dict)
    per_action: dict | None = None
    per_subject: dict | None = None
    per_joint: dict | None = None
    data: str | None = None
    checkpoint: str | None = None
    seconds: float | None = None
    lift_seconds: float | None = None
    refine_bones: str | None = None

    METRICS = ("mpjpe", "p_mpjpe", "n_mpjpe", "pck150", "auc")

    @property
    def poses_per_s(self) -> float | None:
        return None if not self.seconds else self.n_poses / self.seconds

    def protocol(self) -> dict[str, str]:
        return {
            "mpjpe": ALIGN_DESCRIPTIONS[self.mpjpe_align]
            + (f" (scale {self.mpjpe_scale:.6g} mm per lift unit)" if self.mpjpe_scale is not None and self.mpjpe_align == "global_scale" else ""),
            "p_mpjpe": ALIGN_DESCRIPTIONS["procrustes"],
            "n_mpjpe": ALIGN_DESCRIPTIONS["scale"],
            "pck150": f"MPI-INF-3DHP: 100 mean(err < 150 mm) over 17 joints, after {self.pck_align} alignment",
            "auc": f"mean PCK over 31 thresholds 0..150 mm, after {self.pck_align} alignment",
        }

    def to_dict(self) -> dict:
        d = {"mpjpe": self.mpjpe, "p_mpjpe": self.p_mpjpe, "n_mpjpe": self.n_mpjpe, "pck150": self.pck150,
             "auc": self.auc, "n_poses": self.n_poses, "n_skipped": self.n_skipped,
             "mpjpe_align": self.mpjpe_align, "mpjpe_scale": self.mpjpe_scale, "pck_align": self.pck_align,
             "protocol": self.protocol(), "units": {"errors": "mm", "pck150": "percent", "auc": "percent"}}
        d.update(self.extra)
        for name in ("per_action", "per_subject", "per_joint"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        for name in ("data", "checkpoint", "seconds", "lift_seconds", "refine_bones"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        if self.poses_per_s is not None:
            d["poses_per_s"] = self.poses_per_s
        return _json_safe(d)

    def to_json(self, path: str) -> str:
        """Write :meth:`to_dict` to ``path`` (atomically)."""
        path = os.fspath(path)
        from fastlift._atomic import atomic_write
        return atomic_write(path, lambda fh: fh.write(json.dumps(self.to_dict(), indent=1) + "\n"), "w")

    def format_table(self) -> str:
        """A plain-text table: the overall row, then per action / subject / joint when present."""
        cols = list(self.METRICS) + [k for k in self.extra if isinstance(self.extra[k], float)]
        heads = {"mpjpe": "MPJPE*", "p_mpjpe": "P-MPJPE", "n_mpjpe": "N-MPJPE", "pck150": "PCK150", "auc": "AUC",
                 "p_mpjpe_flip": "P-flip", "p_mpjpe_flat": "P-flat", "p_mpjpe_refined": "P-refin",
                 "n_mpjpe_refined": "N-refin"}
        lines = []
        if self.data:
            lines.append(f"data: {self.data}")
        if self.checkpoint:
            lines.append(f"checkpoint: {self.checkpoint}")
        lines.append(f"poses: {self.n_poses}" + (f" ({self.n_skipped} skipped: root/head missing or under half the "
                                                  f"joints present)" if self.n_skipped else ""))
        overall = {k: getattr(self, k) if k in self.METRICS else self.extra[k] for k in cols}
        overall["n_poses"] = self.n_poses

        def table(title: str, rows: dict[str, dict]) -> list[str]:
            w0 = max([len(title)] + [len(r) for r in rows])
            hdr = f"{title:<{w0}}  " + "  ".join(f"{heads.get(c, c):>8}" for c in cols) + f"  {'poses':>8}"
            out = [hdr, "-" * len(hdr)]
            for name, r in rows.items():
                out.append(f"{name:<{w0}}  " + "  ".join(_fmt(r.get(c)) for c in cols) + f"  {r.get('n_poses', ''):>8}")
            return out

        lines += table("", {"all": overall})
        if self.per_action:
            lines.append("")
            lines += table("action", self.per_action)
        if self.per_subject:
            lines.append("")
            lines += table("subject", self.per_subject)
        if self.per_joint:
            lines.append("")
            lines += table("joint", self.per_joint)
        lines.append("")
        lines.append("errors in mm, PCK150 and AUC in %")
        for k, v in self.protocol().items():
            lines.append(f"  {heads.get(k, k) if k != 'mpjpe' else 'MPJPE*'}: {v}")
        if "p_mpjpe_flip" in self.extra:
            lines.append("  P-flip: P-MPJPE of the prediction with its root-relative depths negated (mirror check)")
        if "p_mpjpe_flat" in self.extra:
            lines.append("  P-flat: P-MPJPE of the zero-depth lift of the normalised 2D input (baseline to beat)")
        if "p_mpjpe_refined" in self.extra:
            lines.append(f"  P-refin / N-refin: P-MPJPE / N-MPJPE of the lifts refined to one skeleton per person "
                         f"({self.refine_bones}; fastlift.evaluation.refine)")
        if self.seconds:
            lines.append(f"time: {self.seconds:.2f} s ({self.poses_per_s:,.0f} poses/s"
                         + (f"; lifting {self.lift_seconds:.2f} s" if self.lift_seconds else "") + ")")
        return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return f"{'':>8}"
    if isinstance(v, float) and not math.isfinite(v):
        return f"{'nan':>8}"
    return f"{v:8.2f}"


def _json_safe(o):
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    return o


# ---------------------------------------------------------------------------------------- scoring
def usable_poses(keypoints_2d, confidence, root: int = 0, head: int = 10, min_joint_fraction: float = 0.5,
                 chunk: int = 1 << 20) -> np.ndarray:
    """(N,) bool: poses the training engine validates on (root and head present, non-zero head-root
    distance, at least half the joints present, finite 2D). Streams memory-mapped arrays in chunks."""
    N = len(keypoints_2d)
    ok = np.empty(N, dtype=bool)
    for s in range(0, N, chunk):
        k = np.asarray(keypoints_2d[s:s + chunk])
        c = np.asarray(confidence[s:s + chunk])
        d = np.linalg.norm(k[:, head].astype(np.float64) - k[:, root], axis=-1)
        m = (c[:, root] > 0) & (c[:, head] > 0) & (d > 1e-6)
        m &= (c > 0).mean(1) >= min_joint_fraction
        m &= np.isfinite(k).all(axis=(1, 2))
        ok[s:s + chunk] = m
    return ok


def _errors_batch(pred: torch.Tensor, gt: torch.Tensor, root: int, metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {}
    if "p_mpjpe" in metrics:
        out["p_mpjpe"] = joint_errors(pred, gt, "procrustes", root=root)
    if "n_mpjpe" in metrics:
        out["n_mpjpe"] = joint_errors(pred, gt, "scale", root=root)
    return out


def evaluate_predictions(pred, gt, *, actions=None, subjects=None, joint_names: Sequence[str] | None = None,
                         mpjpe_align: str = "global_scale", pck_align: str = "procrustes", root: int = 0,
                         batch_size: int = 65536, per_joint: bool = False, per_subject: bool = False) -> EvaluationReport:
    """Score predictions (N, J, 3) (any unit: lift units or mm) against ground truth (N, J, 3) in mm.

    See the module docstring for the protocol; ``actions`` / ``subjects`` (N,) give per-group
    rows (per-action rows whenever ``actions`` is given).
    """
    src = _ArraySource(pred, gt)
    return _score(src, len(src), actions=actions, subjects=subjects if per_subject else None,
                  joint_names=joint_names, mpjpe_align=mpjpe_align, pck_align=pck_align, root=root,
                  batch_size=batch_size, per_joint=per_joint)


class _ArraySource:
    def __init__(self, pred, gt):
        self.pred = pred if isinstance(pred, torch.Tensor) else torch.from_numpy(np.asarray(pred))
        self.gt = gt if isinstance(gt, torch.Tensor) else torch.from_numpy(np.asarray(gt))
        if self.pred.dim() != 3 or self.pred.shape != self.gt.shape or self.pred.shape[-1] != 3:
            raise ValueError(f"pred and gt must both be (N, J, 3), got {tuple(self.pred.shape)} and {tuple(self.gt.shape)}")

    def __len__(self):
        return self.pred.shape[0]

    def batch(self, s: int, e: int):
        return self.pred[s:e].float(), self.gt[s:e].float()


def _score(src, N: int, *, actions, subjects, joint_names, mpjpe_align, pck_align, root, batch_size, per_joint,
           extra_fn=None) -> EvaluationReport:
    for name, a in (("mpjpe_align", mpjpe_align), ("pck_align", pck_align)):
        if a not in ALIGNMENTS:
            raise ValueError(f"{name} must be one of {', '.join(ALIGNMENTS)}, got {a!r}")
    if N == 0:
        raise ValueError("no poses to evaluate")
    groupings = {}
    if actions is not None:
        groupings["action"] = np.asarray(actions)
    if subjects is not None:
        groupings["subject"] = np.asarray(subjects)
    pck_key = {"procrustes": "p_mpjpe", "scale": "n_mpjpe"}.get(pck_align, "_pck")
    acc = None
    # pass 1: the global scale (when needed); P- and N-MPJPE (and PCK's errors) on the way
    sp = sg = 0.0
    need_scale = "global_scale" in (mpjpe_align, pck_align)
    for s in range(0, N, batch_size):
        e = min(N, s + batch_size)
        p, g = src.batch(s, e)
        if acc is None:
            acc = ErrorAccumulator(p.shape[1], groupings, pck_metric=pck_key)
        p = p - p[:, root:root + 1]
        g = g - g[:, root:root + 1]
        if need_scale:
            pf = p.reshape(-1)
            sp += float(torch.dot(pf, g.reshape(-1)))   # float32 within a batch, float64 across batches
            sg += float(torch.dot(pf, pf))
        errs = _errors_batch(p, g, root, ("p_mpjpe", "n_mpjpe"))
        if pck_key == "_pck" and pck_align != "global_scale":
            errs["_pck"] = joint_errors(p, g, pck_align, root=root)
        if mpjpe_align not in ("global_scale",):
            errs["mpjpe"] = errs["p_mpjpe"] if mpjpe_align == "procrustes" else (
                errs["n_mpjpe"] if mpjpe_align == "scale" else joint_errors(p, g, mpjpe_align, root=root))
        if extra_fn is not None:
            errs.update(extra_fn(s, e, p, g))
        acc.add(errs, rows=np.arange(s, e))
    scale = sp / sg if need_scale and sg > 0 else None
    if need_scale:
        for s in range(0, N, batch_size):
            e = min(N, s + batch_size)
            p, g = src.batch(s, e)
            p = p - p[:, root:root + 1]
            g = g - g[:, root:root + 1]
            err = torch.linalg.vector_norm(p * (scale or 0.0) - g, dim=-1)
            errs = {}
            if mpjpe_align == "global_scale":
                errs["mpjpe"] = err
            if pck_align == "global_scale":
                errs["_pck"] = err
            acc.add(errs, rows=np.arange(s, e))
    ov = acc.overall()
    # every number extra_fn added (the standard metrics and the private "_pck" aside)
    extra = {k: v for k, v in ov.items() if k not in EvaluationReport.METRICS and not k.startswith("_")}
    rep = EvaluationReport(n_poses=N, mpjpe=ov["mpjpe"], p_mpjpe=ov["p_mpjpe"], n_mpjpe=ov["n_mpjpe"],
                           pck150=ov["pck150"], auc=ov["auc"], mpjpe_align=mpjpe_align, pck_align=pck_align,
                           mpjpe_scale=scale if mpjpe_align == "global_scale" else None, extra=extra)
    keep = ("mpjpe", "p_mpjpe", "n_mpjpe", "pck150", "auc", "n_poses") + tuple(extra)

    def clean(rows):
        return {n: {k: r[k] for k in keep if k in r} for n, r in rows.items()}

    if "action" in groupings:
        rep.per_action = clean(acc.per_group("action"))
    if "subject" in groupings:
        rep.per_subject = clean(acc.per_group("subject"))
    if per_joint:
        names = list(joint_names) if joint_names is not None else [str(j) for j in range(acc.J)]
        rep.per_joint = clean(acc.per_joint(names))
    return rep


class _LiftSource:
    """Lifts the usable poses of a PoseSet batch by batch (pass 1) and keeps the predictions (float32,
    N x 17 x 3) for the second pass; ground truth is read from the (memory-mapped) set each time."""

    def __init__(self, lifter, ps, rows: np.ndarray, batch_size: int):
        self.lifter, self.ps, self.rows, self.bs = lifter, ps, rows, batch_size
        self.pred = torch.empty(len(rows), 17, 3)
        self.done = 0
        self.lift_seconds = 0.0
        self.x_cache: dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self.rows)

    def _take(self, a, s, e):
        r = self.rows[s:e]
        if len(r) and r[-1] - r[0] == len(r) - 1:  # a contiguous run: slice (fast on memory maps)
            return np.asarray(a[r[0]:r[-1] + 1])
        return np.asarray(a[r])

    def batch(self, s: int, e: int):
        g = torch.from_numpy(np.array(self._take(self.ps.keypoints_3d, s, e), dtype=np.float32))
        if e <= self.done:
            return self.pred[s:e], g
        t0 = time.perf_counter()
        k = torch.from_numpy(np.array(self._take(self.ps.keypoints_2d, s, e), dtype=np.float32))
        c = torch.from_numpy(np.array(self._take(self.ps.confidence, s, e), dtype=np.float32))
        x, _ = self.lifter.normalize(k.to(self.lifter.device), c.to(self.lifter.device))
        Y = self.lifter.lift_normalized(x, batch_size=self.bs).float().cpu()
        self.lift_seconds += time.perf_counter() - t0
        self.pred[s:e] = Y
        self.done = e
        self.last_x = x
        return Y, g


def _refined_lifts(lifter, ps, rows: np.ndarray, labels: np.ndarray, batch_size: int,
                   softness: float) -> torch.Tensor:
    """Root-relative lifts (N, 17, 3) of ``ps[rows]``, refined to one skeleton per label."""
    from fastlift.evaluation.refine import refine_bone_lengths
    from fastlift.data.layouts import H36M17
    Ys, valid = [], []
    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        k = torch.from_numpy(np.array(ps.keypoints_2d[r], dtype=np.float32)).to(lifter.device)
        c = torch.from_numpy(np.array(ps.confidence[r], dtype=np.float32)).to(lifter.device)
        x, _ = lifter.normalize(k, c)
        Ys.append(lifter.lift_normalized(x, batch_size=batch_size, root_relative=False).float().cpu())
        valid.append((c > 0).cpu())
    Y = refine_bone_lengths(torch.cat(Ys), labels, H36M17.parents, valid=torch.cat(valid), softness=softness)
    return Y - Y[:, lifter.root:lifter.root + 1]


def evaluate_lifter(lifter, data, *, batch_size: int = 65536, mpjpe_align: str = "global_scale",
                    pck_align: str = "procrustes", per_joint: bool = False, per_subject: bool = False,
                    diagnostics: bool = False, max_poses: int | None = None,
                    refine_bones: str = "none", refine_softness: float = 0.35) -> EvaluationReport:
    """Lift every usable pose of a 3D-labelled pose set (a path in any format
    :func:`fastlift.data.load_poses` reads, or a :class:`~fastlift.data.PoseSet`) and score it.

    Args:
        lifter: a :class:`fastlift.Lifter` (or a checkpoint path).
        data: pose file path or PoseSet with ``keypoints_3d`` (mm, camera frame).
        diagnostics: also report ``p_mpjpe_flip`` (depths negated: the mirror check) and
            ``p_mpjpe_flat`` (zero-depth lift: the baseline).
        max_poses: evaluate only the first ``max_poses`` usable poses.
        refine_bones: ``auto``, ``subject``, ``sequence`` or ``none``: also report ``p_mpjpe_refined``
            and ``n_mpjpe_refined``, the lifts refined to one skeleton per person
            (:func:`fastlift.evaluation.refine.refine_groups` says who is who; nothing is added
            when the set cannot tell); ``refine_softness``: its ``softness``.
    """
    from fastlift.data import PoseDataError, load_poses
    from fastlift.data.layouts import H36M17
    from fastlift.evaluation.inference import Lifter

    t0 = time.perf_counter()
    if isinstance(lifter, (str, os.PathLike)):
        lifter = Lifter.from_checkpoint(lifter)
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        ps = load_poses(path)
    else:
        ps, path = data, getattr(data, "source", None) or "PoseSet"
    if not ps.has_3d:
        raise PoseDataError(f"{path}: has no 3D labels (keypoints_3d); evaluation needs them")
    if len(ps) == 0:
        raise PoseDataError(f"{path}: holds no poses")
    if ps.layout != H36M17.name:
        ps, _ = ps.to_layout(H36M17.name)
    ok = usable_poses(ps.keypoints_2d, ps.confidence, lifter.root, lifter.head)
    rows = np.flatnonzero(ok)
    if max_poses is not None:
        rows = rows[:max_poses]
    if len(rows) == 0:
        raise PoseDataError(f"{path}: none of its {len(ps)} poses is usable (root and head present, at least half "
                            f"the joints)")
    src = _LiftSource(lifter, ps, rows, batch_size)
    actions = None if ps.action is None else np.asarray(ps.action)[rows]
    subjects = None if ps.subject is None else np.asarray(ps.subject)[rows]

    from fastlift.evaluation.refine import refine_groups
    labels, refine_how = refine_groups(ps, refine_bones)
    refined = None if labels is None else _refined_lifts(lifter, ps, rows, labels[rows], batch_size, refine_softness)

    extra_fn = None
    if diagnostics or refined is not None:
        def extra_fn(s, e, p, g):
            out = {}
            if diagnostics:
                flip = p.clone()
                flip[..., 2] = -flip[..., 2]
                x = src.last_x.float().cpu()
                flat = torch.cat([x - x[:, lifter.root:lifter.root + 1], torch.zeros_like(x[..., :1])], -1)
                out.update(p_mpjpe_flip=joint_errors(flip, g, "procrustes"),
                           p_mpjpe_flat=joint_errors(flat, g, "procrustes"))
            if refined is not None:
                out.update(p_mpjpe_refined=joint_errors(refined[s:e], g, "procrustes", root=lifter.root),
                           n_mpjpe_refined=joint_errors(refined[s:e], g, "scale", root=lifter.root))
            return out

    rep = _score(src, len(rows), actions=actions, subjects=subjects if per_subject else None,
                 joint_names=H36M17.joint_names, mpjpe_align=mpjpe_align, pck_align=pck_align, root=lifter.root,
                 batch_size=batch_size, per_joint=per_joint, extra_fn=extra_fn)
    rep.refine_bones = refine_how if refined is not None else None
    rep.n_skipped = int(len(ps) - len(rows)) if max_poses is None else int((~ok).sum())
    rep.data = path
    rep.checkpoint = lifter.source
    rep.seconds = time.perf_counter() - t0
    rep.lift_seconds = src.lift_seconds
    return rep
