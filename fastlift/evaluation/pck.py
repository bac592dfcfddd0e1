"""Per-joint errors under a stated alignment, PCK / AUC (MPI-INF-3DHP), and grouped tables.

Every metric of fastlift is a statistic of one (N, J) array of per-joint Euclidean errors,
computed after one of these alignments of the prediction to the ground truth
(method.md, "Metrics"; :data:`ALIGNMENTS`):

=================  ===============================================================================
``"none"``         the prediction as it is (it must already be in the ground truth's frame and unit)
``"root"``         both root-centred (joint ``root``, pelvis): MPJPE, Human3.6M protocol #1
``"global_scale"`` root-centred, then ONE least-squares scale for the whole set,
                   ``s = sum <p, g> / sum <p, p>`` (or a given ``scale``): the MPJPE an
                   unsupervised lifter (no metric scale) is reported with in fastlift
``"scale"``        root-centred, then a per-pose least-squares scale ``s_i = <p_i, g_i> / <p_i, p_i>``:
                   N-MPJPE
``"procrustes"``   per-pose similarity Procrustes: translation, rotation with the reflection fixed
                   (``det R = +1``), scale; VideoPose3D convention: P-MPJPE / PA-MPJPE, protocol #2
=================  ===============================================================================

PCK and AUC follow the MPI-INF-3DHP convention: a joint is correct when its error is *strictly*
below the threshold (``err < t``, as the dataset's ``mpii_compute_3d_pck.m``), PCK is the percentage
of correct joints over all poses and joints (0..100), PCK@150mm uses ``t = 150 mm`` and AUC is the
mean PCK over the 31 thresholds ``0, 5, ..., 150 mm`` (:data:`AUC_THRESHOLDS_MM`). The alignment
is a choice: **fastlift's default for PCK/AUC is ``"procrustes"``** (an unsupervised lifter has no
metric scale and no reason to share the camera's rotation sign conventions beyond the lift), and
``align="global_scale"`` / ``"scale"`` / ``"root"`` give the stricter variants. All 17 joints count
(pass ``joints=`` for a subset, e.g. the 14 joints some 3DHP papers use).

Computation is batched torch (float32 by default, float64 when either input is float64; sums are
accumulated in float64). Procrustes uses the fused :func:`fastlift.ops.procrustes_align` when this
install has it, else the batched-SVD torch expression of :func:`procrustes_align_torch`.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "ALIGNMENTS",
    "AUC_THRESHOLDS_MM",
    "PCK_THRESHOLD_MM",
    "align_poses",
    "procrustes_align_torch",
    "global_scale",
    "joint_errors",
    "pck",
    "auc",
    "pck_curve",
    "pck_from_errors",
    "auc_from_errors",
    "grouped_table",
    "per_joint_table",
]

ALIGNMENTS = ("none", "root", "global_scale", "scale", "procrustes")
#: PCK threshold of MPI-INF-3DHP, mm.
PCK_THRESHOLD_MM = 150.0
#: The 31 thresholds of the AUC, 0..150 mm in steps of 5 mm.
AUC_THRESHOLDS_MM = np.linspace(0.0, 150.0, 31)

_EPS = 1e-12


# --------------------------------------------------------------------------------- inputs
def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(a)))
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a numeric array, got dtype {t.dtype}")
    return t


def _pair(pred, gt) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, J, 3) float tensors on one device; (J, 3) inputs become N = 1."""
    p, g = _as_tensor(pred, "pred"), _as_tensor(gt, "gt")
    if p.dim() == 2:
        p = p[None]
    if g.dim() == 2:
        g = g[None]
    if p.dim() != 3 or p.shape[-1] != 3 or p.shape != g.shape:
        raise ValueError(f"pred and gt must both have shape (N, J, 3) or (J, 3), got {tuple(p.shape)} and {tuple(g.shape)}")
    dtype = torch.float64 if torch.float64 in (p.dtype, g.dtype) else torch.float32
    g = g.to(device=p.device, dtype=dtype)
    return p.to(dtype), g


