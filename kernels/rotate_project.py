"""Triton kernels of random rotation sampling and the fused rotate-and-project.

Contracts in ``fastlift/ops/rotation.py`` and ``fastlift/ops/projection.py``; the math mirrors
``csrc/rotate_project/rotate_project_math.h``. One program handles ``BLOCK_N`` poses; the joints
of a pose lie along the second block axis, so per-pose sums (root gradient, dL/dR, the
re-normalisation) are in-register reductions along that axis.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# ------------------------------------------------------------------------------------------------
# Philox 4x32-10 and rotation sampling (float64 math, as the C++ and CUDA kernels).


@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    for r in tl.static_range(10):
        if r > 0:
            k0 = k0 + 0x9E3779B9
            k1 = k1 + 0xBB67AE85
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo1 = c2 * 0xCD9E8D57
        n0 = hi1 ^ c1 ^ k0
        n2 = hi0 ^ c3 ^ k1
        c0 = n0
        c1 = lo1
        c2 = n2
        c3 = lo0
    return c0, c1, c2, c3


@triton.jit
def _uniform24(w):
    return (w >> 8).to(tl.float64) * (1.0 / 16777216.0)


@triton.jit
def _sample_rotations_kernel(R_ptr, P_ptr, prm_ptr, n, seed, offset, HAAR: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    k = offset.to(tl.uint64) + i.to(tl.uint64)
    s = seed.to(tl.uint64)
    zero = tl.zeros([BLOCK], dtype=tl.uint32)
    w0, w1, w2, w3 = _philox4x32_10((k & 0xFFFFFFFF).to(tl.uint32), (k >> 32).to(tl.uint32), zero, zero,
                                    (s & 0xFFFFFFFF).to(tl.uint32) + zero, (s >> 32).to(tl.uint32) + zero)
    u0 = _uniform24(w0)
    u1 = _uniform24(w1)
    i64 = i.to(tl.int64)
    if HAAR:
        u2 = _uniform24(w2)
        a = tl.sqrt(1.0 - u0)
        b = tl.sqrt(u0)
        t1 = 6.283185307179586 * u1
        t2 = 6.283185307179586 * u2
        qw = b * tl.cos(t2)
        qx = a * tl.sin(t1)
        qy = a * tl.cos(t1)
        qz = b * tl.sin(t2)
        tl.store(P_ptr + i64 * 4 + 0, qw, mask=ok)
        tl.store(P_ptr + i64 * 4 + 1, qx, mask=ok)
        tl.store(P_ptr + i64 * 4 + 2, qy, mask=ok)
        tl.store(P_ptr + i64 * 4 + 3, qz, mask=ok)
        r00 = 1 - 2 * (qy * qy + qz * qz)
        r01 = 2 * (qx * qy - qw * qz)
        r02 = 2 * (qx * qz + qw * qy)
        r10 = 2 * (qx * qy + qw * qz)
        r11 = 1 - 2 * (qx * qx + qz * qz)
        r12 = 2 * (qy * qz - qw * qx)
        r20 = 2 * (qx * qz - qw * qy)
        r21 = 2 * (qy * qz + qw * qx)
        r22 = 1 - 2 * (qx * qx + qy * qy)
    else:
        a0 = tl.load(prm_ptr + 0)
        aw = tl.load(prm_ptr + 1)
        e0 = tl.load(prm_ptr + 2)
        ew = tl.load(prm_ptr + 3)
        az = a0 + u0 * aw  # u0 * aw is exact in float64: one rounding, FMA or not
        el = e0 + u1 * ew
        tl.store(P_ptr + i64 * 2 + 0, az, mask=ok)
        tl.store(P_ptr + i64 * 2 + 1, el, mask=ok)
        ct = tl.cos(az)
        st = tl.sin(az)
        cp = tl.cos(el)
        sp = tl.sin(el)
        r00 = ct
        r01 = ct * 0.0
        r02 = st
        r10 = sp * st
        r11 = cp
        r12 = -sp * ct
        r20 = -cp * st
        r21 = sp
        r22 = cp * ct
    base = R_ptr + i64 * 9
    tl.store(base + 0, r00, mask=ok)
    tl.store(base + 1, r01, mask=ok)
    tl.store(base + 2, r02, mask=ok)
    tl.store(base + 3, r10, mask=ok)
    tl.store(base + 4, r11, mask=ok)
    tl.store(base + 5, r12, mask=ok)
    tl.store(base + 6, r20, mask=ok)
    tl.store(base + 7, r21, mask=ok)
    tl.store(base + 8, r22, mask=ok)


def sample_rotations(n: int, az_lo: float, az_width: float, el_lo: float, el_width: float, seed: int,
                     offset: int, haar: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (R (n, 3, 3), params (n, 2) or (n, 4)) on ``device``; see fastlift.ops.sample_rotations."""
    R = torch.empty(n, 3, 3, dtype=torch.float64, device=device)
    P = torch.empty(n, 4 if haar else 2, dtype=torch.float64, device=device)
    if n == 0:
        return R, P
    prm = torch.tensor([az_lo, az_width, el_lo, el_width], dtype=torch.float64, device=device)
    block = 128
    # fp-fusion off: the angle's single rounding must not depend on the compiler (bit-identity)
    _sample_rotations_kernel[(triton.cdiv(n, block),)](R, P, prm, n, int(seed), int(offset), HAAR=bool(haar),
                                                       BLOCK=block, enable_fp_fusion=False)
    return R, P


