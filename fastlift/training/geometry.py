"""Geometry of the lift-reproject-lift cycle, as the training engine uses it.

Each function dispatches to the fused op of :mod:`fastlift.ops` when this install has it and
otherwise runs the pure-torch version below (same contract). The engine only talks to this module.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastlift import ops as _ops

__all__ = ["sample_rotations", "lift_to_3d", "rotate_project", "normalize_2d", "cycle_consistency_loss",
           "cycle_reprojection_loss", "project_normalized", "has_fused", "sample_angles", "torso_tilt",
           "rotations_about_vertical"]


_BACKEND: str | None = None


def set_backend(name: str | None) -> None:
    """Backend for the fused ops (``"cpu"``, ``"cuda"``, ``"triton"``, ``"reference"``; None or
    ``"auto"``: fastlift.ops chooses)."""
    global _BACKEND
    _BACKEND = None if name in (None, "", "auto") else name


def has_fused(name: str) -> bool:
    """True when :mod:`fastlift.ops` provides ``name``."""
    return hasattr(_ops, name)


# ----------------------------------------------------------------------------------------- local
def _floor(z: torch.Tensor, floor: str, min_depth: float) -> torch.Tensor:
    if floor == "soft":
        return F.softplus(z) + min_depth
    return z.clamp_min(0.0) + min_depth


def _lift_local(x2d, depth_offset, c=10.0, floor="soft", min_depth=1.0):
    z = _floor(depth_offset + c, floor, min_depth)
    return torch.cat([x2d * z[..., None], z[..., None]], dim=-1)


def _rotations_local(n, azimuth_range=(-math.pi, math.pi), elevation_range=(-math.pi / 9, math.pi / 9),
                     seed=0, offset=0, distribution="uniform", device=None, dtype=torch.float32):
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(offset)) % (2**63 - 1))
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    if distribution == "uniform":
        az = azimuth_range[0] + (azimuth_range[1] - azimuth_range[0]) * u[:, 0]
        el = elevation_range[0] + (elevation_range[1] - elevation_range[0]) * u[:, 1]
    else:
        raise ValueError(f"sample_rotations: unknown distribution {distribution!r}")
    ca, sa, ce, se = az.cos(), az.sin(), el.cos(), el.sin()
    one, zero = torch.ones_like(ca), torch.zeros_like(ca)
    ry = torch.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], 1).view(n, 3, 3)
    rx = torch.stack([one, zero, zero, zero, ce, -se, zero, se, ce], 1).view(n, 3, 3)
    return (rx @ ry).to(device=device, dtype=dtype)


def _rotate_project_local(Y, R, c=10.0, root=0, transpose=False, floor="soft", min_depth=1.0):
    rel = Y - Y[:, root:root + 1]
    Yr = rel @ R if transpose else rel @ R.transpose(1, 2)
    z = Yr[..., 2] + c
    z = F.softplus(z - min_depth) + min_depth if floor == "soft" else z.clamp_min(min_depth)
    return Yr[..., :2] / z[..., None], Yr


# ------------------------------------------------------------------------------------- dispatch
def sample_rotations(n, azimuth_range=(-math.pi, math.pi), elevation_range=(-math.pi / 9, math.pi / 9),
                     seed=0, offset=0, distribution="uniform", device=None, dtype=torch.float32):
    """(n, 3, 3) rotations ``R_x(elevation) R_y(azimuth)``, reproducible from ``(seed, offset)``."""
    if has_fused("sample_rotations"):
        return _ops.sample_rotations(n, azimuth_range=tuple(azimuth_range), elevation_range=tuple(elevation_range),
                                     seed=int(seed), offset=int(offset), distribution=distribution,
                                     device=device, dtype=dtype, backend=_BACKEND)
    return _rotations_local(n, azimuth_range, elevation_range, seed, offset, distribution, device, dtype)


def lift_to_3d(x2d, depth_offset, c=10.0, floor="soft", min_depth=1.0):
    """``(x z, y z, z)`` with ``z = floor(c + d)`` (B, J, 3)."""
    if has_fused("lift_to_3d"):
        return _ops.lift_to_3d(x2d, depth_offset, c=c, floor=floor, min_depth=min_depth)
    return _lift_local(x2d, depth_offset, c, floor, min_depth)


def rotate_project(Y, R, c=10.0, root=0, transpose=False, floor="soft", min_depth=1.0):
    """Rotate ``Y`` about its root by ``R`` (``R^T`` with ``transpose``), put the root at depth ``c``
    and project with unit focal length. Returns ``(x2d (B,J,2), Y_rot (B,J,3) root-relative)``;
    ``x2d`` is *not* re-normalised (see :func:`project_normalized`)."""
    if floor == "soft" and has_fused("rotate_project"):
        return _ops.rotate_project(Y, R, c=c, root=root, transpose=transpose, min_depth=min_depth, backend=_BACKEND)
    return _rotate_project_local(Y, R, c, root, transpose, floor, min_depth)


def normalize_2d(x2d, root=0, head=10, c=10.0, eps=1e-6):
    """Root-centre and scale the head-root distance to ``1/c`` (a distance below ``eps`` counts
    as ``eps``); returns ``(normalised, scale (B,))``."""
    return _ops.normalize_2d(x2d, root=root, head=head, c=c, eps=eps, backend=_BACKEND)


def project_normalized(Y, R, c=10.0, root=0, head=10, transpose=False, floor="soft", min_depth=1.0, eps=1e-6):
    """Rotate, project and re-normalise: ``(x2d_normalised, Y_rot * scale, scale)``.

    The re-lift of the normalised projection sees the pose at the normalised scale, so the
    rotated 3D pose is returned multiplied by the same per-sample factor (weak-perspective exact).
    ``eps``: the smallest projected head-root distance the scale is taken from (a lift whose torso
    turns toward the camera is then drawn smaller than ``1/c`` instead of blown up).
    """
    x2d, Yr = rotate_project(Y, R, c=c, root=root, transpose=transpose, floor=floor, min_depth=min_depth)
    xn, s = normalize_2d(x2d, root=root, head=head, c=c, eps=eps)
    return xn, Yr * s[:, None, None], s


def cycle_consistency_loss(x, x_back, Y_rot, Y_relift, weights=None, kind="mse", root=0):
    """Per-element mean 2D and 3D consistency losses, 3D compared root-relative; optional joint
    weights (B, J) (joints with weight 0 are excluded from both)."""
    Y_rot = Y_rot - Y_rot[:, root:root + 1]
    Y_relift = Y_relift - Y_relift[:, root:root + 1]
    if kind in ("mse", "l1") and has_fused("cycle_consistency_loss"):
        return _ops.cycle_consistency_loss(x, x_back, Y_rot, Y_relift, weights=weights, kind=kind, backend=_BACKEND)
    d2 = x_back - x
    d3 = Y_relift - Y_rot
    if kind == "mse":
        e2, e3 = d2.square(), d3.square()
    elif kind == "l1":
        e2, e3 = d2.abs(), d3.abs()
    elif kind == "huber":
        e2 = F.huber_loss(d2, torch.zeros_like(d2), reduction="none", delta=0.1)
        e3 = F.huber_loss(d3, torch.zeros_like(d3), reduction="none", delta=0.1)
    else:
        raise ValueError(f"cycle_consistency_loss: unknown kind {kind!r}")
    if weights is None:
        return e2.mean(), e3.mean()
    w = torch.where(weights > 0, weights, torch.zeros_like(weights))[..., None]
    e2 = torch.where(w > 0, e2, torch.zeros_like(e2))
    e3 = torch.where(w > 0, e3, torch.zeros_like(e3))
    den = w.sum().clamp_min(1e-12)
    return (e2 * w).sum() / (2 * den), (e3 * w).sum() / (3 * den)


def cycle_reprojection_loss(x, Y_relift, R, Y_rot, weights=None, kind="mse", c=10.0, root=0, head=10,
                            floor="soft", min_depth=1.0):
    """Steps 5 and 6 of the cycle: ``x_back = normalize(P(R^T Y_relift))`` and the losses
    ``cycle_consistency_loss(x, x_back, Y_rot, Y_relift)`` (3D root-relative), as one fused op
    (``x_back`` never stored) where this install has it; otherwise the two steps above.

    Args:
        x: (B, J, 2) the real normalised 2D poses; Y_relift: (B, J, 3) the re-lift; R: (B, 3, 3)
        the step's rotations (applied transposed here); Y_rot: (B, J, 3) the rotated pose at the
        re-lift's scale (:func:`project_normalized`'s second output); weights: (B, J) or None.
    """
    if floor == "soft" and kind in ("mse", "l1") and has_fused("cycle_reprojection_loss"):
        return _ops.cycle_reprojection_loss(x, Y_relift, R, Y_rot, weights=weights, kind=kind, c=c, root=root,
                                            transpose=True, min_depth=min_depth, renormalize=True, head=head,
                                            backend=_BACKEND)
    x_back, _, _ = project_normalized(Y_relift, R, c=c, root=root, head=head, transpose=True, floor=floor,
                                      min_depth=min_depth)
    return cycle_consistency_loss(x, x_back, Y_rot, Y_relift, weights=weights, kind=kind, root=root)


# ------------------------------------------------------------------- rotation about the vertical
def sample_angles(n: int, azimuth_range=(-math.pi, math.pi), elevation_range=(-math.pi / 9, math.pi / 9),
                  seed: int = 0, offset: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(azimuth (n,), elevation (n,)) radians behind :func:`sample_rotations` (the same stream)."""
    return _ops.sample_angles(n, azimuth_range, elevation_range, seed=seed, offset=offset, device=device)


