"""Triton kernels of the fused cycle-consistency losses and the fused reprojection cycle loss.

Contracts in ``fastlift/ops/cycle_loss.py``; the math mirrors ``csrc/cycle_loss/``. Each program
reduces ``BLOCK_N`` poses to three partial sums (2D, 3D, weight) stored in a per-program buffer;
the launcher adds the partials in float64 in program order (deterministic, no atomics).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastlift.kernels.rotate_project import _blocks, _project, _project_backward, _rotate, _rotate_backward, \
    _store_matrix


@triton.jit
def _f(d, L1: tl.constexpr):
    if L1:
        return tl.abs(d)
    return d * d


@triton.jit
def _df(d, L1: tl.constexpr):
    if L1:
        return tl.where(d > 0.0, 1.0, tl.where(d < 0.0, -1.0, 0.0))
    return 2.0 * d


@triton.jit
def _weights(w_ptr, n64, j, mask, J, HAS_W: tl.constexpr):
    """(keep, w): keep = joint included (w > 0), w = its weight (0 where excluded)."""
    if HAS_W:
        w = tl.load(w_ptr + n64[:, None] * J + j[None, :], mask=mask, other=0.0)
        keep = (w > 0.0) & mask
    else:
        keep = mask
        w = tl.where(mask, 1.0, 0.0)
    return keep, tl.where(keep, w, 0.0)


@triton.jit
def _root3(Y_ptr, n64, nm, J, root):
    """The root joint's 3 coordinates, each a (BLOCK_N,) vector."""
    b = Y_ptr + n64 * J * 3 + root * 3
    return (tl.load(b, mask=nm, other=0.0), tl.load(b + 1, mask=nm, other=0.0),
            tl.load(b + 2, mask=nm, other=0.0))


@triton.jit
def _store_partials(P_ptr, s2, s3, sw):
    pid = tl.program_id(0)
    tl.store(P_ptr + pid * 3, tl.sum(tl.sum(s2, axis=1), axis=0))
    tl.store(P_ptr + pid * 3 + 1, tl.sum(tl.sum(s3, axis=1), axis=0))
    tl.store(P_ptr + pid * 3 + 2, tl.sum(tl.sum(sw, axis=1), axis=0))


