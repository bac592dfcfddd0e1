"""Triton kernels of the fused 2D normalisation (root-centre, scale head-root to 1/c).

One program normalises ``BLOCK_N`` poses; the joints of a pose lie along the second block axis.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _normalize_2d_fwd_kernel(x_ptr, y_ptr, scale_ptr, N, J, root, head, c, eps,
                             BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    n_ok = n < N
    mask = n_ok[:, None] & (j < J)[None, :]
    base = n.to(tl.int64) * J * 2
    rx = tl.load(x_ptr + base + root * 2, mask=n_ok, other=0.0)
    ry = tl.load(x_ptr + base + root * 2 + 1, mask=n_ok, other=0.0)
    hx = tl.load(x_ptr + base + head * 2, mask=n_ok, other=1.0)
    hy = tl.load(x_ptr + base + head * 2 + 1, mask=n_ok, other=1.0)
    dx = hx - rx
    dy = hy - ry
    d = tl.sqrt(dx * dx + dy * dy)
    s = 1.0 / (c * tl.maximum(d, eps))
    offs = base[:, None] + j[None, :] * 2
    px = tl.load(x_ptr + offs, mask=mask, other=0.0)
    py = tl.load(x_ptr + offs + 1, mask=mask, other=0.0)
    tl.store(y_ptr + offs, (px - rx[:, None]) * s[:, None], mask=mask)
    tl.store(y_ptr + offs + 1, (py - ry[:, None]) * s[:, None], mask=mask)
    tl.store(scale_ptr + n, s, mask=n_ok)


@triton.jit
def _normalize_2d_bwd_kernel(gy_ptr, gs_ptr, x_ptr, scale_ptr, gx_ptr, N, J, root, head, c, eps,
                             BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_J)
    n_ok = n < N
    mask = n_ok[:, None] & (j < J)[None, :]
    base = n.to(tl.int64) * J * 2
    offs = base[:, None] + j[None, :] * 2
    rx = tl.load(x_ptr + base + root * 2, mask=n_ok, other=0.0)
    ry = tl.load(x_ptr + base + root * 2 + 1, mask=n_ok, other=0.0)
    hx = tl.load(x_ptr + base + head * 2, mask=n_ok, other=1.0)
    hy = tl.load(x_ptr + base + head * 2 + 1, mask=n_ok, other=1.0)
    s = tl.load(scale_ptr + n, mask=n_ok, other=0.0)
    gs = tl.load(gs_ptr + n, mask=n_ok, other=0.0)
    px = tl.load(x_ptr + offs, mask=mask, other=0.0)
    py = tl.load(x_ptr + offs + 1, mask=mask, other=0.0)
    gx = tl.load(gy_ptr + offs, mask=mask, other=0.0)
    gyy = tl.load(gy_ptr + offs + 1, mask=mask, other=0.0)
    g_scale = gs + tl.sum(gx * (px - rx[:, None]) + gyy * (py - ry[:, None]), axis=1)
    sum_x = tl.sum(gx, axis=1)
    sum_y = tl.sum(gyy, axis=1)
    dx = hx - rx
    dy = hy - ry
    d = tl.sqrt(dx * dx + dy * dy)
    # ds/dd = -s/d with dd/dh = (h - r)/d; no gradient where the distance was clamped at eps.
    k = tl.where(d > eps, -g_scale * s / tl.maximum(d * d, eps * eps), 0.0)
    is_root = (j == root)[None, :]
    is_head = (j == head)[None, :]
    out_x = gx * s[:, None] - tl.where(is_root, (sum_x * s + k * dx)[:, None], 0.0) \
        + tl.where(is_head, (k * dx)[:, None], 0.0)
    out_y = gyy * s[:, None] - tl.where(is_root, (sum_y * s + k * dy)[:, None], 0.0) \
        + tl.where(is_head, (k * dy)[:, None], 0.0)
    tl.store(gx_ptr + offs, out_x, mask=mask)
    tl.store(gx_ptr + offs + 1, out_y, mask=mask)


def _blocks(N: int, J: int) -> tuple[int, int]:
    block_j = triton.next_power_of_2(max(J, 1))
    block_n = max(1, min(128, 4096 // block_j))
    return block_n, block_j


def normalize_2d_forward(x: torch.Tensor, root: int, head: int, c: float, eps: float):
    """x: contiguous (N, J, 2) float32/float64. Returns (y (N, J, 2), scale (N,))."""
    N, J, _ = x.shape
    y = torch.empty_like(x)
    scale = torch.empty(N, dtype=x.dtype, device=x.device)
    if N == 0:
        return y, scale
    block_n, block_j = _blocks(N, J)
    grid = (triton.cdiv(N, block_n),)
    _normalize_2d_fwd_kernel[grid](x, y, scale, N, J, root, head, c, eps,
                                   BLOCK_N=block_n, BLOCK_J=block_j)
    return y, scale


def normalize_2d_backward(grad_y: torch.Tensor, grad_scale: torch.Tensor, x: torch.Tensor,
                          scale: torch.Tensor, root: int, head: int, c: float, eps: float):
    """Gradient with respect to x of the normalisation, given dL/dy and dL/dscale."""
    N, J, _ = x.shape
    gx = torch.empty_like(x)
    if N == 0:
        return gx
    block_n, block_j = _blocks(N, J)
    grid = (triton.cdiv(N, block_n),)
    _normalize_2d_bwd_kernel[grid](grad_y, grad_scale, x, scale, gx, N, J, root, head, c, eps,
                                   BLOCK_N=block_n, BLOCK_J=block_j)
    return gx
