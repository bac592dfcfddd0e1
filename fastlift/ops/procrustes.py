"""Fused batched similarity Procrustes alignment (method.md, "Metrics": P-MPJPE).

For each pose ``n``, find the rotation ``R`` (``det R = +1``; any orthogonal ``R`` with
``allow_reflection=True``), scale ``s`` and translation ``t`` minimising

    sum_j w_j | s R p_j + t - q_j |^2          (p = pred[n], q = target[n], w_j >= 0)

and return the aligned prediction together with the transform. **Convention**: ``R`` acts on
column vectors, so for row-vector point sets::

    aligned = s[:, None, None] * pred @ R.transpose(-1, -2) + t[:, None, :]

(VideoPose3D's ``p_mpjpe`` computes the same alignment with ``R_vp = R^T`` applied from the right.)

Closed form (Umeyama 1991): with ``a_j = w_j / sum(w)``, centroids ``mu_p``, ``mu_q``, centred
``pc_j``, ``qc_j``, cross-covariance ``M = sum a_j qc_j pc_j^T = U diag(sig) V^T`` (signed SVD,
``det U = det V = +1``, ``|sig_3|`` smallest), ``R = U diag(1, 1, d) V^T`` (``d = -1`` only when
reflections are allowed and ``det M < 0``), ``s = tr(diag(1, 1, d) diag(sig)) / sum a_j |pc_j|^2``,
``t = mu_q - s R mu_p``.

Kernels: C++ (one pose per SIMD lane; AVX-512, AVX2 or SSE2 code chosen at run time), Triton
and CUDA (one pose per lane / thread), all in one pass over each pose, computing the 3x3 SVD branch-free with quaternion Jacobi rotations and a Givens QR
(``csrc/procrustes/procrustes_math.h``), and a hand-written backward (no autograd through an SVD:
the rotation's derivative goes through ``1 / (sig_k + sig_l)``, clamped below at ``1e-6 sig_1``
in float32, ``1e-9 sig_1`` in float64, so gradients stay finite when the rotation is not unique).
``procrustes_align_reference`` (``torch.linalg.svd``) is the oracle.

Degenerate inputs never give NaN:

* a point set whose spread is below 64 ulp (of its dtype) of its distance to the origin counts as a
  single point: all prediction points equal, a zero or collapsed target, all weights zero. Then
  ``R = I``; a collapsed prediction also gets ``s = 0`` (with ``scale=True``), so the aligned points
  are the target centroid (``s = 1`` without scale: a pure translation). Gradients through ``R``
  and ``s`` are zero there.
* collinear points (rank-1 covariance): the roll about the line is not determined; ``R`` is the
  one the SVD returns. Every roll fits equally well, and for a collinear prediction the aligned
  points do not depend on it.
* coplanar sets and reflected copies are regular: ``R`` is unique as long as ``sig_2 + sig_3 > 0``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from fastlift import _extension  # noqa: F401  (loads fastlift._C)
from fastlift.ops._backend import compute_dtype, resolve_backend

__all__ = [
    "procrustes_align",
    "procrustes_align_reference",
    "ProcrustesResult",
    "SimilarityTransform",
]

_OP = "procrustes_align"


class SimilarityTransform(NamedTuple):
    """``x -> s R x + t`` per pose: R (N, 3, 3) rotation, s (N,) scale, t (N, 3) translation."""

    R: torch.Tensor
    s: torch.Tensor
    t: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """``s * points @ R^T + t`` for points (N, J, 3)."""
        return self.s[:, None, None] * points @ self.R.transpose(-1, -2) + self.t[:, None, :]


class ProcrustesResult(NamedTuple):
    """What :func:`procrustes_align` returns; unpacks as ``aligned, (R, s, t) = ...``."""

    aligned: torch.Tensor
    transform: SimilarityTransform


def _degenerate_tol(dtype: torch.dtype) -> float:
    return 64.0 * torch.finfo(dtype).eps


def _expand_weights(weights, N, J, dtype):
    if weights is None:
        return None
    return weights.to(dtype).expand(N, J)


def _reference_impl(pred, target, scale, allow_reflection, weights, tol_dtype):
    """Everything the kernels compute, plus the SVD factors (V, sig_t) for the op's aux outputs."""
    N, J, _ = pred.shape
    dtype = pred.dtype
    w = pred.new_ones(N, J) if weights is None else _expand_weights(weights, N, J, dtype)
    sw = w.sum(1, keepdim=True)
    a = torch.where(sw > 0, w / torch.where(sw > 0, sw, torch.ones_like(sw)), torch.zeros_like(w))
    mu_p = (a[..., None] * pred).sum(1)
    mu_q = (a[..., None] * target).sum(1)
    pc = pred - mu_p[:, None]
    qc = target - mu_q[:, None]
    var_p = (a * pc.square().sum(-1)).sum(1)
    var_q = (a * qc.square().sum(-1)).sum(1)
    M = torch.einsum("nj,nji,njk->nik", a, qc, pc)
    tol2 = _degenerate_tol(tol_dtype) ** 2
    deg_p = ~(var_p > tol2 * (var_p + mu_p.square().sum(-1)))
    deg_q = ~(var_q > tol2 * (var_q + mu_q.square().sum(-1)))
    deg = deg_p | deg_q
    M = torch.where(deg[:, None, None], torch.zeros_like(M), M)
    var_p = torch.where(deg_p, torch.zeros_like(var_p), var_p)
    U, S, Vh = torch.linalg.svd(M)
    eye = torch.eye(3, dtype=dtype, device=pred.device).expand(N, 3, 3)
    if allow_reflection:
        d = torch.ones_like(S[:, 2])
    else:
        d = torch.where(torch.linalg.det(U @ Vh) < 0, -1.0, 1.0).to(dtype)
    D = torch.cat((torch.ones_like(S[:, :2]), d[:, None]), dim=1)
    R = (U * D[:, None, :]) @ Vh
    R = torch.where(deg[:, None, None], eye, R)
    sig_t = S * D
    V = torch.where(deg[:, None, None], eye, Vh.transpose(-1, -2))
    if scale:
        tau = sig_t.sum(1)
        pos = var_p > 0
        s = torch.where(pos, tau / torch.where(pos, var_p, torch.ones_like(var_p)), torch.zeros_like(tau))
    else:
        s = torch.ones_like(var_p)
    sr = s[:, None, None] * R
    t = mu_q - (sr @ mu_p[..., None])[..., 0]
    aligned = mu_q[:, None] + pc @ sr.transpose(-1, -2)
    return aligned, R, s, t, V, sig_t


