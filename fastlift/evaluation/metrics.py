"""3D pose errors under a stated alignment (method.md, "Metrics"): MPJPE, N-MPJPE, P-MPJPE.

Every metric here is a weighted mean of one (N, J) array of per-joint Euclidean errors
(:func:`joint_errors`), computed after one alignment of the prediction to the target:

==============  ========================================================================  ===========
``align``       what is fitted per pose                                                   metric
==============  ========================================================================  ===========
``"none"``      nothing: the prediction must already be in the target's frame and unit
``"root"``      both root-centred (joint ``root``, pelvis in h36m17)                       MPJPE
                                                                                          (protocol #1)
``"scale"``     root-centred, then the least-squares scale ``s = <p, q>_w / <p, p>_w``     N-MPJPE
``"procrustes"`` similarity Procrustes: translation, rotation with ``det R = +1`` (a        P-MPJPE
                mirrored prediction is *not* undone), scale; VideoPose3D's ``p_mpjpe``     (protocol #2)
==============  ========================================================================  ===========

Inputs are (N, J, 3) tensors or arrays in any unit (mm for Human3.6M numbers); errors come out in
that unit. Optional ``weights`` (N, J) or (J,), non-negative, or a bool mask of valid joints:
they weight the fit (the centroids, the Procrustes fit, the least-squares scale) and the mean.
``reduction="mean"`` returns the weighted mean over all poses and joints (each valid joint counts
once; with uniform weights this is VideoPose3D's mean over poses of the per-pose mean);
``reduction="none"`` returns the (N,) per-pose weighted means (NaN for a pose whose weights are all
zero: its error is undefined). Everything is differentiable (P-MPJPE through the fused
:func:`fastlift.ops.procrustes_align` and its hand-written backward) and runs on the inputs'
device; float64 inputs stay float64, others are computed in float32 with float64 sums.

Statistics of the same per-joint errors (PCK / AUC, per-action tables) take :func:`joint_errors`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from fastlift.ops.procrustes import procrustes_align

__all__ = ["ALIGNMENTS", "REDUCTIONS", "aligned_prediction", "joint_errors", "reduce_errors",
           "mpjpe", "n_mpjpe", "p_mpjpe"]

ALIGNMENTS = ("none", "root", "scale", "procrustes")
REDUCTIONS = ("mean", "none")


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        return torch.as_tensor(np.asarray(x))
    raise TypeError(f"fastlift.metrics: {name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _inputs(pred, target, weights):
    p = _as_tensor(pred, "pred")
    q = _as_tensor(target, "target")
    if p.dim() != 3 or p.shape[-1] != 3:
        raise ValueError(f"fastlift.metrics: pred must have shape (N, J, 3), got {tuple(p.shape)}")
    if q.shape != p.shape:
        raise ValueError(f"fastlift.metrics: target must have pred's shape {tuple(p.shape)}, got {tuple(q.shape)}")
    for name, t in (("pred", p), ("target", q)):
        if not t.is_floating_point():
            raise TypeError(f"fastlift.metrics: {name} must be floating point, got {t.dtype}")
    if q.device != p.device:
        raise ValueError(f"fastlift.metrics: target is on {q.device}, pred on {p.device}")
    dtype = torch.float64 if torch.float64 in (p.dtype, q.dtype) else torch.float32
    p, q = p.to(dtype), q.to(dtype)
    N, J, _ = p.shape
    w = None
    if weights is not None:
        w = _as_tensor(weights, "weights")
        if tuple(w.shape) not in ((N, J), (J,)):
            raise ValueError(f"fastlift.metrics: weights must have shape (N, J) = {(N, J)} or (J,) = {(J,)}, "
                             f"got {tuple(w.shape)}")
        if not (w.is_floating_point() or w.dtype == torch.bool):
            raise TypeError(f"fastlift.metrics: weights must be floating point or bool, got {w.dtype}")
        w = w.to(device=p.device, dtype=dtype).detach()
    return p, q, w


def _check_root(root, J):
    if root is not None and not 0 <= int(root) < J:
        raise ValueError(f"fastlift.metrics: root={root} is not a joint index in [0, {J})")


def aligned_prediction(pred, target, align: str = "procrustes", root: Optional[int] = 0, weights=None,
                       backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(aligned_pred, target_in_the_same_frame)``, both (N, J, 3), for ``align`` in
    :data:`ALIGNMENTS`. ``"root"`` and ``"scale"`` root-centre both poses (``root=None``: no
    centring); ``"procrustes"`` leaves the target as it is."""
    if align not in ALIGNMENTS:
        raise ValueError(f"fastlift.metrics: align must be one of {', '.join(ALIGNMENTS)}, got {align!r}")
    p, q, w = _inputs(pred, target, weights)
    _check_root(root, p.shape[1])
    if align == "none":
        return p, q
    if align == "procrustes":
        return procrustes_align(p, q, scale=True, allow_reflection=False, weights=w, backend=backend).aligned, q
    if root is not None:
        p = p - p[:, root : root + 1]
        q = q - q[:, root : root + 1]
    if align == "root":
        return p, q
    wj = torch.ones_like(p[..., 0]) if w is None else w.expand(p.shape[:2])
    num = (wj[..., None] * p * q).sum((1, 2))
    den = (wj[..., None] * p * p).sum((1, 2))
    s = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return s[:, None, None] * p, q