# ------------------------------------------------------------------------------------------------
# Rotate-and-project.


@triton.jit
def _soft_floor(t, m):
    """(Z_s = m + softplus(t), e = exp(-|t|))."""
    e = tl.exp(-tl.abs(t))
    return tl.maximum(t, 0.0) + tl.log(1.0 + e) + m, e


@triton.jit
def _load_matrix(R_ptr, n64, nm, TRANSPOSE: tl.constexpr):
    """The 9 entries of M = R (or R^T), each a (BLOCK_N,) vector, row-major."""
    b = R_ptr + n64 * 9
    r00 = tl.load(b + 0, mask=nm, other=0.0)
    r01 = tl.load(b + 1, mask=nm, other=0.0)
    r02 = tl.load(b + 2, mask=nm, other=0.0)
    r10 = tl.load(b + 3, mask=nm, other=0.0)
    r11 = tl.load(b + 4, mask=nm, other=0.0)
    r12 = tl.load(b + 5, mask=nm, other=0.0)
    r20 = tl.load(b + 6, mask=nm, other=0.0)
    r21 = tl.load(b + 7, mask=nm, other=0.0)
    r22 = tl.load(b + 8, mask=nm, other=0.0)
    if TRANSPOSE:
        return r00, r10, r20, r01, r11, r21, r02, r12, r22
    return r00, r01, r02, r10, r11, r12, r20, r21, r22


@triton.jit
def _store_matrix(G_ptr, n64, nm, g00, g01, g02, g10, g11, g12, g20, g21, g22, TRANSPOSE: tl.constexpr):
    """Stores dL/dR from dL/dM (transposed back when M = R^T)."""
    b = G_ptr + n64 * 9
    if TRANSPOSE:
        tl.store(b + 0, g00, mask=nm)
        tl.store(b + 1, g10, mask=nm)
        tl.store(b + 2, g20, mask=nm)
        tl.store(b + 3, g01, mask=nm)
        tl.store(b + 4, g11, mask=nm)
        tl.store(b + 5, g21, mask=nm)
        tl.store(b + 6, g02, mask=nm)
        tl.store(b + 7, g12, mask=nm)
        tl.store(b + 8, g22, mask=nm)
    else:
        tl.store(b + 0, g00, mask=nm)
        tl.store(b + 1, g01, mask=nm)
        tl.store(b + 2, g02, mask=nm)
        tl.store(b + 3, g10, mask=nm)
        tl.store(b + 4, g11, mask=nm)
        tl.store(b + 5, g12, mask=nm)
        tl.store(b + 6, g20, mask=nm)
        tl.store(b + 7, g21, mask=nm)
        tl.store(b + 8, g22, mask=nm)