def procrustes_align_reference(pred: torch.Tensor, target: torch.Tensor, scale: bool = True,
                               allow_reflection: bool = False,
                               weights: Optional[torch.Tensor] = None) -> ProcrustesResult:
    """Pure-torch alignment with ``torch.linalg.svd`` (differentiable by autograd through the SVD,
    which is NaN where singular values repeat); same contract as :func:`procrustes_align`. The
    degenerate-set threshold follows the inputs' dtype."""
    aligned, R, s, t, _, _ = _reference_impl(pred, target, scale, allow_reflection, weights, pred.dtype)
    return ProcrustesResult(aligned, SimilarityTransform(R, s, t))


# --------------------------------------------------------------------------------------- the op
def _launch_forward(pred, target, weights, scale, allow_reflection, need_aux, backend):
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.procrustes_align_forward(pred, target, weights, scale,
                                                             allow_reflection, need_aux)
    if backend == "triton":
        from fastlift.kernels.procrustes import procrustes_align_forward
        return procrustes_align_forward(pred, target, weights, scale, allow_reflection, need_aux)
    aligned, R, s, t, V, sig = _reference_impl(pred, target, scale, allow_reflection, weights, pred.dtype)
    if not need_aux:
        V, sig = V[:0], sig[:0]
    return aligned.contiguous(), R.contiguous(), s.contiguous(), t.contiguous(), V.contiguous(), sig.contiguous()


