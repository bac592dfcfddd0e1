"""Lifting and fused rotate-and-project (method.md, "Lifter G", "Random rotation and perspective
projection", "The lift-reproject-lift cycle", "Known pitfalls").

Units: the normalised 2D unit of :func:`fastlift.ops.normalize_2d` (head-root distance ``1/c``),
and the matching 3D unit of :func:`lift_to_3d` (depth ``c`` in front of the camera for the root).
Camera frame: x right, y down, z forward (depth); unit focal length.

Soft depth floor (projection). A joint at depth ``Z = Y_rot_z + c`` is divided by

    Z_s = m + softplus(Z - m),     softplus(t) = log(1 + exp(t)) (t for t > 20, as torch's)

with ``m = min_depth > 0``. ``Z_s > m`` always, ``Z_s - Z = log(1 + exp(m - Z))`` (1.2e-4 at
``Z = c = 10`` with ``m = 1``; below 2.1e-9 for ``Z > m + 20``), and ``dZ_s/dZ = sigmoid(Z - m)``
in ``(0, 1)``. A joint at, or behind, the camera (``Z <= 0``) is therefore projected at depth
``Z_s`` in ``(m, m + log 2]`` on the same side as the others (not mirrored): finite, bounded by
``|X| / m``, with finite gradients that fade as the joint moves further behind. Never NaN or inf
for finite input; a non-finite input coordinate makes that pose's outputs non-finite (no other
pose is affected), which :func:`fastlift.ops.cycle_consistency_loss` reports as an error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastlift import _extension  # noqa: F401  (loads fastlift._C)
from fastlift.ops._backend import compute_dtype, resolve_backend
from fastlift.ops.normalize import normalize_2d_reference
from fastlift.ops.rotation import _supported_backends

__all__ = ["lift_to_3d", "rotate_project", "rotate_project_reference", "soft_depth_floor"]

_FLOORS = ("hard", "soft")


def soft_depth_floor(z: torch.Tensor, min_depth: float) -> torch.Tensor:
    """``min_depth + softplus(z - min_depth)``: a smooth ``max(z, min_depth)``, always ``> min_depth``."""
    return min_depth + F.softplus(z - min_depth)


def lift_to_3d(x2d: torch.Tensor, depth_offset: torch.Tensor, c: float = 10.0, floor: str = "hard",
               min_depth: float = 1.0) -> torch.Tensor:
    """Lift normalised 2D joints to 3D with the lifter's per-joint depth offsets.

    ``hard`` (the paper): ``z = max(0, c + d) + min_depth`` (``min_depth = 1``: ``max(0, c+d) + 1``).
    ``soft``: ``z = min_depth + softplus(c + d)``, the same smooth everywhere: it equals the hard
    depth up to ``log(1 + exp(-|c + d|))`` (``log 2`` at the kink, below 5e-5 for ``|c + d| > 10``),
    and its gradient ``sigmoid(c + d)`` never vanishes, so joints pushed below the floor still learn.
    Both give ``z >= min_depth > 0``. ``Y = (x z, y z, z)``, so ``Y`` reprojects exactly onto ``x``.

    Args:
        x2d: (N, J, 2) normalised 2D joints (:func:`fastlift.ops.normalize_2d`), camera frame.
        depth_offset: (N, J) depth offsets ``d`` predicted by the lifter.
        c: the method's depth constant (default 10).
        floor: ``"hard"`` or ``"soft"``.
        min_depth: the depth floor, > 0 (default 1).

    Returns:
        Y (N, J, 3), 3D joints in the camera frame, in the lift's unit. Differentiable (pure torch,
        fused by ``torch.compile``).
    """
    if not isinstance(x2d, torch.Tensor) or not isinstance(depth_offset, torch.Tensor):
        raise TypeError("fastlift.ops.lift_to_3d: x2d and depth_offset must be torch.Tensors")
    if x2d.dim() != 3 or x2d.shape[-1] != 2:
        raise ValueError(f"fastlift.ops.lift_to_3d: x2d must have shape (N, J, 2), got {tuple(x2d.shape)}")
    if depth_offset.shape != x2d.shape[:2]:
        raise ValueError(f"fastlift.ops.lift_to_3d: depth_offset must have shape (N, J) = {tuple(x2d.shape[:2])}, "
                         f"got {tuple(depth_offset.shape)}")
    if x2d.device != depth_offset.device:
        raise ValueError(f"fastlift.ops.lift_to_3d: x2d is on {x2d.device}, depth_offset on {depth_offset.device}")
    if floor not in _FLOORS:
        raise ValueError(f"fastlift.ops.lift_to_3d: floor must be one of {_FLOORS}, got {floor!r}")
    if not min_depth > 0:
        raise ValueError(f"fastlift.ops.lift_to_3d: min_depth must be positive, got {min_depth}")
    compute_dtype(x2d, "x2d", "lift_to_3d")
    compute_dtype(depth_offset, "depth_offset", "lift_to_3d")
    t = c + depth_offset
    z = (torch.relu(t) if floor == "hard" else F.softplus(t)) + min_depth
    z = z.unsqueeze(-1)
    return torch.cat((x2d * z, z), dim=-1)


def rotate_project_reference(Y: torch.Tensor, R: torch.Tensor, c: float = 10.0, root: int = 0,
                             transpose: bool = False, min_depth: float = 1.0, renormalize: bool = False,
                             head: int = 10, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch rotate-and-project (the oracle); same contract as :func:`rotate_project`."""
    Yc = Y - Y[:, root : root + 1, :]
    M = R if transpose else R.transpose(-1, -2)  # row vectors: p -> R p is p @ R^T
    Yr = Yc @ M
    z = soft_depth_floor(Yr[..., 2:3] + c, min_depth)
    x2d = Yr[..., :2] / z
    if renormalize:
        x2d = normalize_2d_reference(x2d, root, head, c, eps)[0]
    return x2d, Yr


