"""Triton kernels of the fused batched similarity Procrustes alignment (forward and hand-written
backward); the math of ``csrc/procrustes/procrustes_math.h`` (see it and
``fastlift.ops.procrustes`` for the conventions).

One program aligns ``BLOCK_N`` poses: the joints of a pose lie along the second block axis (the
per-pose sums are ``tl.sum`` over it) and the 3x3 part (one-sided Jacobi with quaternion
accumulation, column sort, Givens QR, reflection fix, scale) is elementwise over the ``BLOCK_N``
poses, one pose per lane, in registers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Per dtype: (Jacobi sweeps, skip threshold of a Jacobi rotation, QR pivot floor, gradient floor,
# relative spread of a degenerate point set). Same values as SvdConsts / DegenerateTol in C++.
_CONSTS = {
    torch.float32: (4, 1e-36, 1e-18, 1e-6, 64 * 1.1920929e-07),
    torch.float64: (5, 1e-300, 1e-150, 1e-9, 64 * 2.220446049250313e-16),
}


@triton.jit
def _jacobi_pair(p0, p1, p2, q0, q1, q2, TINY: tl.constexpr):
    """Exact one-sided Jacobi rotation of columns p, q (zeroes p.q); returns them and the half-angle
    quaternion components (ch, sh)."""
    alpha = p0 * p0 + p1 * p1 + p2 * p2
    beta = q0 * q0 + q1 * q1 + q2 * q2
    gamma = p0 * q0 + p1 * q1 + p2 * q2
    x = alpha - beta
    y = gamma + gamma
    r = tl.sqrt(x * x + y * y)
    a = r + tl.abs(x)
    bb = tl.where(x < 0, -y, y)
    rho = tl.sqrt(a * a + bb * bb)
    ch = rho + a
    sh = bb
    n2 = ch * ch + sh * sh
    ok = n2 > TINY
    inv = 1.0 / tl.sqrt(tl.where(ok, n2, 1.0))
    ch = tl.where(ok, ch * inv, 1.0)
    sh = tl.where(ok, sh * inv, 0.0)
    c = ch * ch - sh * sh
    s = 2.0 * ch * sh
    return c * p0 + s * q0, c * p1 + s * q1, c * p2 + s * q2, c * q0 - s * p0, c * q1 - s * p1, c * q2 - s * p2, ch, sh


@triton.jit
def _neg_swap(c, x0, x1, x2, y0, y1, y2):
    """Where c: (x, y) <- (y, -x) (column swap that keeps the determinant)."""
    return (tl.where(c, y0, x0), tl.where(c, y1, x1), tl.where(c, y2, x2),
            tl.where(c, -x0, y0), tl.where(c, -x1, y1), tl.where(c, -x2, y2))


@triton.jit
def _qr_cs(a1, a2, QR_EPS: tl.constexpr):
    """Givens (c, s) zeroing a2 against the pivot a1, the pivot made non-negative."""
    rho = tl.sqrt(a1 * a1 + a2 * a2)
    big = rho > QR_EPS
    sh0 = tl.where(big, a2, 0.0)
    ch0 = tl.abs(a1) + tl.where(big, rho, QR_EPS)
    neg = a1 < 0
    ch = tl.where(neg, sh0, ch0)
    sh = tl.where(neg, ch0, sh0)
    inv = 1.0 / tl.sqrt(ch * ch + sh * sh)
    ch = ch * inv
    sh = sh * inv
    return ch * ch - sh * sh, 2.0 * ch * sh


@triton.jit
def _rot(xp, xq, c, s):
    return c * xp + s * xq, c * xq - s * xp


@triton.jit
def _similarity(m00, m01, m02, m10, m11, m12, m20, m21, m22, var_p,
                REFL: tl.constexpr, SCALE: tl.constexpr, SWEEPS: tl.constexpr,
                TINY: tl.constexpr, QR_EPS: tl.constexpr):
    """Rotation R, scale s, and the SVD's V and signed singular values (reflection applied)."""
    mx = tl.maximum(tl.maximum(tl.maximum(tl.abs(m00), tl.abs(m01)), tl.maximum(tl.abs(m02), tl.abs(m10))),
                    tl.maximum(tl.maximum(tl.abs(m11), tl.abs(m12)), tl.maximum(tl.abs(m20), tl.abs(m21))))
    mx = tl.maximum(mx, tl.abs(m22))
    nz = mx > 0
    inv = tl.where(nz, 1.0 / tl.where(nz, mx, 1.0), 0.0)
    a00 = m00 * inv
    a01 = m01 * inv
    a02 = m02 * inv
    a10 = m10 * inv
    a11 = m11 * inv
    a12 = m12 * inv
    a20 = m20 * inv
    a21 = m21 * inv
    a22 = m22 * inv
    b00, b01, b02, b10, b11, b12, b20, b21, b22 = a00, a01, a02, a10, a11, a12, a20, a21, a22
    qw = tl.full(m00.shape, 1.0, m00.dtype)
    qx = tl.zeros(m00.shape, m00.dtype)
    qy = tl.zeros(m00.shape, m00.dtype)
    qz = tl.zeros(m00.shape, m00.dtype)
    for _ in tl.static_range(SWEEPS):
        b00, b10, b20, b01, b11, b21, ch, sh = _jacobi_pair(b00, b10, b20, b01, b11, b21, TINY)
        qw, qx, qy, qz = ch * qw - sh * qz, ch * qx + sh * qy, ch * qy - sh * qx, ch * qz + sh * qw
        b01, b11, b21, b02, b12, b22, ch, sh = _jacobi_pair(b01, b11, b21, b02, b12, b22, TINY)
        qw, qx, qy, qz = ch * qw - sh * qx, ch * qx + sh * qw, ch * qy + sh * qz, ch * qz - sh * qy
        b02, b12, b22, b00, b10, b20, ch, sh = _jacobi_pair(b02, b12, b22, b00, b10, b20, TINY)
        qw, qx, qy, qz = ch * qw - sh * qy, ch * qx - sh * qz, ch * qy + sh * qw, ch * qz + sh * qx
    k = 1.0 / (qw * qw + qx * qx + qy * qy + qz * qz)
    ww = qw * qw * k
    xx = qx * qx * k
    yy = qy * qy * k
    zz = qz * qz * k
    xy = 2.0 * qx * qy * k
    xz = 2.0 * qx * qz * k
    yz = 2.0 * qy * qz * k
    wx = 2.0 * qw * qx * k
    wy = 2.0 * qw * qy * k
    wz = 2.0 * qw * qz * k
    v00 = ww + xx - yy - zz
    v01 = xy - wz
    v02 = xz + wy
    v10 = xy + wz
    v11 = ww - xx + yy - zz
    v12 = yz - wx
    v20 = xz - wy
    v21 = yz + wx
    v22 = ww - xx - yy + zz
    # B = A V, consistent with V
    b00 = a00 * v00 + a01 * v10 + a02 * v20
    b01 = a00 * v01 + a01 * v11 + a02 * v21
    b02 = a00 * v02 + a01 * v12 + a02 * v22
    b10 = a10 * v00 + a11 * v10 + a12 * v20
    b11 = a10 * v01 + a11 * v11 + a12 * v21
    b12 = a10 * v02 + a11 * v12 + a12 * v22
    b20 = a20 * v00 + a21 * v10 + a22 * v20
    b21 = a20 * v01 + a21 * v11 + a22 * v21
    b22 = a20 * v02 + a21 * v12 + a22 * v22
    # columns by decreasing norm
    n0 = b00 * b00 + b10 * b10 + b20 * b20
    n1 = b01 * b01 + b11 * b11 + b21 * b21
    n2 = b02 * b02 + b12 * b12 + b22 * b22
    c = n0 < n1
    b00, b10, b20, b01, b11, b21 = _neg_swap(c, b00, b10, b20, b01, b11, b21)
    v00, v10, v20, v01, v11, v21 = _neg_swap(c, v00, v10, v20, v01, v11, v21)
    n0, n1 = tl.where(c, n1, n0), tl.where(c, n0, n1)
    c = n0 < n2
    b00, b10, b20, b02, b12, b22 = _neg_swap(c, b00, b10, b20, b02, b12, b22)
    v00, v10, v20, v02, v12, v22 = _neg_swap(c, v00, v10, v20, v02, v12, v22)
    n0, n2 = tl.where(c, n2, n0), tl.where(c, n0, n2)
    c = n1 < n2
    b01, b11, b21, b02, b12, b22 = _neg_swap(c, b01, b11, b21, b02, b12, b22)
    v01, v11, v21, v02, v12, v22 = _neg_swap(c, v01, v11, v21, v02, v12, v22)
    # QR by Givens rotations: B = U R, U = Q1^T Q2^T Q3^T (rotations on U's columns)
    one = tl.full(m00.shape, 1.0, m00.dtype)
    zero = tl.zeros(m00.shape, m00.dtype)
    u00, u01, u02, u10, u11, u12, u20, u21, u22 = one, zero, zero, zero, one, zero, zero, zero, one
    cs, sn = _qr_cs(b00, b10, QR_EPS)
    b00, b10 = _rot(b00, b10, cs, sn)
    b01, b11 = _rot(b01, b11, cs, sn)
    b02, b12 = _rot(b02, b12, cs, sn)
    u00, u01 = _rot(u00, u01, cs, sn)
    u10, u11 = _rot(u10, u11, cs, sn)
    u20, u21 = _rot(u20, u21, cs, sn)
    cs, sn = _qr_cs(b00, b20, QR_EPS)
    b00, b20 = _rot(b00, b20, cs, sn)
    b01, b21 = _rot(b01, b21, cs, sn)
    b02, b22 = _rot(b02, b22, cs, sn)
    u00, u02 = _rot(u00, u02, cs, sn)
    u10, u12 = _rot(u10, u12, cs, sn)
    u20, u22 = _rot(u20, u22, cs, sn)
    cs, sn = _qr_cs(b11, b21, QR_EPS)
    b11, b21 = _rot(b11, b21, cs, sn)
    b12, b22 = _rot(b12, b22, cs, sn)
    u01, u02 = _rot(u01, u02, cs, sn)
    u11, u12 = _rot(u11, u12, cs, sn)
    u21, u22 = _rot(u21, u22, cs, sn)
    if REFL:
        d = tl.where(b22 < 0, -1.0, 1.0)
    else:
        d = one
    u02 = u02 * d
    u12 = u12 * d
    u22 = u22 * d
    s0 = b00 * mx
    s1 = b11 * mx
    s2 = b22 * d * mx
    r00 = u00 * v00 + u01 * v01 + u02 * v02
    r01 = u00 * v10 + u01 * v11 + u02 * v12
    r02 = u00 * v20 + u01 * v21 + u02 * v22
    r10 = u10 * v00 + u11 * v01 + u12 * v02
    r11 = u10 * v10 + u11 * v11 + u12 * v12
    r12 = u10 * v20 + u11 * v21 + u12 * v22
    r20 = u20 * v00 + u21 * v01 + u22 * v02
    r21 = u20 * v10 + u21 * v11 + u22 * v12
    r22 = u20 * v20 + u21 * v21 + u22 * v22
    if SCALE:
        pos = var_p > 0
        s = tl.where(pos, (s0 + s1 + s2) / tl.where(pos, var_p, 1.0), 0.0)
    else:
        s = one
    return (r00, r01, r02, r10, r11, r12, r20, r21, r22, s,
            v00, v01, v02, v10, v11, v12, v20, v21, v22, s0, s1, s2)