@torch.library.custom_op("fastlift::procrustes_align", mutates_args=())
def _procrustes_align_op(pred: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor],
                         scale: bool, allow_reflection: bool, need_aux: bool, backend: str
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _launch_forward(pred, target, weights, scale, allow_reflection, need_aux, backend)


@_procrustes_align_op.register_fake
def _(pred, target, weights, scale, allow_reflection, need_aux, backend):
    N = pred.shape[0]
    n_aux = N if need_aux else 0
    return (torch.empty_like(pred), pred.new_empty(N, 3, 3), pred.new_empty(N), pred.new_empty(N, 3),
            pred.new_empty(n_aux, 3, 3), pred.new_empty(n_aux, 3))


@torch.library.custom_op("fastlift::procrustes_align_backward", mutates_args=())
def _procrustes_align_backward_op(grad_aligned: Optional[torch.Tensor], grad_R: Optional[torch.Tensor],
                                  grad_s: Optional[torch.Tensor], grad_t: Optional[torch.Tensor],
                                  pred: torch.Tensor, target: torch.Tensor,
                                  weights: Optional[torch.Tensor], R: torch.Tensor, s: torch.Tensor,
                                  V: torch.Tensor, sig: torch.Tensor, scale: bool, allow_reflection: bool,
                                  backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.procrustes_align_backward(grad_aligned, grad_R, grad_s, grad_t, pred,
                                                              target, weights, R, s, V, sig, scale)
    if backend == "triton":
        from fastlift.kernels.procrustes import procrustes_align_backward
        return procrustes_align_backward(grad_aligned, grad_R, grad_s, grad_t, pred, target, weights,
                                         R, s, V, sig, scale)
    grads = [torch.zeros_like(like) if g is None else g
             for g, like in ((grad_aligned, pred), (grad_R, R), (grad_s, s), (grad_t, pred[:, 0]))]
    with torch.enable_grad():
        p = pred.detach().requires_grad_(True)
        q = target.detach().requires_grad_(True)
        out = _reference_impl(p, q, scale, allow_reflection, weights, p.dtype)[:4]
        gp, gq = torch.autograd.grad(out, (p, q), grads, allow_unused=True)
    gp = torch.zeros_like(pred) if gp is None else gp
    gq = torch.zeros_like(target) if gq is None else gq
    return gp.contiguous(), gq.contiguous()


@_procrustes_align_backward_op.register_fake
def _(grad_aligned, grad_R, grad_s, grad_t, pred, target, weights, R, s, V, sig, scale, allow_reflection, backend):
    return torch.empty_like(pred), torch.empty_like(target)


def _setup_context(ctx, inputs, output):
    pred, target, weights, scale, allow_reflection, need_aux, backend = inputs
    aligned, R, s, t, V, sig = output
    ctx.mark_non_differentiable(V, sig)
    ctx.set_materialize_grads(False)  # absent gradients reach the kernels as None (zeros), unallocated
    ctx.save_for_backward(pred, target, weights, R, s, V, sig)
    ctx.args = (scale, allow_reflection, backend)


def _backward(ctx, grad_aligned, grad_R, grad_s, grad_t, _grad_V, _grad_sig):
    pred, target, weights, R, s, V, sig = ctx.saved_tensors
    scale, allow_reflection, backend = ctx.args

    def dense(g):
        return None if g is None else g.contiguous()

    if grad_aligned is None and grad_R is None and grad_s is None and grad_t is None:
        return None, None, None, None, None, None, None
    gp, gq = _procrustes_align_backward_op(
        dense(grad_aligned), dense(grad_R), dense(grad_s), dense(grad_t),
        pred, target, weights, R, s, V, sig, scale, allow_reflection, backend)
    return gp, gq, None, None, None, None, None


_procrustes_align_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------- public
def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"fastlift.ops.{_OP}: {name} contains NaN or infinite values")