def _rowsum(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) sums, as a matrix-vector product (much faster than a small strided reduction)."""
    flat = x.reshape(x.shape[0], -1)
    return flat @ torch.ones(flat.shape[1], dtype=flat.dtype, device=flat.device)


def _check_align(align: str) -> str:
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {align!r}")
    return align


# --------------------------------------------------------------------------------- alignment
def procrustes_align_torch(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``pred`` (N, J, 3) aligned to ``gt`` by per-pose similarity Procrustes (VideoPose3D
    ``p_mpjpe``: translation, rotation with ``det R = +1``, scale). Batched SVD, no Python loop."""
    mp, mg = pred.mean(1, keepdim=True), gt.mean(1, keepdim=True)
    p0, g0 = pred - mp, gt - mg
    n_p = p0.square().sum((1, 2), keepdim=True).sqrt().clamp_min(_EPS)
    n_g = g0.square().sum((1, 2), keepdim=True).sqrt().clamp_min(_EPS)
    p0, g0 = p0 / n_p, g0 / n_g
    H = g0.transpose(1, 2) @ p0                                   # (N, 3, 3), VideoPose3D's X0^T Y0
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(1, 2)
    sign = torch.sign(torch.linalg.det(V @ U.transpose(1, 2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    fix = torch.ones_like(S)
    fix[:, -1] = sign
    V = V * fix[:, None, :]
    R = V @ U.transpose(1, 2)                                     # pred @ R rotates pred onto gt
    a = (S * fix).sum(1)[:, None, None] * n_g / n_p
    return a * (p0 * n_p) @ R + mg


def _fused_procrustes():
    try:
        from fastlift import ops
    except Exception:  # noqa: BLE001
        return None
    return getattr(ops, "procrustes_align", None)


_FUSED_FAILED: list[str] = []


def _procrustes(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    fused = _fused_procrustes()
    if fused is not None and not _FUSED_FAILED and pred.shape[0] > 0:
        try:
            out = fused(pred, gt)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, torch.Tensor) and out.shape == pred.shape:
                return out
        except ValueError:  # non-finite input: the torch expression propagates NaN instead
            pass
        except Exception as exc:  # noqa: BLE001 - e.g. an extension built before the op existed
            import warnings
            _FUSED_FAILED.append(repr(exc))
            warnings.warn(f"fastlift.ops.procrustes_align failed ({type(exc).__name__}: {exc}); using the torch "
                          f"expression for Procrustes", RuntimeWarning, stacklevel=3)
    return procrustes_align_torch(pred, gt)


def global_scale(pred, gt, root: int = 0) -> float:
    """The one least-squares scale ``s`` minimising ``sum ||s p - g||^2`` over all root-centred
    poses and joints (float64 sums)."""
    p, g = _pair(pred, gt)
    p = (p - p[:, root:root + 1]).double()
    g = (g - g[:, root:root + 1]).double()
    return float((p * g).sum() / (p * p).sum().clamp_min(_EPS))


def align_poses(pred, gt, align: str = "procrustes", root: int = 0, scale: float | None = None) -> torch.Tensor:
    """``pred`` (N, J, 3) aligned to ``gt`` (see the module docstring for ``align``).

    ``scale`` (``"global_scale"`` only): use this factor instead of fitting one; ``gt`` is
    root-centred as well for every alignment except ``"none"`` and ``"procrustes"`` (returned
    poses are then in ``gt``'s root-centred frame).
    """
    p, g = _pair(pred, gt)
    align = _check_align(align)
    if align == "none":
        return p
    if align == "procrustes":
        return _procrustes(p, g)
    p = p - p[:, root:root + 1]
    g = g - g[:, root:root + 1]
    if align == "root":
        return p
    if align == "global_scale":
        s = float((p.double() * g.double()).sum() / (p.double().square()).sum().clamp_min(_EPS)) if scale is None else float(scale)
        return p * s
    s = _rowsum(p * g) / _rowsum(p * p).clamp_min(_EPS)
    return p * s[:, None, None]


def joint_errors(pred, gt, align: str = "procrustes", root: int = 0, scale: float | None = None) -> torch.Tensor:
    """(N, J) Euclidean error of every joint after ``align`` (in ``gt``'s unit, e.g. mm)."""
    p, g = _pair(pred, gt)
    a = align_poses(p, g, align, root=root, scale=scale)
    if align in ("root", "global_scale", "scale"):
        g = g - g[:, root:root + 1]
    return torch.linalg.vector_norm(a - g, dim=-1)


# --------------------------------------------------------------------------------- PCK / AUC
def _thresholds(thresholds) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(thresholds, dtype=np.float64).reshape(-1))
    if t.numel() == 0:
        raise ValueError("thresholds must not be empty")
    if bool((t[1:] < t[:-1]).any()):
        raise ValueError("thresholds must be sorted ascending")
    return t


def _select(err: torch.Tensor, joints) -> torch.Tensor:
    err = _as_tensor(err, "errors")
    if err.dim() == 1:
        err = err[None]
    if joints is not None:
        err = err[:, torch.as_tensor(list(joints), dtype=torch.long, device=err.device)]
    return err


def pck_curve(errors, thresholds=AUC_THRESHOLDS_MM, joints: Sequence[int] | None = None) -> np.ndarray:
    """(T,) PCK in percent at each threshold, from per-joint errors (N, J): ``100 mean(err < t)``."""
    err = _select(errors, joints)
    t = _thresholds(thresholds).to(err.device)
    # number of thresholds <= err; a joint is correct at threshold k iff k >= that number
    idx = torch.searchsorted(t, err.double().reshape(-1), right=True)
    counts = torch.bincount(idx, minlength=t.numel() + 1).double()
    correct = torch.cumsum(counts, 0)[:-1]
    n = max(err.numel(), 1)
    return (100.0 * correct / n).cpu().numpy()


def pck_from_errors(errors, threshold: float = PCK_THRESHOLD_MM, joints: Sequence[int] | None = None) -> float:
    """PCK in percent: ``100 mean(err < threshold)`` over all poses and joints."""
    err = _select(errors, joints)
    if err.numel() == 0:
        return float("nan")
    return float(100.0 * (err < threshold).double().mean())


def auc_from_errors(errors, thresholds=AUC_THRESHOLDS_MM, joints: Sequence[int] | None = None) -> float:
    """AUC in percent: the mean of :func:`pck_curve` over ``thresholds`` (31 thresholds, 0..150 mm)."""
    err = _select(errors, joints)
    if err.numel() == 0:
        return float("nan")
    return float(pck_curve(err, thresholds).mean())


def pck(pred, gt, threshold: float = PCK_THRESHOLD_MM, align: str = "procrustes", root: int = 0,
        joints: Sequence[int] | None = None) -> float:
    """PCK@``threshold`` in percent (MPI-INF-3DHP: ``err < threshold``) after ``align``
    (default ``"procrustes"``; see the module docstring)."""
    return pck_from_errors(joint_errors(pred, gt, align, root=root), threshold, joints)


def auc(pred, gt, thresholds=AUC_THRESHOLDS_MM, align: str = "procrustes", root: int = 0,
        joints: Sequence[int] | None = None) -> float:
    """AUC in percent: mean PCK over ``thresholds`` (default 31 thresholds 0..150 mm) after ``align``."""
    return auc_from_errors(joint_errors(pred, gt, align, root=root), thresholds, joints)


# --------------------------------------------------------------------------------- grouped tables
def _labels(groups) -> tuple[np.ndarray, torch.Tensor]:
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"group labels must be one label per pose (N,), got shape {g.shape}")
    names, inv = np.unique(g, return_inverse=True)
    return names, torch.from_numpy(inv.reshape(-1).astype(np.int64))


def grouped_table(errors: Mapping[str, torch.Tensor], groups, pck_key: str | None = "p_mpjpe",
                  threshold: float = PCK_THRESHOLD_MM, thresholds=AUC_THRESHOLDS_MM) -> dict[str, dict[str, float]]:
    """Per-group means, batched (one ``bincount`` per metric, no per-group Python work on poses).

    Args:
        errors: metric name -> per-joint errors (N, J) (e.g. ``{"mpjpe": ..., "p_mpjpe": ...}``).
        groups: (N,) label per pose (action, subject, ...).
        pck_key: which entry of ``errors`` PCK/AUC are computed from (None: no PCK/AUC columns).

    Returns:
        ``{label: {metric: mean error, ..., "pck150": %, "auc": %, "n_poses": count}}`` sorted by label.
    """
    names, inv = _labels(groups)
    G = len(names)
    out: dict[str, dict[str, float]] = {str(n): {} for n in names}
    count = torch.bincount(inv, minlength=G).double()
    for key, err in errors.items():
        err = _as_tensor(err, key)
        if err.shape[0] != inv.shape[0]:
            raise ValueError(f"errors[{key!r}] has {err.shape[0]} poses, groups has {inv.shape[0]}")
        per_pose = err.double().mean(1).cpu()
        s = torch.bincount(inv, weights=per_pose, minlength=G)
        for i, n in enumerate(names):
            out[str(n)][key] = float(s[i] / count[i])
    if pck_key is not None and pck_key in errors:
        err = _as_tensor(errors[pck_key], pck_key).double().cpu()
        J = err.shape[1]
        t = _thresholds(thresholds)
        idx = torch.searchsorted(t, err.reshape(-1), right=True)           # (N*J,)
        gj = inv.repeat_interleave(J)
        T1 = t.numel() + 1
        counts = torch.bincount(gj * T1 + idx, minlength=G * T1).double().reshape(G, T1)
        curves = torch.cumsum(counts, 1)[:, :-1] / (count[:, None] * J)  # (G, T)
        pck_g = torch.bincount(inv, weights=(err < threshold).double().mean(1), minlength=G) / count
        for i, n in enumerate(names):
            out[str(n)]["pck150"] = float(100 * pck_g[i])
            out[str(n)]["auc"] = float(100 * curves[i].mean())
    for i, n in enumerate(names):
        out[str(n)]["n_poses"] = int(count[i])
    return out


def per_joint_table(errors: Mapping[str, torch.Tensor], joint_names: Iterable[str],
                    pck_key: str | None = "p_mpjpe", threshold: float = PCK_THRESHOLD_MM
                    ) -> dict[str, dict[str, float]]:
    """``{joint_name: {metric: mean error over poses, "pck150": %}}`` from per-joint errors (N, J)."""
    joint_names = list(joint_names)
    out: dict[str, dict[str, float]] = {j: {} for j in joint_names}
    for key, err in errors.items():
        m = _as_tensor(err, key).double().mean(0).cpu()
        if m.numel() != len(joint_names):
            raise ValueError(f"errors[{key!r}] has {m.numel()} joints, {len(joint_names)} joint names given")
        for j, name in enumerate(joint_names):
            out[name][key] = float(m[j])
    if pck_key is not None and pck_key in errors:
        p = (_as_tensor(errors[pck_key], pck_key) < threshold).double().mean(0).cpu()
        for j, name in enumerate(joint_names):
            out[name]["pck150"] = float(100 * p[j])
    return out