@triton.jit
def _load_pose(ptr, offs, mask):
    x = tl.load(ptr + offs, mask=mask, other=0.0)
    y = tl.load(ptr + offs + 1, mask=mask, other=0.0)
    z = tl.load(ptr + offs + 2, mask=mask, other=0.0)
    return x, y, z


@triton.jit
def _centre(p_ptr, q_ptr, w_ptr, N, J, w_stride, HAS_W: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_J: tl.constexpr):
    """This program's block of pose pairs, loaded and centred on their weighted centroids (forward
    and backward share it). Returns (pose index (BLOCK_N,) int64, its mask, joint index (BLOCK_J,),
    element mask, offsets, w, 1/sum(w), mu_p (3), mu_q (3), a = w/sum(w), p - mu_p (3),
    q - mu_q (3)); per-joint values are (BLOCK_N, BLOCK_J), masked joints have weight 0."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    jj = tl.arange(0, BLOCK_J)
    n_ok = n < N
    mask = n_ok[:, None] & (jj < J)[None, :]
    n64 = n.to(tl.int64)
    offs = n64[:, None] * J * 3 + jj[None, :] * 3
    px, py, pz = _load_pose(p_ptr, offs, mask)
    qx, qy, qz = _load_pose(q_ptr, offs, mask)
    if HAS_W:
        w = tl.load(w_ptr + n64[:, None] * w_stride + jj[None, :], mask=mask, other=0.0)
    else:
        w = tl.where(mask, 1.0, 0.0).to(px.dtype)
    sw = tl.sum(w, axis=1)
    pos = sw > 0
    inv_w = tl.where(pos, 1.0 / tl.where(pos, sw, 1.0), 0.0)
    # centring through the first joint o: pc = (p - o) - (mu - o), exact differences for nearby points
    o = n64 * J * 3
    opx, opy, opz = _load_pose(p_ptr, o, n_ok)
    oqx, oqy, oqz = _load_pose(q_ptr, o, n_ok)
    px = px - opx[:, None]
    py = py - opy[:, None]
    pz = pz - opz[:, None]
    qx = qx - oqx[:, None]
    qy = qy - oqy[:, None]
    qz = qz - oqz[:, None]
    dpx = tl.sum(w * px, axis=1) * inv_w
    dpy = tl.sum(w * py, axis=1) * inv_w
    dpz = tl.sum(w * pz, axis=1) * inv_w
    dqx = tl.sum(w * qx, axis=1) * inv_w
    dqy = tl.sum(w * qy, axis=1) * inv_w
    dqz = tl.sum(w * qz, axis=1) * inv_w
    mpx = opx + dpx
    mpy = opy + dpy
    mpz = opz + dpz
    mqx = oqx + dqx
    mqy = oqy + dqy
    mqz = oqz + dqz
    a = w * inv_w[:, None]
    pcx = px - dpx[:, None]
    pcy = py - dpy[:, None]
    pcz = pz - dpz[:, None]
    qcx = qx - dqx[:, None]
    qcy = qy - dqy[:, None]
    qcz = qz - dqz[:, None]
    return (n64, n_ok, jj, mask, offs, w, inv_w, mpx, mpy, mpz, mqx, mqy, mqz, a,
            pcx, pcy, pcz, qcx, qcy, qcz)


@triton.jit
def _fwd_kernel(p_ptr, q_ptr, w_ptr, out_ptr, r_ptr, s_ptr, t_ptr, v_ptr, sig_ptr,
                N, J, w_stride, tol2,
                HAS_W: tl.constexpr, SCALE: tl.constexpr, REFL: tl.constexpr, NEED_AUX: tl.constexpr,
                SWEEPS: tl.constexpr, TINY: tl.constexpr, QR_EPS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    (n64, n_ok, jj, mask, offs, w, inv_w, mpx, mpy, mpz, mqx, mqy, mqz, a,
     pcx, pcy, pcz, qcx, qcy, qcz) = _centre(p_ptr, q_ptr, w_ptr, N, J, w_stride, HAS_W, BLOCK_N, BLOCK_J)
    apx = a * pcx
    apy = a * pcy
    apz = a * pcz
    var_p = tl.sum(apx * pcx + apy * pcy + apz * pcz, axis=1)
    var_q = tl.sum(a * (qcx * qcx + qcy * qcy + qcz * qcz), axis=1)
    m00 = tl.sum(qcx * apx, axis=1)
    m01 = tl.sum(qcx * apy, axis=1)
    m02 = tl.sum(qcx * apz, axis=1)
    m10 = tl.sum(qcy * apx, axis=1)
    m11 = tl.sum(qcy * apy, axis=1)
    m12 = tl.sum(qcy * apz, axis=1)
    m20 = tl.sum(qcz * apx, axis=1)
    m21 = tl.sum(qcz * apy, axis=1)
    m22 = tl.sum(qcz * apz, axis=1)
    # degenerate point sets: M := 0 (R = I), collapsed prediction: var_p := 0 (s = 0)
    ok_p = var_p > tol2 * (var_p + mpx * mpx + mpy * mpy + mpz * mpz)
    ok_q = var_q > tol2 * (var_q + mqx * mqx + mqy * mqy + mqz * mqz)
    ok = ok_p & ok_q
    m00 = tl.where(ok, m00, 0.0)
    m01 = tl.where(ok, m01, 0.0)
    m02 = tl.where(ok, m02, 0.0)
    m10 = tl.where(ok, m10, 0.0)
    m11 = tl.where(ok, m11, 0.0)
    m12 = tl.where(ok, m12, 0.0)
    m20 = tl.where(ok, m20, 0.0)
    m21 = tl.where(ok, m21, 0.0)
    m22 = tl.where(ok, m22, 0.0)
    var_p = tl.where(ok_p, var_p, 0.0)
    (r00, r01, r02, r10, r11, r12, r20, r21, r22, s,
     v00, v01, v02, v10, v11, v12, v20, v21, v22, s0, s1, s2) = _similarity(
        m00, m01, m02, m10, m11, m12, m20, m21, m22, var_p, REFL, SCALE, SWEEPS, TINY, QR_EPS)
    tx = mqx - s * (r00 * mpx + r01 * mpy + r02 * mpz)
    ty = mqy - s * (r10 * mpx + r11 * mpy + r12 * mpz)
    tz = mqz - s * (r20 * mpx + r21 * mpy + r22 * mpz)
    ox = mqx[:, None] + (s * r00)[:, None] * pcx + (s * r01)[:, None] * pcy + (s * r02)[:, None] * pcz
    oy = mqy[:, None] + (s * r10)[:, None] * pcx + (s * r11)[:, None] * pcy + (s * r12)[:, None] * pcz
    oz = mqz[:, None] + (s * r20)[:, None] * pcx + (s * r21)[:, None] * pcy + (s * r22)[:, None] * pcz
    tl.store(out_ptr + offs, ox, mask=mask)
    tl.store(out_ptr + offs + 1, oy, mask=mask)
    tl.store(out_ptr + offs + 2, oz, mask=mask)
    rb = r_ptr + n64 * 9
    tl.store(rb, r00, mask=n_ok)
    tl.store(rb + 1, r01, mask=n_ok)
    tl.store(rb + 2, r02, mask=n_ok)
    tl.store(rb + 3, r10, mask=n_ok)
    tl.store(rb + 4, r11, mask=n_ok)
    tl.store(rb + 5, r12, mask=n_ok)
    tl.store(rb + 6, r20, mask=n_ok)
    tl.store(rb + 7, r21, mask=n_ok)
    tl.store(rb + 8, r22, mask=n_ok)
    tl.store(s_ptr + n64, s, mask=n_ok)
    tl.store(t_ptr + n64 * 3, tx, mask=n_ok)
    tl.store(t_ptr + n64 * 3 + 1, ty, mask=n_ok)
    tl.store(t_ptr + n64 * 3 + 2, tz, mask=n_ok)
    if NEED_AUX:
        vb = v_ptr + n64 * 9
        tl.store(vb, v00, mask=n_ok)
        tl.store(vb + 1, v01, mask=n_ok)
        tl.store(vb + 2, v02, mask=n_ok)
        tl.store(vb + 3, v10, mask=n_ok)
        tl.store(vb + 4, v11, mask=n_ok)
        tl.store(vb + 5, v12, mask=n_ok)
        tl.store(vb + 6, v20, mask=n_ok)
        tl.store(vb + 7, v21, mask=n_ok)
        tl.store(vb + 8, v22, mask=n_ok)
        tl.store(sig_ptr + n64 * 3, s0, mask=n_ok)
        tl.store(sig_ptr + n64 * 3 + 1, s1, mask=n_ok)
        tl.store(sig_ptr + n64 * 3 + 2, s2, mask=n_ok)


@triton.jit
def _load9(ptr, n64, n_ok):
    b = ptr + n64 * 9
    return (tl.load(b, mask=n_ok, other=0.0), tl.load(b + 1, mask=n_ok, other=0.0),
            tl.load(b + 2, mask=n_ok, other=0.0), tl.load(b + 3, mask=n_ok, other=0.0),
            tl.load(b + 4, mask=n_ok, other=0.0), tl.load(b + 5, mask=n_ok, other=0.0),
            tl.load(b + 6, mask=n_ok, other=0.0), tl.load(b + 7, mask=n_ok, other=0.0),
            tl.load(b + 8, mask=n_ok, other=0.0))


@triton.jit
def _load3(ptr, n64, n_ok):
    b = ptr + n64 * 3
    return tl.load(b, mask=n_ok, other=0.0), tl.load(b + 1, mask=n_ok, other=0.0), tl.load(b + 2, mask=n_ok, other=0.0)


@triton.jit
def _bwd_kernel(gy_ptr, gr_ptr, gs_ptr, gt_ptr, p_ptr, q_ptr, w_ptr, r_ptr, s_ptr, v_ptr, sig_ptr,
                gp_ptr, gq_ptr, N, J, w_stride,
                HAS_W: tl.constexpr, HAS_GY: tl.constexpr, HAS_GR: tl.constexpr, HAS_GS: tl.constexpr,
                HAS_GT: tl.constexpr, SCALE: tl.constexpr, GRAD_EPS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    (n64, n_ok, jj, mask, offs, w, inv_w, mpx, mpy, mpz, mqx, mqy, mqz, a,
     pcx, pcy, pcz, qcx, qcy, qcz) = _centre(p_ptr, q_ptr, w_ptr, N, J, w_stride, HAS_W, BLOCK_N, BLOCK_J)
    if HAS_GY:
        gx, gy, gz = _load_pose(gy_ptr, offs, mask)
    else:
        gx = tl.zeros(pcx.shape, pcx.dtype)
        gy = tl.zeros(pcx.shape, pcx.dtype)
        gz = tl.zeros(pcx.shape, pcx.dtype)
    sgx = tl.sum(gx, axis=1)
    sgy = tl.sum(gy, axis=1)
    sgz = tl.sum(gz, axis=1)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = _load9(r_ptr, n64, n_ok)
    v00, v01, v02, v10, v11, v12, v20, v21, v22 = _load9(v_ptr, n64, n_ok)
    h00, h01, h02, h10, h11, h12, h20, h21, h22 = _load9(gr_ptr, n64, n_ok & HAS_GR)
    tgx, tgy, tgz = _load3(gt_ptr, n64, n_ok & HAS_GT)
    s0, s1, s2 = _load3(sig_ptr, n64, n_ok)
    s = tl.load(s_ptr + n64, mask=n_ok, other=0.0)
    gs = tl.load(gs_ptr + n64, mask=n_ok & HAS_GS, other=0.0)
    # gradient of the product sR: G - gt mu_p^T, G = sum_j gy_j pc_j^T
    e00 = tl.sum(gx * pcx, axis=1) - tgx * mpx
    e01 = tl.sum(gx * pcy, axis=1) - tgx * mpy
    e02 = tl.sum(gx * pcz, axis=1) - tgx * mpz
    e10 = tl.sum(gy * pcx, axis=1) - tgy * mpx
    e11 = tl.sum(gy * pcy, axis=1) - tgy * mpy
    e12 = tl.sum(gy * pcz, axis=1) - tgy * mpz
    e20 = tl.sum(gz * pcx, axis=1) - tgz * mpx
    e21 = tl.sum(gz * pcy, axis=1) - tgz * mpy
    e22 = tl.sum(gz * pcz, axis=1) - tgz * mpz
    gs_tot = gs + (e00 * r00 + e01 * r01 + e02 * r02 + e10 * r10 + e11 * r11 + e12 * r12
                   + e20 * r20 + e21 * r21 + e22 * r22)
    h00 = h00 + s * e00
    h01 = h01 + s * e01
    h02 = h02 + s * e02
    h10 = h10 + s * e10
    h11 = h11 + s * e11
    h12 = h12 + s * e12
    h20 = h20 + s * e20
    h21 = h21 + s * e21
    h22 = h22 + s * e22
    live = s0 > 0
    tau = s0 + s1 + s2
    if SCALE:
        tpos = tau > 0
        kk = tl.where(tpos, s / tl.where(tpos, tau, 1.0), 0.0)
        gtau = tl.where(live, gs_tot * kk, 0.0)
    else:
        gtau = tl.zeros(s.shape, s.dtype)
    gvar = -gtau * s
    # US = R V
    u00 = r00 * v00 + r01 * v10 + r02 * v20
    u01 = r00 * v01 + r01 * v11 + r02 * v21
    u02 = r00 * v02 + r01 * v12 + r02 * v22
    u10 = r10 * v00 + r11 * v10 + r12 * v20
    u11 = r10 * v01 + r11 * v11 + r12 * v21
    u12 = r10 * v02 + r11 * v12 + r12 * v22
    u20 = r20 * v00 + r21 * v10 + r22 * v20
    u21 = r20 * v01 + r21 * v11 + r22 * v21
    u22 = r20 * v02 + r21 * v12 + r22 * v22
    # X = US^T H V (only the off-diagonal differences are needed)
    t00 = u00 * h00 + u10 * h10 + u20 * h20
    t01 = u00 * h01 + u10 * h11 + u20 * h21
    t02 = u00 * h02 + u10 * h12 + u20 * h22
    t10 = u01 * h00 + u11 * h10 + u21 * h20
    t11 = u01 * h01 + u11 * h11 + u21 * h21
    t12 = u01 * h02 + u11 * h12 + u21 * h22
    t20 = u02 * h00 + u12 * h10 + u22 * h20
    t21 = u02 * h01 + u12 * h11 + u22 * h21
    t22 = u02 * h02 + u12 * h12 + u22 * h22
    x01 = t00 * v01 + t01 * v11 + t02 * v21
    x02 = t00 * v02 + t01 * v12 + t02 * v22
    x10 = t10 * v00 + t11 * v10 + t12 * v20
    x12 = t10 * v02 + t11 * v12 + t12 * v22
    x20 = t20 * v00 + t21 * v10 + t22 * v20
    x21 = t20 * v01 + t21 * v11 + t22 * v21
    floor = GRAD_EPS * s0
    f01 = tl.where(live, 1.0 / tl.where(live, tl.maximum(s0 + s1, floor), 1.0), 0.0)
    f02 = tl.where(live, 1.0 / tl.where(live, tl.maximum(s0 + s2, floor), 1.0), 0.0)
    f12 = tl.where(live, 1.0 / tl.where(live, tl.maximum(s1 + s2, floor), 1.0), 0.0)
    k01 = f01 * (x01 - x10)
    k02 = f02 * (x02 - x20)
    k12 = f12 * (x12 - x21)
    # gM = gtau R + US K V^T, K antisymmetric
    c00 = -u01 * k01 - u02 * k02
    c01 = u00 * k01 - u02 * k12
    c02 = u00 * k02 + u01 * k12
    c10 = -u11 * k01 - u12 * k02
    c11 = u10 * k01 - u12 * k12
    c12 = u10 * k02 + u11 * k12
    c20 = -u21 * k01 - u22 * k02
    c21 = u20 * k01 - u22 * k12
    c22 = u20 * k02 + u21 * k12
    g00 = gtau * r00 + c00 * v00 + c01 * v01 + c02 * v02
    g01 = gtau * r01 + c00 * v10 + c01 * v11 + c02 * v12
    g02 = gtau * r02 + c00 * v20 + c01 * v21 + c02 * v22
    g10 = gtau * r10 + c10 * v00 + c11 * v01 + c12 * v02
    g11 = gtau * r11 + c10 * v10 + c11 * v11 + c12 * v12
    g12 = gtau * r12 + c10 * v20 + c11 * v21 + c12 * v22
    g20 = gtau * r20 + c20 * v00 + c21 * v01 + c22 * v02
    g21 = gtau * r21 + c20 * v10 + c21 * v11 + c22 * v12
    g22 = gtau * r22 + c20 * v20 + c21 * v21 + c22 * v22
    # per joint: gp = s R^T (gy - a e) + a (2 gvar pc + gM^T qc),  gq = a (gM pc + e)
    ex = sgx + tgx
    ey = sgy + tgy
    ez = sgz + tgz
    hx = s * (r00 * ex + r10 * ey + r20 * ez)
    hy = s * (r01 * ex + r11 * ey + r21 * ez)
    hz = s * (r02 * ex + r12 * ey + r22 * ez)
    gv2 = 2.0 * gvar
    out_x = ((s * r00)[:, None] * gx + (s * r10)[:, None] * gy + (s * r20)[:, None] * gz
             + a * (gv2[:, None] * pcx + g00[:, None] * qcx + g10[:, None] * qcy + g20[:, None] * qcz - hx[:, None]))
    out_y = ((s * r01)[:, None] * gx + (s * r11)[:, None] * gy + (s * r21)[:, None] * gz
             + a * (gv2[:, None] * pcy + g01[:, None] * qcx + g11[:, None] * qcy + g21[:, None] * qcz - hy[:, None]))
    out_z = ((s * r02)[:, None] * gx + (s * r12)[:, None] * gy + (s * r22)[:, None] * gz
             + a * (gv2[:, None] * pcz + g02[:, None] * qcx + g12[:, None] * qcy + g22[:, None] * qcz - hz[:, None]))
    tl.store(gp_ptr + offs, out_x, mask=mask)
    tl.store(gp_ptr + offs + 1, out_y, mask=mask)
    tl.store(gp_ptr + offs + 2, out_z, mask=mask)
    oqx = a * (g00[:, None] * pcx + g01[:, None] * pcy + g02[:, None] * pcz + ex[:, None])
    oqy = a * (g10[:, None] * pcx + g11[:, None] * pcy + g12[:, None] * pcz + ey[:, None])
    oqz = a * (g20[:, None] * pcx + g21[:, None] * pcy + g22[:, None] * pcz + ez[:, None])
    tl.store(gq_ptr + offs, oqx, mask=mask)
    tl.store(gq_ptr + offs + 1, oqy, mask=mask)
    tl.store(gq_ptr + offs + 2, oqz, mask=mask)


def _blocks(J: int, device: torch.device) -> tuple[int, int]:
    """(poses, joints) per program: about 1024 elements per 2D tensor on a GPU (the 3x3 part keeps
    ~60 per-pose values live per thread), larger blocks under the CPU interpreter (fewer programs)."""
    block_j = triton.next_power_of_2(max(J, 1))
    budget = 1024 if device.type == "cuda" else 2048
    block_n = max(1, min(32 if device.type == "cuda" else 64, budget // block_j))
    return block_n, block_j


def _weights(weights, pred):
    if weights is None:
        return pred, 0, False  # dummy pointer, never read
    return weights, (weights.shape[1] if weights.dim() == 2 else 0), True


def procrustes_align_forward(pred: torch.Tensor, target: torch.Tensor, weights, scale: bool,
                             allow_reflection: bool, need_aux: bool):
    """pred, target: contiguous (N, J, 3) float32/float64; weights: contiguous (N, J), (J,) or None.
    Returns (aligned, R, s, t, V, sig) as the C++ op ``fastlift_C::procrustes_align_forward``."""
    N, J, _ = pred.shape
    aligned = torch.empty_like(pred)
    R = pred.new_empty(N, 3, 3)
    s = pred.new_empty(N)
    t = pred.new_empty(N, 3)
    n_aux = N if need_aux else 0
    V = pred.new_empty(n_aux, 3, 3)
    sig = pred.new_empty(n_aux, 3)
    if N == 0:
        return aligned, R, s, t, V, sig
    sweeps, tiny, qr_eps, _, tol = _CONSTS[pred.dtype]
    w, w_stride, has_w = _weights(weights, pred)
    block_n, block_j = _blocks(J, pred.device)
    grid = (triton.cdiv(N, block_n),)
    _fwd_kernel[grid](pred, target, w, aligned, R, s, t, V if need_aux else R, sig if need_aux else t,
                      N, J, w_stride, tol * tol,
                      HAS_W=has_w, SCALE=bool(scale), REFL=bool(allow_reflection), NEED_AUX=bool(need_aux),
                      SWEEPS=sweeps, TINY=tiny, QR_EPS=qr_eps, BLOCK_N=block_n, BLOCK_J=block_j)
    return aligned, R, s, t, V, sig


def procrustes_align_backward(grad_aligned, grad_R, grad_s, grad_t, pred, target, weights, R, s, V, sig,
                              scale: bool):
    """Gradients (grad_pred, grad_target) of the alignment, as ``fastlift_C::procrustes_align_backward``
    (a gradient given as None is zero)."""
    N, J, _ = pred.shape
    gp = torch.empty_like(pred)
    gq = torch.empty_like(target)
    if N == 0:
        return gp, gq
    if V.shape[0] != N:
        raise RuntimeError("fastlift procrustes_align backward: the forward was run with need_aux=False, "
                           "so it saved no SVD factors")
    grad_eps = _CONSTS[pred.dtype][3]
    w, w_stride, has_w = _weights(weights, pred)
    block_n, block_j = _blocks(J, pred.device)
    grid = (triton.cdiv(N, block_n),)
    # absent gradients (None) are zeros: a dummy pointer that is never read
    _bwd_kernel[grid](pred if grad_aligned is None else grad_aligned, R if grad_R is None else grad_R,
                      s if grad_s is None else grad_s, pred if grad_t is None else grad_t,
                      pred, target, w, R, s, V, sig, gp, gq, N, J, w_stride,
                      HAS_W=has_w, HAS_GY=grad_aligned is not None, HAS_GR=grad_R is not None,
                      HAS_GS=grad_s is not None, HAS_GT=grad_t is not None, SCALE=bool(scale),
                      GRAD_EPS=grad_eps, BLOCK_N=block_n, BLOCK_J=block_j)
    return gp, gq