@triton.jit
def _pick(v, j, idx):
    """v[:, idx] as a (BLOCK_N,) vector (a masked sum along the joint axis)."""
    return tl.sum(tl.where((j == idx)[None, :], v, 0.0), axis=1)


@triton.jit
def _rotate(Y_ptr, n64, j, nm, mask, J, root, R_ptr, TRANSPOSE: tl.constexpr):
    """Loads a block of poses and rotates it: p = Y - Y_root, q = M p (all (BLOCK_N, BLOCK_J)); also
    returns M's entries and the raw Y."""
    base = n64 * J * 3
    offs = base[:, None] + j[None, :] * 3
    y0 = tl.load(Y_ptr + offs, mask=mask, other=0.0)
    y1 = tl.load(Y_ptr + offs + 1, mask=mask, other=0.0)
    y2 = tl.load(Y_ptr + offs + 2, mask=mask, other=0.0)
    r0 = tl.load(Y_ptr + base + root * 3, mask=nm, other=0.0)
    r1 = tl.load(Y_ptr + base + root * 3 + 1, mask=nm, other=0.0)
    r2 = tl.load(Y_ptr + base + root * 3 + 2, mask=nm, other=0.0)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = _load_matrix(R_ptr, n64, nm, TRANSPOSE)
    p0 = tl.where(mask, y0 - r0[:, None], 0.0)
    p1 = tl.where(mask, y1 - r1[:, None], 0.0)
    p2 = tl.where(mask, y2 - r2[:, None], 0.0)
    q0 = m00[:, None] * p0 + m01[:, None] * p1 + m02[:, None] * p2
    q1 = m10[:, None] * p0 + m11[:, None] * p1 + m12[:, None] * p2
    q2 = m20[:, None] * p0 + m21[:, None] * p1 + m22[:, None] * p2
    return p0, p1, p2, q0, q1, q2, m00, m01, m02, m10, m11, m12, m20, m21, m22, y0, y1, y2