def _launch_forward(Y, R, c, root, transpose, min_depth, renormalize, head, eps, backend):
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.rotate_project_forward(Y, R, c, root, transpose, min_depth,
                                                           renormalize, head, eps)
    if backend == "triton":
        from fastlift.kernels.rotate_project import rotate_project_forward
        return rotate_project_forward(Y, R, c, root, transpose, min_depth, renormalize, head, eps)
    x, yr = rotate_project_reference(Y, R, c, root, transpose, min_depth, renormalize, head, eps)
    return x.contiguous(), yr.contiguous()


@torch.library.custom_op("fastlift::rotate_project", mutates_args=())
def _rotate_project_op(Y: torch.Tensor, R: torch.Tensor, c: float, root: int, transpose: bool,
                       min_depth: float, renormalize: bool, head: int, eps: float,
                       backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_forward(Y, R, c, root, transpose, min_depth, renormalize, head, eps, backend)


@_rotate_project_op.register_fake
def _(Y, R, c, root, transpose, min_depth, renormalize, head, eps, backend):
    return Y.new_empty(Y.shape[0], Y.shape[1], 2), torch.empty_like(Y)


@torch.library.custom_op("fastlift::rotate_project_backward", mutates_args=())
def _rotate_project_backward_op(grad_x2d: torch.Tensor | None, grad_yrot: torch.Tensor | None,
                                Y: torch.Tensor, R: torch.Tensor, c: float, root: int, transpose: bool,
                                min_depth: float, renormalize: bool, head: int, eps: float,
                                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_Y, grad_R); a None output gradient counts as zero (and is never materialised)."""
    if backend in ("cpu", "cuda"):
        return torch.ops.fastlift_C.rotate_project_backward(grad_x2d, grad_yrot, Y, R, c, root, transpose,
                                                            min_depth, renormalize, head, eps)
    if backend == "triton":
        from fastlift.kernels.rotate_project import rotate_project_backward
        return rotate_project_backward(grad_x2d, grad_yrot, Y, R, c, root, transpose, min_depth,
                                       renormalize, head, eps)
    if grad_x2d is None:
        grad_x2d = Y.new_zeros(Y.shape[0], Y.shape[1], 2)
    if grad_yrot is None:
        grad_yrot = torch.zeros_like(Y)
    with torch.enable_grad():
        Yg = Y.detach().requires_grad_(True)
        Rg = R.detach().requires_grad_(True)
        x, yr = rotate_project_reference(Yg, Rg, c, root, transpose, min_depth, renormalize, head, eps)
        gY, gR = torch.autograd.grad((x, yr), (Yg, Rg), (grad_x2d, grad_yrot))
    return gY, gR


@_rotate_project_backward_op.register_fake
def _(grad_x2d, grad_yrot, Y, R, c, root, transpose, min_depth, renormalize, head, eps, backend):
    return torch.empty_like(Y), torch.empty_like(R)


def _setup_context(ctx, inputs, output):
    Y, R, *args = inputs
    ctx.save_for_backward(Y, R)
    ctx.args = tuple(args)


def _backward(ctx, grad_x2d, grad_yrot):
    Y, R = ctx.saved_tensors
    grad_x2d = None if grad_x2d is None else grad_x2d.contiguous()
    grad_yrot = None if grad_yrot is None else grad_yrot.contiguous()
    gY, gR = _rotate_project_backward_op(grad_x2d, grad_yrot, Y, R, *ctx.args)
    need = ctx.needs_input_grad
    return (gY if need[0] else None), (gR if need[1] else None), None, None, None, None, None, None, None, None


_rotate_project_op.register_autograd(_backward, setup_context=_setup_context)


def rotate_project(Y: torch.Tensor, R: torch.Tensor, c: float = 10.0, root: int = 0,
                   transpose: bool = False, min_depth: float = 1.0, renormalize: bool = False,
                   head: int = 10, eps: float = 1e-6,
                   backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate 3D poses about their root joint and project them perspectively, fused.

    Per pose ``n`` and joint ``j``::

        Y_rot[n, j] = R[n] @ (Y[n, j] - Y[n, root])        (R[n].T with transpose=True)
        Z = Y_rot[n, j, 2] + c,   Z_s = min_depth + softplus(Z - min_depth)
        x2d[n, j] = (Y_rot[n, j, 0] / Z_s, Y_rot[n, j, 1] / Z_s)

    i.e. the rotated pose is placed with its root at depth ``c`` in front of a unit-focal-length
    camera. ``Z_s`` is the soft depth floor of the module doc: joints at or behind the camera give
    a finite, documented result and finite gradients. ``renormalize=True`` then re-normalises
    ``x2d`` exactly as :func:`fastlift.ops.normalize_2d` does (root-centre, head-root distance
    ``1/c`` with ``eps`` floor), so the output can be fed back to the lifter (method.md step 2).

    Args:
        Y: (N, J, 3) 3D poses, camera frame (x right, y down, z forward), lift units.
        R: (N, 3, 3) rotations (:func:`fastlift.ops.sample_rotations`); ``transpose=True`` applies
            ``R^T = R^-1`` (the cycle's step 6, rotating back).
        c: depth of the root after rotation (default 10).
        root: index of the root joint (h36m17: 0).
        transpose: apply ``R^T`` instead of ``R``.
        min_depth: the soft depth floor ``m > 0`` (default 1, same unit as ``c``).
        renormalize: re-normalise the 2D output like ``normalize_2d(x2d, root, head, c, eps)``.
        head: the joint whose distance to the root sets the scale (used with renormalize only).
        eps: floor of the head-root distance (used with renormalize only).
        backend: ``"cuda"``, ``"triton"``, ``"cpu"``, ``"reference"`` or None (automatic).

    Returns:
        ``(x2d (N, J, 2), Y_rot (N, J, 3))``: the projection (normalised image coordinates, or
        the re-normalised pose) and the rotated pose, root-relative (root at the origin, before the
        shift by ``c``). Differentiable in ``Y`` and ``R``; forward and backward are each one fused
        pass over the data on the kernel backends. float64 stays float64, other float types are
        computed in float32.
    """
    op = "rotate_project"
    if not isinstance(Y, torch.Tensor) or not isinstance(R, torch.Tensor):
        raise TypeError(f"fastlift.ops.{op}: Y and R must be torch.Tensors")
    if Y.dim() != 3 or Y.shape[-1] != 3:
        raise ValueError(f"fastlift.ops.{op}: Y must have shape (N, J, 3), got {tuple(Y.shape)}")
    if R.shape != (Y.shape[0], 3, 3):
        raise ValueError(f"fastlift.ops.{op}: R must have shape (N, 3, 3) = ({Y.shape[0]}, 3, 3), got {tuple(R.shape)}")
    if Y.device != R.device:
        raise ValueError(f"fastlift.ops.{op}: Y is on {Y.device} but R on {R.device}")
    J = Y.shape[1]
    if not 0 <= int(root) < J:
        raise ValueError(f"fastlift.ops.{op}: root={root} is not a joint index in [0, {J})")
    if renormalize:
        if not 0 <= int(head) < J:
            raise ValueError(f"fastlift.ops.{op}: head={head} is not a joint index in [0, {J})")
        if head == root:
            raise ValueError(f"fastlift.ops.{op}: root and head must differ (both {root})")
        if not eps > 0:
            raise ValueError(f"fastlift.ops.{op}: eps must be positive, got {eps}")
    if not c > 0:
        raise ValueError(f"fastlift.ops.{op}: c must be positive, got {c}")
    if not min_depth > 0:
        raise ValueError(f"fastlift.ops.{op}: min_depth must be positive, got {min_depth}")
    dy = compute_dtype(Y, "Y", op)
    dr = compute_dtype(R, "R", op)
    dtype = torch.float64 if torch.float64 in (dy, dr) else torch.float32
    chosen = resolve_backend(op, Y.device, backend, _supported_backends(
        ("rotate_project_forward", "rotate_project_backward"), "rotate_project"))
    Y, R = Y.to(dtype), R.to(dtype)
    args = (float(c), int(root), bool(transpose), float(min_depth), bool(renormalize), int(head), float(eps))
    if chosen == "reference":
        return rotate_project_reference(Y, R, *args)
    return _rotate_project_op(Y.contiguous(), R.contiguous(), *args, chosen)