@triton.jit
def _loss_fwd_kernel(X_ptr, XB_ptr, YR_ptr, YL_ptr, W_ptr, P_ptr, N, J, HAS_W: tl.constexpr, L1: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    mask = (n < N)[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    keep, w = _weights(W_ptr, n64, j, mask, J, HAS_W)
    o2 = n64[:, None] * J * 2 + j[None, :] * 2
    o3 = n64[:, None] * J * 3 + j[None, :] * 3
    e2 = _f(tl.where(keep, tl.load(X_ptr + o2, mask=keep, other=0.0) - tl.load(XB_ptr + o2, mask=keep, other=0.0), 0.0), L1)
    e2 += _f(tl.where(keep, tl.load(X_ptr + o2 + 1, mask=keep, other=0.0) - tl.load(XB_ptr + o2 + 1, mask=keep, other=0.0), 0.0), L1)
    e3 = _f(tl.where(keep, tl.load(YR_ptr + o3, mask=keep, other=0.0) - tl.load(YL_ptr + o3, mask=keep, other=0.0), 0.0), L1)
    e3 += _f(tl.where(keep, tl.load(YR_ptr + o3 + 1, mask=keep, other=0.0) - tl.load(YL_ptr + o3 + 1, mask=keep, other=0.0), 0.0), L1)
    e3 += _f(tl.where(keep, tl.load(YR_ptr + o3 + 2, mask=keep, other=0.0) - tl.load(YL_ptr + o3 + 2, mask=keep, other=0.0), 0.0), L1)
    _store_partials(P_ptr, w * e2, w * e3, w)


@triton.jit
def _loss_bwd_kernel(X_ptr, XB_ptr, YR_ptr, YL_ptr, W_ptr, K_ptr, GXB_ptr, GYL_ptr, N, J, HAS_W: tl.constexpr,
                     L1: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    mask = (n < N)[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    keep, w = _weights(W_ptr, n64, j, mask, J, HAS_W)
    k2 = tl.load(K_ptr)
    k3 = tl.load(K_ptr + 1)
    a2 = w * k2
    a3 = w * k3
    o2 = n64[:, None] * J * 2 + j[None, :] * 2
    o3 = n64[:, None] * J * 3 + j[None, :] * 3
    for i in tl.static_range(2):
        d = tl.load(XB_ptr + o2 + i, mask=keep, other=0.0) - tl.load(X_ptr + o2 + i, mask=keep, other=0.0)
        tl.store(GXB_ptr + o2 + i, tl.where(keep, a2 * _df(d, L1), 0.0), mask=mask)
    for i in tl.static_range(3):
        d = tl.load(YL_ptr + o3 + i, mask=keep, other=0.0) - tl.load(YR_ptr + o3 + i, mask=keep, other=0.0)
        tl.store(GYL_ptr + o3 + i, tl.where(keep, a3 * _df(d, L1), 0.0), mask=mask)


def _finish(partials: torch.Tensor, N: int, J: int, has_w: bool, dtype):
    """(loss_2d, loss_3d, wsum) 0-dim tensors from the per-program partial sums (float64 sum)."""
    tot = partials.double().sum(0)
    wsum = tot[2] if has_w else torch.full((), float(N * J), dtype=torch.float64, device=partials.device)
    den = wsum.clamp_min(torch.finfo(torch.float32).tiny)
    return (tot[0] / (2 * den)).to(dtype), (tot[1] / (3 * den)).to(dtype), wsum.to(dtype)


def _coefficients(grad_2d, grad_3d, wsum):
    """(k2, k3) = (g2 / (2 W), g3 / (3 W)) as a 2-element tensor (no host sync)."""
    den = wsum.double().clamp_min(torch.finfo(torch.float32).tiny)
    return torch.stack((grad_2d.double() / (2 * den), grad_3d.double() / (3 * den))).to(wsum.dtype)


def cycle_loss_forward(x, x_back, y_rot, y_relift, weights, l1):
    """Returns 0-dim (loss_2d, loss_3d, wsum); inputs contiguous, one dtype."""
    N, J, _ = x.shape
    bn, bj = _blocks(J)
    grid = max(1, triton.cdiv(N, bn))
    part = torch.zeros(grid, 3, dtype=x.dtype, device=x.device)
    if N > 0:
        _loss_fwd_kernel[(grid,)](x, x_back, y_rot, y_relift, x if weights is None else weights, part, N, J,
                                  HAS_W=weights is not None, L1=bool(l1), BLOCK_N=bn, BLOCK_J=bj)
    return _finish(part, N, J, weights is not None, x.dtype)


def cycle_loss_backward(grad_2d, grad_3d, x, x_back, y_rot, y_relift, weights, wsum, l1):
    """Returns (grad_x_back, grad_y_relift)."""
    N, J, _ = x.shape
    gxb = torch.empty_like(x_back)
    gyl = torch.empty_like(y_relift)
    if N == 0:
        return gxb, gyl
    bn, bj = _blocks(J)
    k = _coefficients(grad_2d, grad_3d, wsum)
    _loss_bwd_kernel[(triton.cdiv(N, bn),)](x, x_back, y_rot, y_relift, x if weights is None else weights, k, gxb,
                                            gyl, N, J, HAS_W=weights is not None, L1=bool(l1), BLOCK_N=bn,
                                            BLOCK_J=bj)
    return gxb, gyl


# ------------------------------------------------------------------------------------------------
# Fused reprojection cycle loss: x_back = P(R^T Y_relift) is computed in registers, never stored.


@triton.jit
def _reproject_fwd_kernel(X_ptr, YL_ptr, R_ptr, YR_ptr, W_ptr, P_ptr, N, J, root, head, c, m, eps,
                          HAS_W: tl.constexpr, L1: tl.constexpr, TRANSPOSE: tl.constexpr, RENORM: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    nm = n < N
    mask = nm[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    p0, p1, p2, q0, q1, q2, m00, m01, m02, m10, m11, m12, m20, m21, m22, y0, y1, y2 = _rotate(
        YL_ptr, n64, j, nm, mask, J, root, R_ptr, TRANSPOSE)
    xb0, xb1, a0, a1, u, sig, xr0, xr1, dx, dy, d, s = _project(q0, q1, q2, j, c, m, eps, root, head, RENORM)
    keep, w = _weights(W_ptr, n64, j, mask, J, HAS_W)
    o2 = n64[:, None] * J * 2 + j[None, :] * 2
    o3 = n64[:, None] * J * 3 + j[None, :] * 3
    e2 = _f(tl.where(keep, tl.load(X_ptr + o2, mask=keep, other=0.0) - xb0, 0.0), L1)
    e2 += _f(tl.where(keep, tl.load(X_ptr + o2 + 1, mask=keep, other=0.0) - xb1, 0.0), L1)
    # 3D compared root-relative: (Y_rot - Y_rot_root) - (Y_relift - Y_relift_root), the latter is p
    t0, t1, t2 = _root3(YR_ptr, n64, nm, J, root)
    e3 = _f(tl.where(keep, tl.load(YR_ptr + o3, mask=keep, other=0.0) - t0[:, None] - p0, 0.0), L1)
    e3 += _f(tl.where(keep, tl.load(YR_ptr + o3 + 1, mask=keep, other=0.0) - t1[:, None] - p1, 0.0), L1)
    e3 += _f(tl.where(keep, tl.load(YR_ptr + o3 + 2, mask=keep, other=0.0) - t2[:, None] - p2, 0.0), L1)
    _store_partials(P_ptr, w * e2, w * e3, w)


@triton.jit
def _reproject_bwd_kernel(X_ptr, YL_ptr, R_ptr, YR_ptr, W_ptr, K_ptr, GX_ptr, GYL_ptr, GR_ptr, GYR_ptr, P_ptr, N, J,
                          root, head, c, m, eps, HAS_W: tl.constexpr, L1: tl.constexpr, TRANSPOSE: tl.constexpr,
                          RENORM: tl.constexpr, NEED_X: tl.constexpr, NEED_YR: tl.constexpr,
                          WITH_LOSS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    """The gradients; with WITH_LOSS also the loss sums into P_ptr (the loss and its gradient in one
    pass: the residuals are the same)."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    nm = n < N
    mask = nm[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    p0, p1, p2, q0, q1, q2, m00, m01, m02, m10, m11, m12, m20, m21, m22, y0, y1, y2 = _rotate(
        YL_ptr, n64, j, nm, mask, J, root, R_ptr, TRANSPOSE)
    xb0, xb1, a0, a1, u, sig, xr0, xr1, dx, dy, d, s = _project(q0, q1, q2, j, c, m, eps, root, head, RENORM)
    keep, w = _weights(W_ptr, n64, j, mask, J, HAS_W)
    k2 = tl.load(K_ptr)
    k3 = tl.load(K_ptr + 1)
    o2 = n64[:, None] * J * 2 + j[None, :] * 2
    o3 = n64[:, None] * J * 3 + j[None, :] * 3
    r0 = xb0 - tl.load(X_ptr + o2, mask=keep, other=0.0)
    r1 = xb1 - tl.load(X_ptr + o2 + 1, mask=keep, other=0.0)
    g0 = tl.where(keep, w * k2 * _df(r0, L1), 0.0)
    g1 = tl.where(keep, w * k2 * _df(r1, L1), 0.0)
    if NEED_X:
        tl.store(GX_ptr + o2, -g0, mask=mask)
        tl.store(GX_ptr + o2 + 1, -g1, mask=mask)
    zero = q0 * 0.0
    gq0, gq1, gq2 = _project_backward(g0, g1, zero, zero, zero, a0, a1, q0, q1, u, sig, xr0, xr1, dx, dy, d, s, j,
                                      root, head, eps, RENORM)
    gy0, gy1, gy2, g00, g01, g02, g10, g11, g12, g20, g21, g22 = _rotate_backward(
        gq0, gq1, gq2, p0, p1, p2, m00, m01, m02, m10, m11, m12, m20, m21, m22, j, root)
    t0, t1, t2 = _root3(YR_ptr, n64, nm, J, root)
    v0 = p0 - (tl.load(YR_ptr + o3, mask=keep, other=0.0) - t0[:, None])
    v1 = p1 - (tl.load(YR_ptr + o3 + 1, mask=keep, other=0.0) - t1[:, None])
    v2 = p2 - (tl.load(YR_ptr + o3 + 2, mask=keep, other=0.0) - t2[:, None])
    if WITH_LOSS:
        e2 = _f(tl.where(keep, r0, 0.0), L1) + _f(tl.where(keep, r1, 0.0), L1)
        e3 = _f(tl.where(keep, v0, 0.0), L1) + _f(tl.where(keep, v1, 0.0), L1) + _f(tl.where(keep, v2, 0.0), L1)
        _store_partials(P_ptr, w * e2, w * e3, w)
    h0 = tl.where(keep, w * k3 * _df(v0, L1), 0.0)
    h1 = tl.where(keep, w * k3 * _df(v1, L1), 0.0)
    h2 = tl.where(keep, w * k3 * _df(v2, L1), 0.0)
    # root-relative comparison: the sums of the 3D gradient flow to the two roots
    is_root = (j == root)[None, :]
    hs0 = tl.where(is_root, tl.sum(h0, axis=1)[:, None], 0.0)
    hs1 = tl.where(is_root, tl.sum(h1, axis=1)[:, None], 0.0)
    hs2 = tl.where(is_root, tl.sum(h2, axis=1)[:, None], 0.0)
    tl.store(GYL_ptr + o3, gy0 + h0 - hs0, mask=mask)
    tl.store(GYL_ptr + o3 + 1, gy1 + h1 - hs1, mask=mask)
    tl.store(GYL_ptr + o3 + 2, gy2 + h2 - hs2, mask=mask)
    if NEED_YR:
        tl.store(GYR_ptr + o3, hs0 - h0, mask=mask)
        tl.store(GYR_ptr + o3 + 1, hs1 - h1, mask=mask)
        tl.store(GYR_ptr + o3 + 2, hs2 - h2, mask=mask)
    _store_matrix(GR_ptr, n64, nm, g00, g01, g02, g10, g11, g12, g20, g21, g22, TRANSPOSE)


def cycle_reproject_loss_forward(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize,
                                 head, eps):
    """Returns 0-dim (loss_2d, loss_3d, wsum)."""
    N, J, _ = x.shape
    bn, bj = _blocks(J)
    grid = max(1, triton.cdiv(N, bn))
    part = torch.zeros(grid, 3, dtype=x.dtype, device=x.device)
    if N > 0:
        _reproject_fwd_kernel[(grid,)](x, y_relift, R, y_rot, x if weights is None else weights, part, N, J, root,
                                       head, c, min_depth, eps, HAS_W=weights is not None, L1=bool(l1),
                                       TRANSPOSE=bool(transpose), RENORM=bool(renormalize), BLOCK_N=bn,
                                       BLOCK_J=bj)
    return _finish(part, N, J, weights is not None, x.dtype)


def _gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot):
    """(grad_x or empty, grad_y_relift, grad_R, grad_y_rot or empty), uninitialised."""
    return (torch.empty_like(x) if need_x else x.new_empty(0), torch.empty_like(y_relift), torch.empty_like(R),
            torch.empty_like(y_rot) if need_y_rot else y_rot.new_empty(0))


def cycle_reproject_loss_backward(grad_2d, grad_3d, x, y_relift, R, y_rot, weights, wsum, l1, c, root, transpose,
                                  min_depth, renormalize, head, eps, need_x, need_y_rot):
    """Returns (grad_x or empty, grad_y_relift, grad_R, grad_y_rot or empty)."""
    N, J, _ = x.shape
    gx, gyl, gR, gyr = _gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot)
    if N == 0:
        return gx, gyl, gR, gyr
    _launch_reproject_bwd(_coefficients(grad_2d, grad_3d, wsum), None, x, y_relift, R, y_rot, weights, l1, c, root,
                          transpose, min_depth, renormalize, head, eps, gx, gyl, gR, gyr)
    return gx, gyl, gR, gyr


def _launch_reproject_bwd(k, partials, x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth,
                          renormalize, head, eps, gx, gyl, gR, gyr):
    N, J, _ = x.shape
    bn, bj = _blocks(J)
    need_x, need_y_rot = gx.dim() == 3, gyr.dim() == 3
    _reproject_bwd_kernel[(triton.cdiv(N, bn),)](
        x, y_relift, R, y_rot, x if weights is None else weights, k, gx if need_x else gyl, gyl, gR,
        gyr if need_y_rot else gyl, gyl if partials is None else partials, N, J, root, head, c, min_depth, eps,
        HAS_W=weights is not None, L1=bool(l1), TRANSPOSE=bool(transpose), RENORM=bool(renormalize),
        NEED_X=bool(need_x), NEED_YR=bool(need_y_rot), WITH_LOSS=partials is not None, BLOCK_N=bn, BLOCK_J=bj)


def cycle_reproject_loss_forward_grad(x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize,
                                      head, eps, w_2d, w_3d, need_x, need_y_rot):
    """The loss and the gradient of w_2d loss_2d + w_3d loss_3d in one pass over the inputs (the
    weights' sum first: every gradient carries it). Returns (loss_2d, loss_3d, wsum, grad_x or
    empty, grad_y_relift, grad_R, grad_y_rot or empty), as the C++ op of the same name."""
    N, J, _ = x.shape
    gx, gyl, gR, gyr = _gradient_buffers(x, y_relift, R, y_rot, need_x, need_y_rot)
    if weights is None:
        wsum = torch.full((), float(N * J), dtype=torch.float64, device=x.device)
    else:
        wsum = torch.where(weights > 0, weights, torch.zeros((), dtype=weights.dtype, device=weights.device)).sum(
            dtype=torch.float64)
    den = wsum.clamp_min(torch.finfo(torch.float32).tiny)
    k = torch.stack((w_2d / (2 * den), w_3d / (3 * den))).to(x.dtype)
    bn, _ = _blocks(J)
    part = torch.zeros(max(1, triton.cdiv(N, bn)), 3, dtype=x.dtype, device=x.device)
    if N > 0:
        _launch_reproject_bwd(k, part, x, y_relift, R, y_rot, weights, l1, c, root, transpose, min_depth, renormalize,
                              head, eps, gx, gyl, gR, gyr)
    tot = part.double().sum(0)
    return ((tot[0] / (2 * den)).to(x.dtype), (tot[1] / (3 * den)).to(x.dtype), wsum.to(x.dtype), gx, gyl, gR,
            gyr)