def procrustes_align(pred: torch.Tensor, target: torch.Tensor, scale: bool = True,
                     allow_reflection: bool = False, weights: Optional[torch.Tensor] = None,
                     backend: Optional[str] = None) -> ProcrustesResult:
    """Align each predicted pose to its target by a similarity transform (rotation, scale, shift).

    Args:
        pred: (N, J, 3) predicted joints (any unit; any float dtype, half precision is computed in
            float32, float64 stays float64).
        target: (N, J, 3) target joints, same shape and device as ``pred``.
        scale: fit the scale ``s`` (similarity, P-MPJPE); ``False`` keeps ``s = 1`` (rigid).
        allow_reflection: allow ``det R = -1`` (an orthogonal, not special orthogonal, ``R``). The
            default ``False`` is the P-MPJPE convention: a mirrored prediction is not undone.
        weights: optional non-negative per-joint weights (N, J) or (J,) (a bool mask works); they
            weight both the fit and the centroids. They are constants for autograd.
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or ``None`` (automatic; see
            :func:`fastlift.ops.available_backends`).

    Returns:
        ``ProcrustesResult(aligned, SimilarityTransform(R, s, t))``, unpacking as
        ``aligned, (R, s, t)``: aligned (N, J, 3) ``= s * pred @ R^T + t``, R (N, 3, 3), s (N,),
        t (N, 3). Differentiable in ``pred`` and ``target`` (hand-written backward).

    Raises:
        TypeError / ValueError naming the argument for a wrong type, shape, device, dtype, or for
        NaN / infinite coordinates and negative weights (checked in the CPU kernel; in eager mode
        with a tensor check for the other backends).
    """
    for name, v in (("pred", pred), ("target", target)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"fastlift.ops.{_OP}: {name} must be a torch.Tensor, got {type(v).__name__}")
    if pred.dim() != 3 or pred.shape[-1] != 3:
        raise ValueError(f"fastlift.ops.{_OP}: pred must have shape (N, J, 3), got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"fastlift.ops.{_OP}: target must have pred's shape {tuple(pred.shape)}, "
                         f"got {tuple(target.shape)}")
    if pred.shape[1] == 0:
        raise ValueError(f"fastlift.ops.{_OP}: pred must have at least one joint, got shape {tuple(pred.shape)}")
    if target.device != pred.device:
        raise ValueError(f"fastlift.ops.{_OP}: target is on {target.device}, pred on {pred.device}")
    dtype = compute_dtype(pred, "pred", _OP)
    if compute_dtype(target, "target", _OP) == torch.float64:
        dtype = torch.float64
    N, J, _ = pred.shape
    if weights is not None:
        if not isinstance(weights, torch.Tensor):
            raise TypeError(f"fastlift.ops.{_OP}: weights must be a torch.Tensor or None, got {type(weights).__name__}")
        if tuple(weights.shape) not in ((N, J), (J,)):
            raise ValueError(f"fastlift.ops.{_OP}: weights must have shape (N, J) = {(N, J)} or (J,) = {(J,)}, "
                             f"got {tuple(weights.shape)}")
        if weights.device != pred.device:
            raise ValueError(f"fastlift.ops.{_OP}: weights is on {weights.device}, pred on {pred.device}")
        if weights.dtype != torch.bool:
            compute_dtype(weights, "weights", _OP)
        weights = weights.detach().to(dtype).contiguous()
    scale = bool(scale)
    allow_reflection = bool(allow_reflection)
    chosen = resolve_backend(_OP, pred.device, backend)
    p = pred.to(dtype)
    q = target.to(dtype)
    if chosen != "cpu" and not torch.compiler.is_compiling():
        _check_finite("pred", p)
        _check_finite("target", q)
        if weights is not None and not bool((torch.isfinite(weights) & (weights >= 0)).all()):
            raise ValueError(f"fastlift.ops.{_OP}: weights must be finite and non-negative")
    if chosen == "reference":
        return procrustes_align_reference(p, q, scale, allow_reflection, weights)
    need_aux = torch.is_grad_enabled() and (p.requires_grad or q.requires_grad)
    aligned, R, s, t, _, _ = _procrustes_align_op(p.contiguous(), q.contiguous(), weights, scale,
                                                  allow_reflection, need_aux, chosen)
    return ProcrustesResult(aligned, SimilarityTransform(R, s, t))