def torso_tilt(Y: torch.Tensor, hips: tuple[int, int], shoulders: tuple[int, int],
               limit: float = math.pi / 4) -> torch.Tensor:
    """Tilt of each pose's torso axis (hip centre to shoulder centre) toward the camera, (N,)
    radians, in the camera's y-z plane (camera frame x right, y down, z forward). An upright
    person seen by a level camera gives 0; a camera looking down by ``a`` sees the up axis as
    ``(0, -cos a, -sin a)`` and gives ``a``. A pose's own lean adds to it, but lean toward and away
    from the camera averages out over many poses facing every way, so the mean over a batch
    estimates the camera's elevation. Clipped to ``[-limit, limit]``. ``Y``: (N, J, 3), any unit."""
    up = 0.5 * (Y[:, shoulders[0]] + Y[:, shoulders[1]]) - 0.5 * (Y[:, hips[0]] + Y[:, hips[1]])
    return torch.atan2(-up[:, 2], (-up[:, 1]).clamp_min(1e-6)).clamp(-limit, limit)


def rotations_about_vertical(azimuth: torch.Tensor, elevation: torch.Tensor,
                             camera_elevation: torch.Tensor | float) -> torch.Tensor:
    """``R = R_x(camera_elevation + elevation) R_y(azimuth) R_x(-camera_elevation)`` (N, 3, 3):
    the method's rotation (azimuth about the vertical, then an elevation offset) taken about the
    world's vertical axis as seen by a camera looking down by ``camera_elevation``, instead of the
    camera's y axis. With ``camera_elevation = 0`` it is ``R_x(elevation) R_y(azimuth)``.
    ``azimuth``, ``elevation``: (N,) radians; ``camera_elevation``: radians, scalar or (N,)."""
    ce = torch.as_tensor(camera_elevation, dtype=azimuth.dtype, device=azimuth.device).expand_as(azimuth)
    level = _ops.rotation_from_angles(torch.zeros_like(ce), -ce)
    return _ops.rotation_from_angles(azimuth, elevation + ce) @ level
