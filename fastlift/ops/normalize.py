"""Fused 2D pose normalisation (method.md, "Coordinates and normalisation").

For each pose: subtract the root joint, then scale so that the head-root distance is ``1 / c``::

    d = |x_head - x_root|,   scale = 1 / (c * max(d, eps)),   y_j = (x_j - x_root) * scale

One op, four backends (``fastlift.ops._backend``); ``normalize_2d_reference`` is the oracle.
"""
from __future__ import annotations

import torch

from fastlift import _extension
from fastlift.ops._backend import compute_dtype, resolve_backend

__all__ = ["normalize_2d", "normalize_2d_reference"]


def normalize_2d_reference(keypoints: torch.Tensor, root: int = 0, head: int = 10, c: float = 10.0,
                           eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch normalisation; same contract as :func:`normalize_2d`."""
    r = keypoints[:, root : root + 1, :]
    d = (keypoints[:, head, :] - keypoints[:, root, :]).norm(dim=-1)
    scale = 1.0 / (c * d.clamp_min(eps))
    return (keypoints - r) * scale[:, None, None], scale


def _launch_forward(x, root, head, c, eps, backend):
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.normalize_2d_forward(x, root, head, c, eps)
    if backend == "triton":
        from fastlift.kernels.normalize import normalize_2d_forward
        return normalize_2d_forward(x, root, head, c, eps)
    y, s = normalize_2d_reference(x, root, head, c, eps)
    return y.contiguous(), s


@torch.library.custom_op("fastlift::normalize_2d", mutates_args=())
def _normalize_2d_op(x: torch.Tensor, root: int, head: int, c: float, eps: float,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_forward(x, root, head, c, eps, backend)


@_normalize_2d_op.register_fake
def _(x, root, head, c, eps, backend):
    return torch.empty_like(x), x.new_empty(x.shape[0])


@torch.library.custom_op("fastlift::normalize_2d_backward", mutates_args=())
def _normalize_2d_backward_op(grad_y: torch.Tensor, grad_scale: torch.Tensor, x: torch.Tensor,
                              scale: torch.Tensor, root: int, head: int, c: float, eps: float,
                              backend: str) -> torch.Tensor:
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.normalize_2d_backward(grad_y, grad_scale, x, scale, root, head, c, eps)
    if backend == "triton":
        from fastlift.kernels.normalize import normalize_2d_backward
        return normalize_2d_backward(grad_y, grad_scale, x, scale, root, head, c, eps)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        y, s = normalize_2d_reference(xr, root, head, c, eps)
        (gx,) = torch.autograd.grad((y, s), (xr,), (grad_y, grad_scale))
    return gx


@_normalize_2d_backward_op.register_fake
def _(grad_y, grad_scale, x, scale, root, head, c, eps, backend):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, root, head, c, eps, backend = inputs
    ctx.save_for_backward(x, output[1])
    ctx.args = (root, head, c, eps, backend)


def _backward(ctx, grad_y, grad_scale):
    x, scale = ctx.saved_tensors
    grad_y = torch.zeros_like(x) if grad_y is None else grad_y.contiguous()
    grad_scale = torch.zeros_like(scale) if grad_scale is None else grad_scale.contiguous()
    gx = _normalize_2d_backward_op(grad_y, grad_scale, x, scale, *ctx.args)
    return gx, None, None, None, None, None


_normalize_2d_op.register_autograd(_backward, setup_context=_setup_context)


def normalize_2d(keypoints: torch.Tensor, root: int = 0, head: int = 10, c: float = 10.0,
                 eps: float = 1e-6, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Root-centre 2D poses and scale them so that the head-root distance is ``1 / c``.

    Args:
        keypoints: (N, J, 2) 2D joints in any unit (pixels, or normalised image coordinates),
            x right, y down. Any float dtype; half precision is computed in float32.
        root: index of the root joint (h36m17: 0, pelvis).
        head: index of the joint whose distance to the root sets the scale (h36m17: 10, head).
        c: the method's depth constant; the head-root distance becomes 1/c (default 10).
        eps: floor of the head-root distance, in the input's unit. A pose whose head coincides
            with its root gets ``scale = 1 / (c * eps)`` (finite) and no gradient through the
            distance; filter such poses with the returned scale if they matter.
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or ``None`` (automatic; see
            :func:`fastlift.ops.available_backends`).

    Returns:
        ``(normalized, scale)``: normalized (N, J, 2), ``(keypoints - keypoints[:, root]) * scale``,
        and scale (N,), the per-pose factor (unit^-1). Differentiable in ``keypoints``.
    """
    if not isinstance(keypoints, torch.Tensor):
        raise TypeError(f"fastlift.ops.normalize_2d: keypoints must be a torch.Tensor, got {type(keypoints).__name__}")
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"fastlift.ops.normalize_2d: keypoints must have shape (N, J, 2), got {tuple(keypoints.shape)}")
    J = keypoints.shape[1]
    for name, idx in (("root", root), ("head", head)):
        if not 0 <= int(idx) < J:
            raise ValueError(f"fastlift.ops.normalize_2d: {name}={idx} is not a joint index in [0, {J})")
    if root == head:
        raise ValueError(f"fastlift.ops.normalize_2d: root and head must differ (both {root})")
    if not c > 0:
        raise ValueError(f"fastlift.ops.normalize_2d: c must be positive, got {c}")
    if not eps > 0:
        raise ValueError(f"fastlift.ops.normalize_2d: eps must be positive, got {eps}")
    dtype = compute_dtype(keypoints, "keypoints", "normalize_2d")
    chosen = resolve_backend("normalize_2d", keypoints.device, backend)
    x = keypoints.to(dtype)
    if chosen == "reference":
        return normalize_2d_reference(x, int(root), int(head), float(c), float(eps))
    return _normalize_2d_op(x.contiguous(), int(root), int(head), float(c), float(eps), chosen)