def joint_errors(pred, target, align: str = "procrustes", root: Optional[int] = 0, weights=None,
                 backend: Optional[str] = None) -> torch.Tensor:
    """(N, J) Euclidean error of every joint after ``align`` (see the module docstring), in the
    inputs' unit. ``weights`` only weight the fit here."""
    a, q = aligned_prediction(pred, target, align, root=root, weights=weights, backend=backend)
    # a zero difference has no gradient through the norm: sqrt(x + 0) at 0 is guarded
    d2 = (a - q).square().sum(-1)
    return torch.where(d2 > 0, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), torch.zeros_like(d2))


def reduce_errors(errors: torch.Tensor, weights=None, reduction: str = "mean") -> torch.Tensor:
    """Weighted mean of per-joint errors (N, J): over everything (``"mean"``, a 0-d tensor) or per
    pose (``"none"``, (N,)). Sums in float64."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastlift.metrics: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    e = errors.double()
    if weights is None:
        w = torch.ones_like(e)
    else:
        w = _as_tensor(weights, "weights").to(device=e.device, dtype=torch.float64).expand(e.shape)
    num = (w * e).sum(1)
    den = w.sum(1)
    if reduction == "none":
        nan = torch.full_like(num, float("nan"))
        out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), nan)
    else:
        total = den.sum()
        out = num.sum() / total if e.numel() else e.sum() * float("nan")
    return out.to(errors.dtype)


def _metric(align, pred, target, root, weights, reduction, backend):
    p, q, w = _inputs(pred, target, weights)
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastlift.metrics: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    e = joint_errors(p, q, align, root=root, weights=w, backend=backend)
    return reduce_errors(e, w, reduction)


def mpjpe(pred, target, root: Optional[int] = 0, weights=None, reduction: str = "mean") -> torch.Tensor:
    """MPJPE (Human3.6M protocol #1): mean joint error after root alignment (both poses centred on
    joint ``root``; ``root=None`` compares the poses as they are).

    Args:
        pred, target: (N, J, 3) in one unit (mm).
        root: root joint index (h36m17: 0, pelvis), or None.
        weights: optional (N, J) / (J,) non-negative weights or bool mask of valid joints.
        reduction: ``"mean"`` (0-d tensor) or ``"none"`` (per-pose (N,)).
    """
    return _metric("root", pred, target, root, weights, reduction, None)


def n_mpjpe(pred, target, root: Optional[int] = 0, weights=None, reduction: str = "mean") -> torch.Tensor:
    """N-MPJPE: mean joint error after root alignment and the per-pose least-squares scale
    ``s = sum_j w_j <p_j, q_j> / sum_j w_j |p_j|^2`` of the root-centred prediction (VideoPose3D's
    ``n_mpjpe`` on root-relative poses; ``s = 0`` for an all-zero prediction). Arguments as
    :func:`mpjpe`."""
    return _metric("scale", pred, target, root, weights, reduction, None)


def p_mpjpe(pred, target, weights=None, reduction: str = "mean", backend: Optional[str] = None) -> torch.Tensor:
    """P-MPJPE / PA-MPJPE (Human3.6M protocol #2): mean joint error after per-pose similarity
    Procrustes alignment (translation, rotation with ``det R = +1``, scale; VideoPose3D convention),
    computed by the fused :func:`fastlift.ops.procrustes_align` (``backend`` as there).

    A rotated, scaled and translated copy of the target scores 0; a mirrored one does not (the
    reflection is not undone). Weights weight both the fit and the mean. Arguments as :func:`mpjpe`.
    """
    return _metric("procrustes", pred, target, None, weights, reduction, backend)