@triton.jit
def _project(q0, q1, q2, j, c, m, eps, root, head, RENORM: tl.constexpr):
    """(x0, x1) = projection (re-normalised with RENORM), u = 1/Z_s, sig = dZ_s/dt, x before the
    re-normalisation (p0, p1), its root (xr0, xr1), head offset (dx, dy), distance d and scale s."""
    zs, e = _soft_floor(q2 + (c - m), m)
    u = 1.0 / zs
    sig = tl.where(q2 + (c - m) >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
    a0 = q0 * u
    a1 = q1 * u
    if RENORM:
        xr0 = _pick(a0, j, root)
        xr1 = _pick(a1, j, root)
        dx = _pick(a0, j, head) - xr0
        dy = _pick(a1, j, head) - xr1
        d = tl.sqrt(dx * dx + dy * dy)
        s = 1.0 / (c * tl.maximum(d, eps))
        x0 = (a0 - xr0[:, None]) * s[:, None]
        x1 = (a1 - xr1[:, None]) * s[:, None]
    else:
        xr0 = tl.sum(a0, axis=1) * 0.0
        xr1 = xr0
        dx = xr0
        dy = xr0
        d = xr0
        s = xr0 + 1.0
        x0 = a0
        x1 = a1
    return x0, x1, a0, a1, u, sig, xr0, xr1, dx, dy, d, s


@triton.jit
def _project_backward(g0, g1, gq0, gq1, gq2, a0, a1, q0, q1, u, sig, xr0, xr1, dx, dy, d, s, j, root, head,
                      eps, RENORM: tl.constexpr):
    """Adds the gradient of the (re-normalised) projection with output gradient (g0, g1) to gq."""
    if RENORM:
        sum0 = tl.sum(g0, axis=1)
        sum1 = tl.sum(g1, axis=1)
        g_s = tl.sum(g0 * (a0 - xr0[:, None]) + g1 * (a1 - xr1[:, None]), axis=1)
        k = tl.where(d > eps, -g_s * s / tl.where(d > eps, d * d, 1.0), 0.0)
        kx = k * dx
        ky = k * dy
        is_root = (j == root)[None, :]
        is_head = (j == head)[None, :]
        g0 = g0 * s[:, None] - tl.where(is_root, (sum0 * s + kx)[:, None], 0.0) + tl.where(is_head, kx[:, None], 0.0)
        g1 = g1 * s[:, None] - tl.where(is_root, (sum1 * s + ky)[:, None], 0.0) + tl.where(is_head, ky[:, None], 0.0)
    b0 = g0 * u
    b1 = g1 * u
    return gq0 + b0, gq1 + b1, gq2 - (b0 * q0 + b1 * q1) * u * sig


@triton.jit
def _rotate_backward(gq0, gq1, gq2, p0, p1, p2, m00, m01, m02, m10, m11, m12, m20, m21, m22, j, root):
    """dL/dY (root-centring included) and dL/dM (9 (BLOCK_N,) vectors) from dL/dq."""
    gp0 = m00[:, None] * gq0 + m10[:, None] * gq1 + m20[:, None] * gq2
    gp1 = m01[:, None] * gq0 + m11[:, None] * gq1 + m21[:, None] * gq2
    gp2 = m02[:, None] * gq0 + m12[:, None] * gq1 + m22[:, None] * gq2
    is_root = (j == root)[None, :]
    gy0 = gp0 - tl.where(is_root, tl.sum(gp0, axis=1)[:, None], 0.0)
    gy1 = gp1 - tl.where(is_root, tl.sum(gp1, axis=1)[:, None], 0.0)
    gy2 = gp2 - tl.where(is_root, tl.sum(gp2, axis=1)[:, None], 0.0)
    g00 = tl.sum(gq0 * p0, axis=1)
    g01 = tl.sum(gq0 * p1, axis=1)
    g02 = tl.sum(gq0 * p2, axis=1)
    g10 = tl.sum(gq1 * p0, axis=1)
    g11 = tl.sum(gq1 * p1, axis=1)
    g12 = tl.sum(gq1 * p2, axis=1)
    g20 = tl.sum(gq2 * p0, axis=1)
    g21 = tl.sum(gq2 * p1, axis=1)
    g22 = tl.sum(gq2 * p2, axis=1)
    return gy0, gy1, gy2, g00, g01, g02, g10, g11, g12, g20, g21, g22


@triton.jit
def _rp_fwd_kernel(Y_ptr, R_ptr, X_ptr, YR_ptr, N, J, root, head, c, m, eps, TRANSPOSE: tl.constexpr,
                   RENORM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    nm = n < N
    mask = nm[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    p0, p1, p2, q0, q1, q2, m00, m01, m02, m10, m11, m12, m20, m21, m22, y0, y1, y2 = _rotate(
        Y_ptr, n64, j, nm, mask, J, root, R_ptr, TRANSPOSE)
    offs3 = n64[:, None] * J * 3 + j[None, :] * 3
    tl.store(YR_ptr + offs3, q0, mask=mask)
    tl.store(YR_ptr + offs3 + 1, q1, mask=mask)
    tl.store(YR_ptr + offs3 + 2, q2, mask=mask)
    x0, x1, a0, a1, u, sig, xr0, xr1, dx, dy, d, s = _project(q0, q1, q2, j, c, m, eps, root, head, RENORM)
    offs2 = n64[:, None] * J * 2 + j[None, :] * 2
    tl.store(X_ptr + offs2, x0, mask=mask)
    tl.store(X_ptr + offs2 + 1, x1, mask=mask)


@triton.jit
def _rp_bwd_kernel(G2_ptr, G3_ptr, Y_ptr, R_ptr, GY_ptr, GR_ptr, N, J, root, head, c, m, eps,
                   HAS_G2: tl.constexpr, HAS_G3: tl.constexpr, TRANSPOSE: tl.constexpr, RENORM: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    nm = n < N
    mask = nm[:, None] & (j < J)[None, :]
    n64 = n.to(tl.int64)
    p0, p1, p2, q0, q1, q2, m00, m01, m02, m10, m11, m12, m20, m21, m22, y0, y1, y2 = _rotate(
        Y_ptr, n64, j, nm, mask, J, root, R_ptr, TRANSPOSE)
    offs3 = n64[:, None] * J * 3 + j[None, :] * 3
    offs2 = n64[:, None] * J * 2 + j[None, :] * 2
    if HAS_G3:
        gq0 = tl.load(G3_ptr + offs3, mask=mask, other=0.0)
        gq1 = tl.load(G3_ptr + offs3 + 1, mask=mask, other=0.0)
        gq2 = tl.load(G3_ptr + offs3 + 2, mask=mask, other=0.0)
    else:
        gq0 = q0 * 0.0
        gq1 = gq0
        gq2 = gq0
    if HAS_G2:
        x0, x1, a0, a1, u, sig, xr0, xr1, dx, dy, d, s = _project(q0, q1, q2, j, c, m, eps, root, head, RENORM)
        g0 = tl.load(G2_ptr + offs2, mask=mask, other=0.0)
        g1 = tl.load(G2_ptr + offs2 + 1, mask=mask, other=0.0)
        gq0, gq1, gq2 = _project_backward(g0, g1, gq0, gq1, gq2, a0, a1, q0, q1, u, sig, xr0, xr1, dx, dy, d, s,
                                          j, root, head, eps, RENORM)
    gy0, gy1, gy2, g00, g01, g02, g10, g11, g12, g20, g21, g22 = _rotate_backward(
        gq0, gq1, gq2, p0, p1, p2, m00, m01, m02, m10, m11, m12, m20, m21, m22, j, root)
    tl.store(GY_ptr + offs3, gy0, mask=mask)
    tl.store(GY_ptr + offs3 + 1, gy1, mask=mask)
    tl.store(GY_ptr + offs3 + 2, gy2, mask=mask)
    _store_matrix(GR_ptr, n64, nm, g00, g01, g02, g10, g11, g12, g20, g21, g22, TRANSPOSE)


def _blocks(J: int) -> tuple[int, int]:
    block_j = triton.next_power_of_2(max(J, 1))
    return max(1, min(64, 2048 // block_j)), block_j


def rotate_project_forward(Y, R, c, root, transpose, min_depth, renormalize, head, eps):
    """Y (N, J, 3), R (N, 3, 3) contiguous. Returns (x2d (N, J, 2), Y_rot (N, J, 3))."""
    N, J, _ = Y.shape
    x2d = Y.new_empty(N, J, 2)
    yrot = torch.empty_like(Y)
    if N == 0:
        return x2d, yrot
    bn, bj = _blocks(J)
    _rp_fwd_kernel[(triton.cdiv(N, bn),)](Y, R, x2d, yrot, N, J, root, head, c, min_depth, eps,
                                          TRANSPOSE=bool(transpose), RENORM=bool(renormalize),
                                          BLOCK_N=bn, BLOCK_J=bj)
    return x2d, yrot


def rotate_project_backward(grad_x2d, grad_yrot, Y, R, c, root, transpose, min_depth, renormalize, head, eps):
    """(grad_Y, grad_R); grad_x2d / grad_yrot may be None (zero)."""
    N, J, _ = Y.shape
    gY = torch.empty_like(Y)
    gR = torch.empty_like(R)
    if N == 0:
        return gY, gR
    bn, bj = _blocks(J)
    _rp_bwd_kernel[(triton.cdiv(N, bn),)](
        Y if grad_x2d is None else grad_x2d, Y if grad_yrot is None else grad_yrot, Y, R, gY, gR, N, J, root, head,
        c, min_depth, eps, HAS_G2=grad_x2d is not None, HAS_G3=grad_yrot is not None, TRANSPOSE=bool(transpose),
        RENORM=bool(renormalize), BLOCK_N=bn, BLOCK_J=bj)
    return gY, gR
