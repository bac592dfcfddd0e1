"""Validation metrics of the engine: P-MPJPE, N-MPJPE, MPJPE after scale alignment, and the
P-MPJPE of the depth-flipped prediction and of a zero-depth ("flat") lift (the mirror-ambiguity
monitors). Uses :mod:`fastlift.metrics` when it is installed, else the float64 versions below
(same conventions: Procrustes with det R = +1, VideoPose3D protocol #2).
"""
from __future__ import annotations

import torch

__all__ = ["p_mpjpe", "n_mpjpe", "mpjpe", "pose_metrics"]


def _local_p_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pose error (N,) after similarity Procrustes (translation, proper rotation, scale)."""
    p, t = pred.double(), target.double()
    mp, mt = p.mean(1, keepdim=True), t.mean(1, keepdim=True)
    p0, t0 = p - mp, t - mt
    np_, nt = p0.norm(dim=(1, 2), keepdim=True).clamp_min(1e-12), t0.norm(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    p0, t0 = p0 / np_, t0 / nt
    H = p0.transpose(1, 2) @ t0
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(1, 2)
    sign = torch.sign(torch.linalg.det(V @ U.transpose(1, 2)))
    V = V.clone()
    V[:, :, -1] *= sign[:, None]
    S = S.clone()
    S[:, -1] *= sign
    R = V @ U.transpose(1, 2)
    a = S.sum(1)[:, None, None] * nt / np_
    aligned = a * (p - mp) @ R.transpose(1, 2) + mt
    return (aligned - t).norm(dim=-1).mean(1)


def _local_n_mpjpe(pred, target):
    p, t = pred.double(), target.double()
    s = (p * t).sum((1, 2)) / (p * p).sum((1, 2)).clamp_min(1e-12)
    return (s[:, None, None] * p - t).norm(dim=-1).mean(1)


def _local_mpjpe(pred, target):
    return (pred.double() - target.double()).norm(dim=-1).mean(1)


def _metric(name):
    try:
        import fastlift.metrics as M  # noqa: F401
        fn = getattr(M, name)
    except (ImportError, AttributeError):
        return None
    return fn


def _mean(fn_name, local, pred, target):
    fn = _metric(fn_name)
    if fn is not None:
        try:
            v = fn(pred.double(), target.double())
            v = torch.as_tensor(v, dtype=torch.float64)
            return float(v.mean())
        except Exception:  # a signature we do not know: use ours
            pass
    return float(local(pred, target).mean())


def p_mpjpe(pred, target) -> float:
    return _mean("p_mpjpe", _local_p_mpjpe, pred, target)


def n_mpjpe(pred, target) -> float:
    return _mean("n_mpjpe", _local_n_mpjpe, pred, target)


def mpjpe(pred, target) -> float:
    return _mean("mpjpe", _local_mpjpe, pred, target)


def pose_metrics(pred: torch.Tensor, target: torch.Tensor, x2d: torch.Tensor | None = None, root: int = 0) -> dict:
    """All validation numbers (mm) of root-relative predictions (N, J, 3) in lift units against
    root-relative targets (N, J, 3) in mm:

    ``p_mpjpe``, ``n_mpjpe``; ``mpjpe_scaled``: MPJPE after one global least-squares scale over
    the whole set (the scale an unsupervised lifter lacks); ``p_mpjpe_flip``: P-MPJPE of the
    prediction with its root-relative depths negated (lower than ``p_mpjpe`` means the lifter
    prefers the mirrored pose); ``p_mpjpe_flat``: P-MPJPE of the zero-depth lift ``(x, y, 0)`` of
    the normalised 2D input ``x2d`` (N, J, 2) (the prediction with its depth zeroed when
    ``x2d`` is None): the baseline a lifter must beat."""
    pred = (pred - pred[:, root:root + 1]).double()
    target = (target - target[:, root:root + 1]).double()
    s = (pred * target).sum() / (pred * pred).sum().clamp_min(1e-12)
    flip = pred.clone()
    flip[..., 2] = -flip[..., 2]
    if x2d is not None:
        x2d = (x2d - x2d[:, root:root + 1]).double()
        flat = torch.cat([x2d, torch.zeros_like(x2d[..., :1])], -1)
    else:
        flat = pred.clone()
        flat[..., 2] = 0
    return {
        "p_mpjpe": p_mpjpe(pred, target),
        "n_mpjpe": n_mpjpe(pred, target),
        "mpjpe_scaled": float(_local_mpjpe(s * pred, target).mean()),
        "p_mpjpe_flip": p_mpjpe(flip, target),
        "p_mpjpe_flat": p_mpjpe(flat, target),
    }
